"""Stage `pair` (paper Sec. 3.1, App. B.1): frame pairs of one face track with geometric and semantic
diversity.

Per video (one unit = one quality part = one video), per face track:
1. up to `max_frames_per_track` kept frames (evenly spread when there are more);
2. every pair (earlier frame = source) gets the change score of Eq. 8 (hfl.landmarks); pairs outside
   [min_change_score, max_change_score] are rejected as `too_similar` / `implausible_change`;
3. in-band pairs are taken greedily, largest change first, skipping frames already used in
   `max_uses_per_frame` kept pairs, so kept pairs spread over the video instead of reusing one extreme
   frame; each is checked by the semantic backend (kept at >= min_semantic_diversity) until the video
   has `max_pairs_per_video` pairs or `max_semantic_checks` checks were spent; the rest are
   `not_selected`.
Every candidate is a row; only kept pairs carry the two JPEGs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg
from hfl.landmarks import as_points, combine, pairwise_diffs
from hfl.schema import PAIR_SCHEMA
from hfl.stages.rows import kept_batches, reject

FRAME_FIELDS = (
    "key",
    "frame_index",
    "timestamp",
    "width",
    "height",
    "box",
    "landmarks",
    "log_blur",
    "quality",
)


def pair_key(video_id: str, src_frame: int, tgt_frame: int) -> str:
    return f"{video_id}_p{src_frame:06d}-{tgt_frame:06d}"


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


class PairStage(Stage):
    name = "pair"
    inputs = ("quality",)
    outputs = ("change_score", "inner_diff", "overall_diff", "semantic_diversity")
    schema = PAIR_SCHEMA
    description = "pair frames of one face track: change score (Eq. 8) band + semantic diversity"
    unit_aligned = True

    def resources(self) -> Resources:
        from hfl.stages.models import vlm_resources

        return vlm_resources(self.cfg.backends.expression, "semantic", 256)

    def config_section(self) -> dict[str, Any]:
        e = self.cfg.backends.expression
        backend = asdict(e.vlm) if e.semantic == "vlm" else {"crop_margin": e.crop_margin}
        return {"pair": asdict(self.cfg.pair), "semantic": e.semantic, "semantic_backend": backend}

    def thresholds(self) -> dict[str, Any]:
        p = self.cfg.pair
        return {
            "change_score": [p.min_change_score, p.max_change_score],
            "semantic_diversity": p.min_semantic_diversity,
            "pairs_per_video": p.max_pairs_per_video,
        }

    def setup(self) -> None:
        from hfl.stages.models import load_semantic

        self.semantic = load_semantic(self.cfg.backends.expression)

    def error_rows(self, unit: WorkUnit, exc: Exception) -> list[dict[str, Any]]:
        row = {"key": f"{unit.id}_pairs", "video_id": unit.id}
        return [reject(row, "error", f"{type(exc).__name__}: {exc}"[:500])]

    # ------------------------------------------------------------------ work
    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        tracks: dict[str, list[dict[str, Any]]] = {}
        for rows in kept_batches(unit.payload["path"], self.resources().batch_size):
            for r in rows:
                if r.get("landmarks") is not None:
                    tracks.setdefault(r["track_id"] or r["video_id"], []).append(r)
        for track_id in sorted(tracks):
            frames = sorted(tracks[track_id], key=lambda r: r["frame_index"])
            frames = [frames[i] for i in spread(len(frames), self.cfg.pair.max_frames_per_track)]
            if len(frames) >= 2:
                yield self.pair_track(frames)

    def pair_track(self, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All candidate rows of one track, decided."""
        p = self.cfg.pair
        pts = np.stack([as_points(f["landmarks"]) for f in frames])
        inner, overall = pairwise_diffs(pts)
        score = combine(inner, overall)
        n = len(frames)
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        in_band = []
        for i in range(n):
            for j in range(i + 1, n):
                row = self.candidate_row(frames[i], frames[j], inner[i, j], overall[i, j], score[i, j])
                rows[(i, j)] = row
                s = float(score[i, j])
                if s < p.min_change_score:
                    reject(row, "too_similar", f"change_score={s:.1f} < {p.min_change_score:g}")
                elif s > p.max_change_score:
                    reject(row, "implausible_change", f"change_score={s:.1f} > {p.max_change_score:g}")
                else:
                    in_band.append((i, j))
        in_band.sort(key=lambda ij: (-score[ij], ij))
        self.select(frames, rows, in_band)
        return [rows[k] for k in sorted(rows)]

    def select(
        self,
        frames: list[dict[str, Any]],
        rows: dict[tuple[int, int], dict[str, Any]],
        order: list[tuple[int, int]],
    ) -> None:
        """Greedy diverse selection with semantic checks (see the module docstring)."""
        p = self.cfg.pair
        uses = np.zeros(len(frames), int)
        images: dict[int, np.ndarray] = {}
        cache: dict[int, Any] = {}
        kept = checks = 0
        for i, j in order:
            row = rows[(i, j)]
            if kept >= p.max_pairs_per_video:
                reject(row, "not_selected", f"the video already has {kept} pairs")
                continue
            if max(uses[i], uses[j]) >= p.max_uses_per_frame:
                reject(row, "not_selected", f"a frame is already in {p.max_uses_per_frame} kept pairs")
                continue
            if checks >= p.max_semantic_checks:
                reject(row, "not_selected", f"semantic-check budget ({p.max_semantic_checks}) spent")
                continue
            for k in (i, j):
                if k not in images:
                    images[k] = decode_jpeg(frames[k]["image"])
            checks += 1
            try:
                sem = self.semantic.difference(
                    (images[i], frames[i]["box"], i), (images[j], frames[j]["box"], j), cache
                )
            except Exception as exc:
                reject(row, "error", f"semantic backend: {type(exc).__name__}: {exc}"[:500])
                continue
            row["semantic_backend"] = self.semantic.name
            if sem is None:
                reject(row, "semantic_failed", "the semantic backend gave no usable answer")
                continue
            row["semantic_diversity"] = float(sem)
            if sem < p.min_semantic_diversity:
                reject(row, "low_semantic_diversity", f"semantic={sem:.2f} < {p.min_semantic_diversity:g}")
                continue
            row["src_image"], row["tgt_image"] = frames[i]["image"], frames[j]["image"]
            uses[i] += 1
            uses[j] += 1
            kept += 1

    @staticmethod
    def candidate_row(
        a: dict[str, Any], b: dict[str, Any], inner: float, overall: float, score: float
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "key": pair_key(a["video_id"], a["frame_index"], b["frame_index"]),
            "video": a["video"],
            "video_id": a["video_id"],
            "track_id": a["track_id"],
            "src_key": a["key"],
            "tgt_key": b["key"],
            "src_frame": a["frame_index"],
            "tgt_frame": b["frame_index"],
            "src_timestamp": a["timestamp"],
            "tgt_timestamp": b["timestamp"],
            "inner_diff": float(inner),
            "overall_diff": float(overall),
            "change_score": float(score),
            "reject_reason": None,
            "reject_detail": None,
        }
        for prefix, f in (("src", a), ("tgt", b)):
            row[f"{prefix}_width"] = f["width"]
            row[f"{prefix}_height"] = f["height"]
            row[f"{prefix}_box"] = f["box"]
            row[f"{prefix}_landmarks"] = f["landmarks"]
            row[f"{prefix}_log_blur"] = f.get("log_blur")
            row[f"{prefix}_quality"] = f.get("quality")
        return row
