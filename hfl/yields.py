"""Per-video yield of a build: what each input video gave at each stage, and the filter that stopped it.

Read from the stage parts (small columns only, one part at a time, tallied per video), so it works on any
finished or partial build:

    frames     sampled frames (rows of `mine`)
    faces      frames with a detected face (kept by `mine`)
    quality    frames kept by `quality`
    candidates candidate pairs (rows of `pair`)
    pairs      pairs kept by the last real-pair stage present (caption, else identity, else pair)
    test       of those, pairs in the test split (when `split` ran)
    minutes    sampled span of the video in minutes (last - first sampled timestamp; 0 for a still)
    stopped_by stages that kept under half of the video's rows, as "stage: reason n/N (median <measure> vs
               <bar>)", at most two (budgets such as not_selected are not filters)

Used by `hfl report`, the dataset card and `benchmarks/yield.py`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from hfl.storage import Location, location, parquet_file, read_table


@cache
def measures() -> dict[str, tuple[str, tuple[str, str] | None]]:
    """The measured column behind each reject reason that has one, and (section, key) of its bar in the
    config; declared by the stages that write the reason (`Stage.measures`)."""
    from hfl.stages import STAGES

    out: dict[str, tuple[str, tuple[str, str] | None]] = {}
    for name in STAGES:
        for reason, (col, key) in STAGES[name].measures.items():
            out[reason] = (col, (name, key) if key else None)
    return out


PAIR_STAGES = ("pair", "identity", "caption")
IGNORED = {"not_selected"}  # a budget, not a filter


@dataclass
class _Tally:
    """One video's rows at one stage: counts, reasons, and the measure of each rejected row."""

    rows: int = 0  # every row, budgets included
    kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # reject reason -> rows
    measures: dict[str, list[Any]] = field(default_factory=dict)  # reason -> its measure per rejected row


def _tally(stage_dir: Location, extra: list[str] = ()) -> tuple[dict[str, _Tally], list[dict[str, Any]]]:
    """Per-video tallies of a stage, one part at a time, and the rows of the `extra` columns (small)."""
    tallies: dict[str, _Tally] = {}
    extras: list[dict[str, Any]] = []
    wanted = ["video_id", "reject_reason", *extra, *{c for c, _ in measures().values() if c != "centroid"},
              "centroid_x", "centroid_y"]  # fmt: skip
    for p in sorted(stage_dir.glob("part-*.parquet")):
        have = set(parquet_file(p).schema_arrow.names)
        for r in read_table(p, columns=[c for c in dict.fromkeys(wanted) if c in have]).to_pylist():
            t = tallies.setdefault(r["video_id"], _Tally())
            t.rows += 1
            reason = r["reject_reason"]
            if reason is None:
                t.kept += 1
            else:
                t.reasons[reason] += 1
                col = measures().get(reason, (None, None))[0]
                if col == "centroid":
                    t.measures.setdefault(reason, []).append((r.get("centroid_x"), r.get("centroid_y")))
                elif col is not None and r.get(col) is not None:
                    t.measures.setdefault(reason, []).append(r[col])
            if extra:
                extras.append({c: r.get(c) for c in ("video_id", "reject_reason", *extra)})
    return tallies, extras


def video_yield(out_dir: str | Location, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One dict per input video (in input order of `mine`'s parts), see the module docstring."""
    stages = location(out_dir) / "stages"
    config = config or {}
    mine, mine_rows = _tally(stages / "mine", ["video", "timestamp"])
    chain = {"mine": mine, "quality": _tally(stages / "quality")[0], "pair": _tally(stages / "pair")[0]}
    for s in PAIR_STAGES[1:]:
        if (stages / s).is_dir():
            chain[s] = _tally(stages / s)[0]
    final = chain[next((s for s in ("caption", "identity") if s in chain), "pair")]
    split = (
        _tally(stages / "split", ["split", "subset", "group_id"])[1] if (stages / "split").is_dir() else []
    )

    videos: dict[str, dict[str, Any]] = {}
    stamps: dict[str, list[float]] = {}
    for r in mine_rows:
        videos.setdefault(r["video_id"], {"video": r["video"], "video_id": r["video_id"]})
        if r.get("timestamp") is not None:
            stamps.setdefault(r["video_id"], []).append(r["timestamp"])
    for vid, v in videos.items():
        ts = stamps.get(vid, [])
        v["frames"], v["faces"] = mine[vid].rows, mine[vid].kept
        v["minutes"] = round((max(ts) - min(ts)) / 60.0, 3) if len(ts) > 1 else 0.0
        none = _Tally()
        v.update(
            quality=chain["quality"].get(vid, none).kept,
            candidates=chain["pair"].get(vid, none).rows,
            pairs=final.get(vid, none).kept,
            test=0,
            person=None,
        )
    for r in split:
        if r["video_id"] in videos and (r.get("subset") or "real") == "real":
            videos[r["video_id"]]["test"] += r["split"] == "test"
            videos[r["video_id"]]["person"] = r.get("group_id")
    for vid, v in videos.items():
        v["stopped_by"] = _stopped_by([(s, t[vid]) for s, t in chain.items() if vid in t], v, config)
    return list(videos.values())


def _stopped_by(tallies: list[tuple[str, _Tally]], v: dict[str, Any], config: dict[str, Any]) -> str:
    """The stages, in chain order, that kept under half of this video's rows (budgets excluded), each with
    its top reason and the median of that reason's measure; at most two."""
    found: list[str] = []
    worst: tuple[float, str] | None = None
    for stage, t in tallies:
        reasons = Counter({k: n for k, n in t.reasons.items() if k not in IGNORED})
        counted = t.rows - sum(n for k, n in t.reasons.items() if k in IGNORED)
        if not counted or not reasons:
            continue
        reason, n = reasons.most_common(1)[0]
        text = f"{stage}: {reason} {n}/{counted}" + _measure(reason, t.measures.get(reason, []), config)
        ratio = t.kept / counted
        if ratio < 0.5:
            found.append(text)
        if worst is None or ratio < worst[0]:
            worst = (ratio, text)
    if not found and worst is not None and not v["pairs"]:
        found.append(worst[1])
    return "; ".join(found[:2]) or "-"


def _measure(reason: str, values: list[Any], config: dict[str, Any]) -> str:
    """' (median <measure> vs <bar>)' over the rows rejected for `reason`, where a measure is known."""
    col, bar = measures().get(reason, (None, None))
    if col == "centroid":
        cx = np.median([x for x, _ in values if x is not None] or [np.nan])
        cy = np.median([y for _, y in values if y is not None] or [np.nan])
        return f" (median centroid {cx:.2f}, {cy:.2f})"
    if not values:
        return ""
    limit = config.get(bar[0], {}).get(bar[1]) if bar else None
    return f" (median {col} {np.median(values):.3g}" + (f" vs {limit:g})" if limit is not None else ")")


COLUMNS = ("video", "minutes", "frames", "faces", "quality", "candidates", "pairs", "test", "stopped_by")


def yield_table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows for a table with COLUMNS headers, plus pairs per minute of sampled video."""
    out = []
    for r in rows:
        per_min = f"{r['pairs'] / r['minutes']:.1f}" if r["minutes"] > 0 else "-"
        out.append([*(r[c] for c in COLUMNS), per_min])
    return out


HEADERS = [*COLUMNS, "pairs/min"]
