"""Per-video yield of a build: what each input video gave at each stage, and the filter that stopped it.

Read from the stage parts (small columns only), so it works on any finished or partial build:

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
from typing import Any

import numpy as np

from hfl.storage import Location, location, parquet_file, read_table

# the measured column behind each frame-level reason, and the config key of its bar
MEASURE = {
    "off_center": ("centroid", None),
    "face_too_small": ("face_area", ("quality", "min_face_area")),
    "blurry": ("log_blur", ("quality", "min_log_blur")),
    "low_quality": ("quality", ("quality", "min_quality")),
    "too_similar": ("change_score", ("pair", "min_change_score")),
    "low_semantic_diversity": ("semantic_diversity", ("pair", "min_semantic_diversity")),
}
PAIR_STAGES = ("pair", "identity", "caption")
IGNORED = {"not_selected"}  # a budget, not a filter


def _read(stage_dir: Location, columns: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted(stage_dir.glob("part-*.parquet")):
        have = set(parquet_file(p).schema_arrow.names)
        rows += read_table(p, columns=[c for c in columns if c in have]).to_pylist()
    return rows


def video_yield(out_dir: str | Location, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One dict per input video (in input order of `mine`'s parts), see the module docstring."""
    stages = location(out_dir) / "stages"
    config = config or {}
    base = ["video", "video_id", "reject_reason"]
    mine = _read(stages / "mine", base + ["timestamp"])
    quality = _read(
        stages / "quality", base + ["centroid_x", "centroid_y", "face_area", "log_blur", "quality"]
    )
    pair = _read(stages / "pair", base + ["change_score", "semantic_diversity"])
    later = {s: _read(stages / s, base) for s in PAIR_STAGES[1:] if (stages / s).is_dir()}
    split = _read(stages / "split", ["video_id", "split", "subset", "group_id"])
    final_stage = next((s for s in ("caption", "identity") if s in later), "pair")
    final = later.get(final_stage, pair)

    videos: dict[str, dict[str, Any]] = {}
    for r in mine:
        v = videos.setdefault(
            r["video_id"],
            {"video": r["video"], "video_id": r["video_id"], "frames": 0, "faces": 0, "_ts": []},
        )
        v["frames"] += 1
        v["faces"] += r["reject_reason"] is None
        if r.get("timestamp") is not None:
            v["_ts"].append(r["timestamp"])
    for v in videos.values():
        ts = v.pop("_ts")
        v["minutes"] = round((max(ts) - min(ts)) / 60.0, 3) if len(ts) > 1 else 0.0
        v.update(quality=0, candidates=0, pairs=0, test=0, person=None)

    def count(rows: list[dict[str, Any]], key: str, kept_only: bool) -> None:
        for r in rows:
            if r["video_id"] in videos and (not kept_only or r["reject_reason"] is None):
                videos[r["video_id"]][key] += 1

    count(quality, "quality", True)
    count(pair, "candidates", False)
    count(final, "pairs", True)
    for r in split:
        if r["video_id"] in videos and (r.get("subset") or "real") == "real":
            videos[r["video_id"]]["test"] += r["split"] == "test"
            videos[r["video_id"]]["person"] = r.get("group_id")

    for vid, v in videos.items():
        v["stopped_by"] = _stopped_by(vid, v, mine, quality, pair, later, config)
    return list(videos.values())


def _stopped_by(
    vid: str,
    v: dict[str, Any],
    mine: list[dict[str, Any]],
    quality: list[dict[str, Any]],
    pair: list[dict[str, Any]],
    later: dict[str, list[dict[str, Any]]],
    config: dict[str, Any],
) -> str:
    """The stages, in chain order, that kept under half of this video's rows (budgets excluded), each with
    its top reason and the median of that reason's measure; at most two."""
    found: list[str] = []
    worst: tuple[float, str] | None = None
    for stage, rows in (("mine", mine), ("quality", quality), ("pair", pair), *later.items()):
        sel = [r for r in rows if r["video_id"] == vid and r["reject_reason"] not in IGNORED]
        if not sel:
            continue
        kept = sum(r["reject_reason"] is None for r in sel)
        reasons = Counter(r["reject_reason"] for r in sel if r["reject_reason"] is not None)
        if not reasons:
            continue
        reason, n = reasons.most_common(1)[0]
        text = f"{stage}: {reason} {n}/{len(sel)}" + _measure(reason, sel, config)
        ratio = kept / len(sel)
        if ratio < 0.5:
            found.append(text)
        if worst is None or ratio < worst[0]:
            worst = (ratio, text)
    if not found and worst is not None and not v["pairs"]:
        found.append(worst[1])
    return "; ".join(found[:2]) or "-"


def _measure(reason: str, rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """' (median <measure> vs <bar>)' over the rows rejected for `reason`, where a measure is known."""
    col, bar = MEASURE.get(reason, (None, None))
    sel = [r for r in rows if r["reject_reason"] == reason]
    if col == "centroid":
        cx = np.median([r["centroid_x"] for r in sel if r.get("centroid_x") is not None] or [np.nan])
        cy = np.median([r["centroid_y"] for r in sel if r.get("centroid_y") is not None] or [np.nan])
        return f" (median centroid {cx:.2f}, {cy:.2f})"
    vals = [r[col] for r in sel if col is not None and r.get(col) is not None]
    if not vals:
        return ""
    limit = config.get(bar[0], {}).get(bar[1]) if bar else None
    return f" (median {col} {np.median(vals):.3g}" + (f" vs {limit:g})" if limit is not None else ")")


COLUMNS = ("video", "minutes", "frames", "faces", "quality", "candidates", "pairs", "test", "stopped_by")


def yield_table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows for a table with COLUMNS headers, plus pairs per minute of sampled video."""
    out = []
    for r in rows:
        per_min = f"{r['pairs'] / r['minutes']:.1f}" if r["minutes"] > 0 else "-"
        out.append([*(r[c] for c in COLUMNS), per_min])
    return out


HEADERS = [*COLUMNS, "pairs/min"]
