"""Caption-stage throughput per core with the offline backend (FER2013 tflite + PnP head pose).

Pairs: consecutive-ish frames of the real talking head (carphone) with dlib landmarks. One process, one
thread (like one Ray actor on one CPU): `CaptionStage.judge` per pair = 2 JPEG decodes, 2 FER crops and
inferences, 2 PnP head poses, the instruction. Prints pairs/s and images/s per core, and the share of
each part.

    python benchmarks/caption_throughput.py        # ~15 s
    python benchmarks/caption_throughput.py --quick
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
from pair_cost import frame_rows  # noqa: E402

from hfl.imageops import decode_jpeg  # noqa: E402
from hfl.landmarks import head_pose  # noqa: E402
from hfl.pipeline import PipelineConfig  # noqa: E402
from hfl.stages.caption import CaptionStage  # noqa: E402


def pair_rows(frames: list[dict], n: int) -> list[dict]:
    out = []
    for k in range(n):
        a, b = frames[k % len(frames)], frames[(k * 7 + 11) % len(frames)]
        row = {"key": f"p{k}"}
        for prefix, f in (("src", a), ("tgt", b)):
            for field in ("image", "box", "landmarks", "width", "height"):
                row[f"{prefix}_{field}"] = f[field]
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="100 pairs")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    frames = frame_rows()
    rows = pair_rows(frames, 100 if args.quick else args.pairs)
    stage = CaptionStage(PipelineConfig())
    stage.setup()
    stage.judge(dict(rows[0]))  # warm-up
    t0 = time.perf_counter()
    out = [stage.judge(dict(r)) for r in rows]
    total = time.perf_counter() - t0
    fer = stage.captioner.model
    t0 = time.perf_counter()
    for r in rows:
        decode_jpeg(r["src_image"])
    t_dec = time.perf_counter() - t0
    imgs = [decode_jpeg(r["src_image"]) for r in rows]
    t0 = time.perf_counter()
    for img, r in zip(imgs, rows, strict=True):
        fer.probabilities(img, r["src_box"])
    t_fer = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in rows:
        head_pose(r["src_landmarks"], r["src_width"], r["src_height"])
    t_pose = time.perf_counter() - t0
    n = len(rows)
    kept = sum(r.get("reject_reason") is None for r in out)
    print(f"{n} pairs ({kept} with an instruction), {total:.2f} s on one core")
    print(f"throughput: {n / total:.1f} pairs/s/core = {2 * n / total:.1f} images/s/core")
    per_img = total / (2 * n)
    print(
        f"per image: {per_img * 1e3:.2f} ms = decode {t_dec / n * 1e3:.2f} + FER {t_fer / n * 1e3:.2f} "
        f"+ pose {t_pose / n * 1e3:.2f} + rest {(per_img - (t_dec + t_fer + t_pose) / n) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
