"""Worker scaling: frames/s through `mine + quality` with ray.workers=2 vs ray.workers=1 on the same inputs.

Every run is a separate `hfl build ... --no-report` process (fresh embedded Ray each). Throughput is mined
frames / (mine + quality seconds from stats.json), i.e. Ray start-up and imports excluded; the whole
command's wall time and a steady-state rate (from when each unit's parquet part appeared) are shown too.

    python benchmarks/scaling.py             # 32 copies of the real clip at fps 30 (64 frames each)
    python benchmarks/scaling.py --quick     # 4 copies, smoke test
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    STAGES,
    hfl_command,
    load_note,
    make_inputs,
    part_times,
    run_hfl,
    stage_stats,
    timeline,
    write_config,
)


def one_run(config: Path, out: Path, workers: int) -> dict[str, Any]:
    wall, _ = run_hfl(hfl_command(config, out, workers), out.with_suffix(".log"))
    frames = int(stage_stats(out, "mine")["rows_in"])
    tls = {st: timeline(out, st) for st in STAGES}
    secs = sum(t["seconds"] for t in tls.values())
    # steady state: units finished per second between a stage's first and last finished part
    steady = 0.0
    for st in STAGES:
        times = part_times(out, st)
        steady += (times[-1] - times[0]) / max(len(times) - 1, 1) * len(times)
    return {
        "workers": workers,
        "wall": wall,
        "frames": frames,
        "stage_s": secs,
        "fps": frames / secs,
        "fps_wall": frames / wall,
        "fps_steady": frames / steady if steady > 0 else float("nan"),
        "tls": tls,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=32, help="input videos (copies of the real clip)")
    ap.add_argument("--fps", type=float, default=30.0, help="mine.fps")
    ap.add_argument("--cap", type=int, default=64, help="mine.max_frames_per_video")
    ap.add_argument("--workers", type=int, nargs=2, default=[1, 2], metavar=("BASE", "MORE"))
    ap.add_argument("--quick", action="store_true", help="4 copies (smoke test, < 1 min)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    a = ap.parse_args()
    if a.quick:
        a.copies = 4
    tmp = Path(tempfile.mkdtemp(prefix="hfl-bench-scaling-"))
    try:
        inputs = make_inputs(tmp / "inputs", a.copies)
        config = write_config(tmp / "bench.yaml", inputs, a.fps, a.cap)
        print(f"scaling: {a.copies} videos, fps {a.fps:g}, cap {a.cap}; {load_note()}")
        runs = []
        for w in a.workers:
            r = one_run(config, tmp / f"build-w{w}", w)
            runs.append(r)
            parts = ", ".join(
                f"{st} {t['seconds']:.1f}s (first unit {t['first_unit_done']:.1f}s, "
                f"{t['steady_per_unit']:.3f}s/unit)"
                for st, t in r["tls"].items()
            )
            print(
                f"workers={w}: {r['frames']} frames; {parts}; command wall {r['wall']:.1f}s\n"
                f"  throughput {r['fps']:.1f} frames/s (stages), {r['fps_wall']:.1f} (command wall), "
                f"{r['fps_steady']:.1f} (steady state)"
            )
        b, m = runs
        print(
            f"ratios {m['workers']}/{b['workers']} workers: wall {m['fps_wall'] / b['fps_wall']:.2f}, "
            f"steady state {m['fps_steady'] / b['fps_steady']:.2f}"
        )
        ratio = m["fps"] / b["fps"]
        print(f"scaling ratio: {ratio:.2f} (target >= 1.7; stage seconds, Ray start-up excluded)")
        if a.keep:
            print(f"kept {tmp}")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
