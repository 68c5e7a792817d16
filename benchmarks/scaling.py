"""Worker scaling: frames/s through `mine + quality` with ray.workers=2 vs ray.workers=1 on the same inputs.

Every run is a separate `hfl build ... --no-report` process (fresh embedded Ray each). Throughput is mined
frames / build seconds from stats.json (mine and quality run fused as one chain, so both stats.json carry
the chain's wall time; unfused, the two stages' seconds add up), i.e. Ray start-up and imports excluded; the
whole command's wall time and a steady-state rate (from when each unit's quality part appeared) are shown
too.

    python benchmarks/scaling.py             # 32 copies of the real clip at fps 30 (64 frames each)
    python benchmarks/scaling.py --quick     # 4 copies, smoke test
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    bench_config,
    bench_dir,
    bench_parser,
    build_timeline,
    hfl_command,
    load_note,
    run_hfl,
    stage_stats,
)


def one_run(config: Path, out: Path, workers: int) -> dict[str, Any]:
    wall, _ = run_hfl(hfl_command(config, out, workers), out.with_suffix(".log"))
    frames = int(stage_stats(out, "mine")["rows_in"])
    tl = build_timeline(out)
    # steady state: units finished (quality part written) per second between the first and last unit
    steady = tl["steady_per_unit"] * tl["units"]
    return {
        "workers": workers,
        "wall": wall,
        "frames": frames,
        "stage_s": tl["seconds"],
        "fps": frames / tl["seconds"],
        "fps_wall": frames / wall,
        "fps_steady": frames / steady if steady > 0 else float("nan"),
        "tl": tl,
    }


def main() -> None:
    ap = bench_parser(__doc__, "4 copies")
    ap.add_argument("--copies", type=int, default=32, help="input videos (copies of the real clip)")
    ap.add_argument("--workers", type=int, nargs=2, default=[1, 2], metavar=("BASE", "MORE"))
    a = ap.parse_args()
    if a.quick:
        a.copies = 4
    with bench_dir("hfl-bench-scaling-", a.keep) as tmp:
        config = bench_config(tmp, "", a.copies, a.fps, a.cap)
        print(f"scaling: {a.copies} videos, fps {a.fps:g}, cap {a.cap}; {load_note()}")
        runs = []
        for w in a.workers:
            r = one_run(config, tmp / f"build-w{w}", w)
            runs.append(r)
            t = r["tl"]
            how = "mine+quality fused" if t["fused"] else "mine, quality NOT fused"
            print(
                f"workers={w}: {r['frames']} frames; {how} {t['seconds']:.1f}s (first unit done "
                f"{t['first_unit_done']:.1f}s, then {t['steady_per_unit']:.3f}s/unit); "
                f"command wall {r['wall']:.1f}s\n"
                f"  throughput {r['fps']:.1f} frames/s (build seconds), {r['fps_wall']:.1f} (command wall), "
                f"{r['fps_steady']:.1f} (steady state)"
            )
        b, m = runs
        print(
            f"ratios {m['workers']}/{b['workers']} workers: wall {m['fps_wall'] / b['fps_wall']:.2f}, "
            f"steady state {m['fps_steady'] / b['fps_steady']:.2f}"
        )
        ratio = m["fps"] / b["fps"]
        print(f"scaling ratio: {ratio:.2f} (target >= 1.7; build seconds, Ray start-up excluded)")


if __name__ == "__main__":
    main()
