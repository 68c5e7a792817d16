"""Framework overhead: `mine + quality` through hfl's build (Ray Data, actors, parquet parts) vs the same
ops in a plain Python loop on the same frames, with the same number of workers (1 by default).

Each side runs in its own fresh Python process:
  build     load_config + validate, then `init_ray` (timed alone = Ray start-up) and one `run_build` over
            both stages (what `hfl build` calls), which fuses mine -> quality into one chain on one actor
            pool; the timeline per unit comes from the times the mine and quality parts were written.
  baseline  load the same models, then per video: open_frames -> JPEG encode -> detect -> track ->
            landmarks, and per kept frame QualityStage.judge (decode JPEG, geometry, LoG, BRISQUE).
Imports are timed on both sides but left out of the ratios.
  start-up  `hfl build --stage mine,quality` as a user runs it (a fresh process); the time from starting
            the command to the first unit's quality part appearing on disk = time to first finished unit
            (imports, Ray start, actor start, model loads and one unit).

    python benchmarks/overhead.py                  # 16 copies of the real clip at fps 30 (64 frames each)
    python benchmarks/overhead.py --copies 40 --cap 120   # the issue-12 setting: 40 copies, all frames
    python benchmarks/overhead.py --stack dlib     # the all-dlib face stack instead of the default
    python benchmarks/overhead.py --quick          # 3 copies, smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    FACE_STACKS,
    STAGES,
    bench_config,
    bench_dir,
    bench_env,
    bench_parser,
    build_timeline,
    hfl_command,
    load_note,
)

# ---------------------------------------------------------------------------- children


def child_build(config: Path, out: Path, workers: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    import ray

    from hfl.engine.runner import init_ray, run_build
    from hfl.pipeline import load_config, validate

    res: dict[str, Any] = {"import_s": time.perf_counter() - t0}
    cfg = load_config(config, [f"ray.workers={workers}"])
    validate(cfg, list(STAGES))
    t = time.perf_counter()
    init_ray(cfg)
    res["ray_init_s"] = time.perf_counter() - t
    res["build_start"] = time.time()
    t = time.perf_counter()
    run_build(cfg, out, list(STAGES))  # one call, as `hfl build --stage mine,quality`: the stages fuse
    res["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ray.shutdown()
    res["ray_shutdown_s"] = time.perf_counter() - t
    return res


def child_baseline(config: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    from collections import deque

    import cv2
    import numpy as np

    from hfl.backends.face import load_detector, load_landmarker
    from hfl.imageops import encode_jpeg
    from hfl.inputs import list_inputs
    from hfl.pipeline import load_config
    from hfl.stages.quality import QualityStage
    from hfl.tracking import Tracker
    from hfl.video import open_frames

    res: dict[str, Any] = {"import_s": time.perf_counter() - t0}
    cv2.setNumThreads(1)  # as UnitWorker does
    cfg = load_config(config)
    m = cfg.mine
    t = time.perf_counter()
    det = load_detector(cfg.backends.face)
    lmk = load_landmarker(cfg.backends.face)
    qstage = QualityStage(cfg)
    qstage.setup()
    res["model_load_s"] = time.perf_counter() - t
    ops = dict.fromkeys(("decode", "jpeg", "detect", "track", "landmarks", "quality"), 0.0)
    frames = kept = 0
    t_loop = time.perf_counter()
    for item in list_inputs(m.input):
        t = time.perf_counter()
        _, it = open_frames(item.path, m.fps, m.max_frames_per_video, m.decoder)
        ops["decode"] += time.perf_counter() - t
        tracker = Tracker(prefix=item.video_id, min_iou=m.track_iou)
        rows = []
        while True:
            t = time.perf_counter()
            fr = next(it, None)
            ops["decode"] += time.perf_counter() - t
            if fr is None:
                break
            frames += 1
            h, w = fr.rgb.shape[:2]
            t = time.perf_counter()
            jpg = encode_jpeg(fr.rgb, m.jpeg_quality)
            t1 = time.perf_counter()
            faces = det.detect(fr.rgb)
            t2 = time.perf_counter()
            ids = tracker.update([(f.x0, f.y0, f.x1, f.y1) for f in faces])
            t3 = time.perf_counter()
            ops["jpeg"] += t1 - t
            ops["detect"] += t2 - t1
            ops["track"] += t3 - t2
            if not faces:
                continue
            lms = lmk.landmarks(fr.rgb, faces[0])
            ops["landmarks"] += time.perf_counter() - t3
            f0 = faces[0]
            rows.append(
                {
                    "width": w,
                    "height": h,
                    "image": jpg,
                    "num_faces": len(faces),
                    "box": [f0.x0, f0.y0, f0.x1, f0.y1],
                    "landmarks": np.asarray(lms, np.float32).reshape(-1).tolist(),
                    "track_id": ids[0],
                    "reject_reason": None,
                    "reject_detail": None,
                }
            )
        t = time.perf_counter()
        history: dict[str, deque[np.ndarray]] = {}
        for r in rows:
            kept += qstage.judge(r, history)["reject_reason"] is None
        ops["quality"] += time.perf_counter() - t
    res["loop_s"] = time.perf_counter() - t_loop
    res["ops_s"] = ops
    res["frames"], res["kept"] = frames, kept
    return res


def first_unit_seconds(config: Path, out: Path, workers: int) -> tuple[float, float]:
    """Run `hfl build` as a user does; (seconds from start to the first quality part, total seconds)."""
    qdir = out / "stages" / "quality"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        hfl_command(config, out, workers), env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first = float("nan")
    while proc.poll() is None:
        if first != first and qdir.is_dir() and any(qdir.glob("part-*.parquet")):
            first = time.perf_counter() - t0
        time.sleep(0.02)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.read().decode()[-3000:] if proc.stderr else "")
        raise SystemExit(f"hfl build failed ({proc.returncode})")
    if first != first and any(qdir.glob("part-*.parquet")):
        first = total
    return first, total


def run_child(kind: str, args: list[str]) -> dict[str, Any]:
    env = bench_env()
    if kind == "baseline":
        env["OMP_NUM_THREADS"] = "1"  # Ray gives num_cpus=1 actors OMP_NUM_THREADS=1
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{kind} child failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = bench_parser(__doc__, "3 copies")
    ap.add_argument("--copies", type=int, default=16, help="input videos (copies of the real clip)")
    ap.add_argument("--workers", type=int, default=1, help="ray.workers for the build (baseline: 1 process)")
    ap.add_argument("--stack", choices=sorted(FACE_STACKS), default="default", help="face backends")
    ap.add_argument("--child", choices=["build", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "build":
        print(json.dumps(child_build(a.config, a.out, a.workers)))
        return
    if a.child == "baseline":
        print(json.dumps(child_baseline(a.config)))
        return
    if a.quick:
        a.copies = 3

    with bench_dir("hfl-bench-overhead-", a.keep) as tmp:
        config = bench_config(tmp, "", a.copies, a.fps, a.cap, a.stack)
        out = tmp / "build"
        print(
            f"overhead: {a.copies} videos, fps {a.fps:g}, cap {a.cap}, workers {a.workers}, face stack "
            f"{a.stack} {FACE_STACKS[a.stack]}; {load_note()}"
        )
        base = run_child("baseline", ["--config", str(config)])
        b = run_child("build", ["--config", str(config), "--out", str(out), "--workers", str(a.workers)])
        report(a, base, b, out)
        first, total = first_unit_seconds(config, tmp / "build-cli", a.workers)
        print(
            f"hfl build (fresh process, {a.workers} worker(s)): first finished unit after {first:.2f}s "
            f"(target <= 8 s), all {a.copies} units in {total:.2f}s"
        )


def report(a: argparse.Namespace, base: dict[str, Any], b: dict[str, Any], out: Path) -> None:
    import pyarrow.parquet as pq

    frames = sum(pq.read_metadata(p).num_rows for p in (out / "stages" / "mine").glob("part-*.parquet"))
    base_total = base["model_load_s"] + base["loop_s"]
    par = max(1, min(a.workers, os.cpu_count() or 1))
    base_eff = base_total / par  # ideal parallel baseline when comparing against >1 worker
    build_s = b["build_s"]
    with_ray = b["ray_init_s"] + build_s
    tl = build_timeline(out, b["build_start"])
    print(f"\nframes: {frames} mined by the build, {base['frames']} by the loop (kept {base['kept']})")
    print("plain loop (1 process):")
    print(f"  imports {base['import_s']:.2f}s (not counted), model load {base['model_load_s']:.2f}s")
    for k, v in base["ops_s"].items():
        print(f"  {k:<10} {v:7.2f}s")
    print(f"  loop total {base['loop_s']:.2f}s; with model load {base_total:.2f}s")
    print(f"build (ray.workers={a.workers}):")
    print(f"  imports {b['import_s']:.2f}s (not counted), Ray start-up (init_ray alone) ", end="")
    print(f"{b['ray_init_s']:.2f}s")
    stage_s = ", ".join(f"{st} {s:.2f}s" for st, s in tl["stage_seconds"].items())
    how = "fused: one chain, one actor pool" if tl["fused"] else "NOT fused: one pool per stage"
    print(f"  run_build mine+quality {build_s:.2f}s wall ({how}; stats.json seconds {stage_s})")
    print(
        f"  timeline: first mine part after {tl['first_mine_done']:.2f}s, first unit done (quality part) "
        f"after {tl['first_unit_done']:.2f}s (actor start + imports + both models + 1 unit), then "
        f"{tl['steady_per_unit']:.3f}s/unit x {tl['units'] - 1}, tail {tl['tail']:.2f}s"
    )
    print(f"  ray.shutdown {b['ray_shutdown_s']:.2f}s (not counted)")
    ops = base["ops_s"]
    n = max(1, a.copies)
    per_mine = (ops["decode"] + ops["jpeg"] + ops["detect"] + ops["track"] + ops["landmarks"]) / n
    per_q = ops["quality"] / n
    # steady_per_unit is wall time between finished units, so it already reflects the workers' parallelism;
    # times par it is one actor's time per unit, of which quality_part is the quality share
    s_build = tl["steady_per_unit"]
    q_part = tl["quality_part"]
    steady_ratio = s_build * par / max(per_mine + per_q, 1e-9)
    print(
        f"steady state per video: build {s_build:.3f}s (mine ~{s_build * par - q_part:.3f}s + quality part "
        f"{q_part:.3f}s) vs loop {per_mine:.3f}s + {per_q:.3f}s -> ratio {steady_ratio:.2f}"
    )
    fixed = build_s - s_build * n
    print(
        f"fixed cost in run_build beyond steady state: ~{fixed:.1f}s (chain start-up = first unit minus a "
        f"steady unit: {tl['first_unit_done'] - s_build:.1f}s; the rest: planning, finalize, stats)"
    )
    # ratio(N) = (F + N * s_build) / (L + N * s_loop); solve ratio(N) = target for N
    s_loop = (per_mine + per_q) / par
    for label, fixed_cost in (("without", fixed), ("with", fixed + b["ray_init_s"])):
        denom = 1.15 * s_loop - s_build
        need = (fixed_cost - 1.15 * base["model_load_s"] / par) / denom if denom > 0 else float("inf")
        print(f"  projected: ratio <= 1.15 {label} Ray start-up from ~{need:.0f} videos of this clip")
    if par > 1:
        print(f"(baseline divided by {par} = ideal {par}-way parallel loop)")
    r_no_ray = build_s / base_eff
    r_ray = with_ray / base_eff
    print(f"build time without Ray start-up: {build_s:.2f}s -> ratio {r_no_ray:.2f}")
    print(f"build time with Ray start-up:    {with_ray:.2f}s -> ratio {r_ray:.2f}")
    print(f"overhead ratio: {r_ray:.2f} (target <= 1.15; {r_no_ray:.2f} without Ray start-up)")


if __name__ == "__main__":
    main()
