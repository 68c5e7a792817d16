"""Yield per video of the demo corpus, for each reading of the paper's centring rule.

Builds the real-video chain of `pipelines/demo.yaml` (mine -> quality -> pair -> identity -> caption ->
split, no synthetic subset) once per `quality.center_rule` (area, the default; axis, the literal per-axis
reading) and prints, per video: minutes sampled, frames, faces, frames kept by quality, candidate pairs,
kept pairs, pairs per minute of video, and what stopped the rest (hfl.yields). Extra `--set` overrides
apply to both runs (e.g. `--set quality.min_log_blur=40` to see what a looser blur bar gives).

    python benchmarks/yield.py                    # ~4 min on 2 cores
    python benchmarks/yield.py --rules area       # one reading only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_dir  # noqa: E402

from hfl.engine.runner import run_build
from hfl.pipeline import load_config, validate
from hfl.yields import HEADERS, video_yield, yield_table_rows

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
REAL = ["mine", "quality", "pair", "identity", "caption", "split"]


def table(rows: list[list]) -> str:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", nargs="+", default=["area", "axis"], help="centring readings to compare")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value overrides")
    ap.add_argument("--keep", action="store_true", help="keep the build folders")
    args = ap.parse_args()
    with bench_dir("hfl-yield-", args.keep) as tmp:
        for rule in args.rules:
            sets = [f"stages={REAL}", f"quality.center_rule={rule}", *args.overrides]
            cfg = load_config(DEMO, sets)
            validate(cfg, cfg.stages)
            out = tmp / rule
            run_build(cfg, out, cfg.stages)
            rows = video_yield(out, yaml.safe_load((out / "config.yaml").read_text()))
            minutes = sum(r["minutes"] for r in rows)
            pairs = sum(r["pairs"] for r in rows)
            kept = sum(r["quality"] for r in rows)
            frames = sum(r["frames"] for r in rows)
            people = len({r["person"] for r in rows if r["pairs"] and r["person"]})
            print(f"\n## center_rule: {rule}\n")
            print(table(yield_table_rows(rows)))
            print(
                f"\nall: {frames} frames -> {kept} kept by quality -> {pairs} pairs from {people} people; "
                f"{pairs / max(minutes, 1e-9):.1f} pairs per minute of sampled video ({minutes:.2f} min)"
            )


if __name__ == "__main__":
    main()
