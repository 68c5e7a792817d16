"""Stage `pair` (paper Sec. 3.1, App. B.1): frame pairs of one face track with geometric and semantic
diversity.

Per video (one unit = one quality part = one video; with mine.segment_seconds, the quality parts of a
video's time segments, in time order):
0. segment stitching (segmented videos only): mine's tracker restarts in every segment; a track that
   starts within the tracker's reach (Tracker.max_gap + 1 sampled frames) of the segment boundary
   continues the track of the previous segment whose last box overlaps its first box most (IoU >=
   mine.track_iou, greedy, as the tracker does), and takes its id: track ids are per video from here on;
   track linking: a face track broken by a missed detection or a cut would split one person into
   unrelated tracks. Tracks that never share a frame and whose mean face embeddings (`link_frames`
   frames each, spread over the track) are closer than `link_distance` are joined (union-find), so the
   pairs of one person span the whole video (`linked_tracks` records how many were joined);
then per (linked) track:
1. up to `max_frames_per_track` kept frames (evenly spread when there are more);
2. every pair (earlier frame = source) gets the change score of Eq. 8 (hfl.landmarks); pairs outside
   [min_change_score, max_change_score] are rejected as `too_similar` / `implausible_change`; with
   `prefilter_motion`, in-band pairs whose head motion the instruction template cannot describe (the
   caption stage's rule and head-pose estimator: a turn of neither ~0 nor ~a whole 30-degree unit, or a
   large in-plane tilt) are rejected here as `ambiguous_turn` / `undescribed_tilt`, so the selection
   budget is not spent on pairs `caption` would drop;
3. selection that covers what the video shows: in-band pairs are taken one at a time, each time the
   one whose target (then source) looks least like the targets (sources) already kept — "looks like" =
   change score under `min_change_score`, i.e. the same expression and pose — and among those the
   largest change; frames already in `max_uses_per_frame` kept pairs are skipped. So kept pairs point at
   the distinct expressions and poses of the video, not at one extreme frame. Each is checked by the
   semantic backend (kept at >= min_semantic_diversity) until the video has its budget of pairs
   (max(`max_pairs_per_video`, `pairs_per_minute` x sampled minutes)) or `max_semantic_checks` checks
   were spent; the rest are `not_selected`.
Every candidate is a row; only kept pairs carry the two JPEGs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg
from hfl.instructions import MOTION_REASONS
from hfl.landmarks import as_points, combine, pairwise_diffs
from hfl.schema import PAIR_SCHEMA
from hfl.stages.rows import kept_batches, reject
from hfl.storage import read_table
from hfl.tracking import Tracker, UnionFind, iou

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig

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


@dataclass
class PairConfig:
    """Section `pair` of the pipeline config (YAML `pair:`, `--set pair.<key>=...`)."""

    max_frames_per_track: int = 64  # frames of one face track considered (evenly spread beyond it)
    min_change_score: float = 23.0  # Eq. 8 in per mille of inter-ocular distance (paper: >= 23)
    max_change_score: float = 250.0  # above it: implausible (another person, a landmark failure)
    min_semantic_diversity: float = 0.4  # semantic difference in [0, 1] (paper: Qwen2.5-VL >= 0.4)
    max_pairs_per_video: int = 16  # kept pairs per video (per person track of it)
    pairs_per_minute: float = 0.0  # longer videos get more: budget = max(max_pairs_per_video, this x minutes)
    max_uses_per_frame: int = 2  # a frame appears in at most this many kept pairs of its video
    max_semantic_checks: int = 64  # semantic-backend calls per video (bounds VLM cost)
    prefilter_motion: bool = True  # reject candidates whose head motion caption could not describe
    link_tracks: bool = True  # join face tracks of one video that show the same person (identity embedding)
    link_distance: float = 0.5  # mean face-embedding distance under which two tracks are one person
    link_frames: int = 3  # frames per track (spread over it) whose embeddings are averaged for linking


def pair_key(video_id: str, src_frame: int, tgt_frame: int) -> str:
    return f"{video_id}_p{src_frame:06d}-{tgt_frame:06d}"


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def stitch_tracks(segments: list[list[dict[str, Any]]], min_iou: float, max_gap: int) -> dict[str, str]:
    """Join the tracks of consecutive time segments of one video.

    `segments`: per segment in time order, its sampled frames in order (`box` and `track_id`, None where
    no face). At each boundary, a track of the later segment whose first box comes at most max_gap + 1
    sampled frames after the last box of a track of the earlier one continues it when their IoU >= min_iou
    (greedy by IoU, each track used once, like hfl.tracking.Tracker). Returns later id -> earliest id."""
    out: dict[str, str] = {}
    pos = 0  # position on the video's sampling grid of the first frame of the current segment
    last: dict[str, tuple[int, list[float]]] = {}  # track -> (position, box) of its last face so far
    for k, seg in enumerate(segments):
        first: dict[str, tuple[int, list[float]]] = {}
        for j, r in enumerate(seg):
            if r["track_id"] and r["box"] is not None:
                first.setdefault(r["track_id"], (pos + j, r["box"]))
        if k > 0:
            pairs = sorted(
                (
                    (iou(tuple(a[1]), tuple(b[1])), ta, tb)
                    for ta, a in last.items()
                    for tb, b in first.items()
                    if 0 < b[0] - a[0] <= max_gap + 1
                ),
                key=lambda x: (-x[0], x[1], x[2]),
            )
            used: set[str] = set()
            for score, ta, tb in pairs:
                if score < min_iou:
                    break
                if tb in out or ta in used:
                    continue
                out[tb] = out.get(ta, ta)
                used.add(ta)
        for j, r in enumerate(seg):
            if r["track_id"] and r["box"] is not None:
                last[r["track_id"]] = (pos + j, r["box"])
        pos += len(seg)
    return out


class PairStage(Stage):
    name = "pair"
    inputs = ("quality",)
    outputs = ("change_score", "inner_diff", "overall_diff", "semantic_diversity")
    schema = PAIR_SCHEMA
    description = "pair frames of one face track: change score (Eq. 8) band + semantic diversity"
    unit_aligned = True
    config_class = PairConfig
    reasons = {
        "too_similar": "change score (Eq. 8) below the minimum: the two frames are near copies",
        "implausible_change": "change score above the maximum: usually another person or a landmark failure",
        **MOTION_REASONS,  # prefilter_motion: caption's rule, applied before the pair budget is spent
        "not_selected": "in the change-score band but not chosen (per-video pair budget, frame reuse limit)",
        "low_semantic_diversity": "the semantic backend sees too little expression/pose difference",
        "semantic_failed": "the semantic backend gave no usable answer",
    }
    measures = {
        "too_similar": ("change_score", "min_change_score"),
        "low_semantic_diversity": ("semantic_diversity", "min_semantic_diversity"),
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        from hfl.backends.expression import check_expression_backends
        from hfl.backends.face import check_face_weights
        from hfl.config import check_head_pose

        errors: list[str] = []
        p = cfg.pair
        if not 0 <= p.min_change_score < p.max_change_score:
            errors.append("pair.min_change_score/max_change_score: need 0 <= min < max")
        if not 0 <= p.min_semantic_diversity <= 1:
            errors.append("pair.min_semantic_diversity: must be in [0, 1]")
        if p.pairs_per_minute < 0:
            errors.append("pair.pairs_per_minute: must be >= 0")
        if p.link_distance <= 0:
            errors.append("pair.link_distance: must be > 0")
        counts = ("max_frames_per_track", "max_pairs_per_video", "max_uses_per_frame", "max_semantic_checks")
        for k in (*counts, "link_frames"):
            if getattr(p, k) < 1:
                errors.append(f"pair.{k}: must be >= 1")
        errors += check_expression_backends(cfg.backends.expression, {"semantic"})
        if p.link_tracks and "mine" not in stages:
            errors += check_face_weights(cfg.backends.face)
        if p.prefilter_motion:
            key = "caption.pose_estimator (pair.prefilter_motion)"
            errors += check_head_pose(cfg.caption.pose_estimator, key)
        return errors

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        p = cfg.pair
        return {
            "thresholds": [
                [
                    "pair",
                    "change score (Eq. 8, per mille IOD)",
                    f"{p.min_change_score:g} .. {p.max_change_score:g}",
                ],
                ["pair", "semantic diversity", f">= {p.min_semantic_diversity:g}"],
            ]
        }

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        # With time segments (mine.segment_seconds), one pair unit reads every quality part of a video, so
        # pair waits for quality (a new chain) instead of running fused with it part by part.
        self.unit_aligned = cfg.mine.segment_seconds <= 0  # type: ignore[misc]

    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        """One unit per video: its quality part, or the parts of its time segments (in time order)."""
        if self.unit_aligned:
            return super().plan(ctx)
        from hfl.inputs import video_of_unit

        videos: dict[str, list[str]] = {}
        for p in sorted(ctx.stage_dir(self.inputs[0]).glob("part-*.parquet")):
            videos.setdefault(video_of_unit(p.stem.removeprefix("part-")), []).append(str(p))
        return [WorkUnit(v, {"path": paths[0], "paths": paths}) for v, paths in sorted(videos.items())]

    def resources(self) -> Resources:
        from hfl.stages.models import vlm_resources

        return vlm_resources(self.cfg.backends.expression, "semantic", 256)

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
        self.embedder: Any = None  # loaded on the first video with more than one track
        self.poses: Any = None
        if self.cfg.pair.prefilter_motion:
            from hfl.backends.headpose import PoseChain

            self.poses = PoseChain([self.cfg.caption.pose_estimator, self.cfg.caption.pose_fallback])

    def config_section(self) -> dict[str, Any]:
        e = self.cfg.backends.expression
        backend = asdict(e.vlm) if e.semantic == "vlm" else {"crop_margin": e.crop_margin}
        out = {"pair": asdict(self.cfg.pair), "semantic": e.semantic, "semantic_backend": backend}
        if self.cfg.pair.link_tracks:
            out["embedder"] = self.cfg.backends.face.embedder
        if self.cfg.pair.prefilter_motion:
            c = self.cfg.caption
            out["motion"] = [c.pose_estimator, c.pose_fallback, c.pose_unit_deg, c.max_turn_residual_deg,
                             c.max_roll_change_deg]  # fmt: skip
        return out

    def error_rows(self, unit: WorkUnit, exc: Exception) -> list[dict[str, Any]]:
        row = {"key": f"{unit.id}_pairs", "video_id": unit.id}
        return [reject(row, "error", f"{type(exc).__name__}: {exc}"[:500])]

    # ------------------------------------------------------------------ work
    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        paths = unit.payload.get("paths") or [unit.payload["path"]]
        stitched = self.stitch_segments(ctx, paths) if len(paths) > 1 else {}
        tracks: dict[str, list[dict[str, Any]]] = {}
        for path in paths:
            for rows in kept_batches(path, self.resources().batch_size):
                for r in rows:
                    if r.get("landmarks") is not None:
                        r["track_id"] = stitched.get(r["track_id"], r["track_id"])
                        tracks.setdefault(r["track_id"] or r["video_id"], []).append(r)
        linked = self.link_tracks(tracks) if self.cfg.pair.link_tracks and len(tracks) > 1 else {}
        people: dict[str, list[str]] = {}
        for t in sorted(tracks):
            people.setdefault(linked.get(t, t), []).append(t)
        stamps = [f["timestamp"] for fs in tracks.values() for f in fs if f.get("timestamp") is not None]
        minutes = (max(stamps) - min(stamps)) / 60.0 if stamps else 0.0
        budget = max(self.cfg.pair.max_pairs_per_video, int(self.cfg.pair.pairs_per_minute * minutes))
        for person in sorted(people):
            frames = sorted((f for t in people[person] for f in tracks[t]), key=lambda r: r["frame_index"])
            frames = [frames[i] for i in spread(len(frames), self.cfg.pair.max_frames_per_track)]
            if len(frames) >= 2:
                rows = self.pair_track(frames, budget)
                for r in rows:
                    r["track_id"], r["linked_tracks"] = person, len(people[person])
                yield rows

    def stitch_segments(self, ctx: StageContext, paths: list[str]) -> dict[str, str]:
        """Track id -> the id of the track it continues from an earlier segment (module docstring, step 0).

        Reads mine's parts of the segments (frame index, face box, track id of every sampled frame, faces
        or not), so "within reach" counts sampled frames exactly as mine's tracker did."""
        from pathlib import PurePosixPath

        segments = []
        for p in paths:
            part = ctx.stage_dir("mine") / PurePosixPath(p).name
            rows = read_table(part, columns=["frame_index", "box", "track_id"]).to_pylist()
            segments.append(
                sorted((r for r in rows if r["frame_index"] >= 0), key=lambda r: r["frame_index"])
            )
        return stitch_tracks(segments, self.cfg.mine.track_iou, Tracker(prefix="").max_gap)

    def link_tracks(self, tracks: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
        """track id -> id of the first track of the same person (see the module docstring, step 0)."""
        from hfl.backends.face import load_embedder
        from hfl.stages.identity import face_vector

        p = self.cfg.pair
        if self.embedder is None:
            self.embedder = load_embedder(self.cfg.backends.face)
        ids = sorted(tracks)
        means, spans = [], []
        for t in ids:
            frames = sorted(tracks[t], key=lambda r: r["frame_index"])
            vecs = [
                face_vector(self.embedder, decode_jpeg(f["image"]), f["box"], f["landmarks"])
                for f in (frames[i] for i in spread(len(frames), p.link_frames))
            ]
            means.append(np.mean(vecs, axis=0))
            spans.append({f["frame_index"] for f in frames})
        sets = UnionFind(len(ids))
        dist = [(float(np.linalg.norm(means[a] - means[b])), a, b) for a in range(len(ids)) for b in range(a)]
        for d, a, b in sorted(dist):
            if d >= p.link_distance:
                break
            ra, rb = sets.find(a), sets.find(b)
            members = [k for k in range(len(ids)) if sets.find(k) in (ra, rb)]
            together = [f for k in members for f in spans[k]]
            if ra != rb and len(together) == len(set(together)):  # never two faces of one frame
                sets.union(a, b)
        return {t: ids[sets.find(i)] for i, t in enumerate(ids)}

    def pair_track(self, frames: list[dict[str, Any]], budget: int | None = None) -> list[dict[str, Any]]:
        """All candidate rows of one track, decided; `budget` pairs at most (default max_pairs_per_video)."""
        p = self.cfg.pair
        pts = np.stack([as_points(f["landmarks"]) for f in frames])
        inner, overall = pairwise_diffs(pts)
        score = combine(inner, overall)
        n = len(frames)
        poses = self.frame_poses(frames) if self.poses is not None else None
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
                elif poses is not None and (problem := self.motion_problem(poses[i], poses[j])):
                    reject(row, *problem)
                else:
                    in_band.append((i, j))
        self.select(frames, rows, in_band, score, budget or p.max_pairs_per_video)
        return [rows[k] for k in sorted(rows)]

    def frame_poses(self, frames: list[dict[str, Any]]) -> list[tuple[float, float, float] | None]:
        """(yaw, pitch, roll) of each frame's face by the caption stage's estimator (then its fallback)."""
        out: list[tuple[float, float, float] | None] = []
        for f in frames:
            got = self.poses.pose(decode_jpeg(f["image"]), f["box"], f["landmarks"])
            out.append(None if got is None else got[0])
        return out

    def motion_problem(
        self, a: tuple[float, float, float] | None, b: tuple[float, float, float] | None
    ) -> tuple[str, str] | None:
        """The caption stage's describability rule on the head motion from pose a to pose b."""
        from hfl.instructions import undescribed_motion
        from hfl.landmarks import pose_delta

        if a is None or b is None:
            return None  # caption decides
        c = self.cfg.caption
        return undescribed_motion(
            *pose_delta(a, b), c.pose_unit_deg, c.max_turn_residual_deg, c.max_roll_change_deg
        )

    def select(
        self,
        frames: list[dict[str, Any]],
        rows: dict[tuple[int, int], dict[str, Any]],
        candidates: list[tuple[int, int]],
        score: np.ndarray,
        budget: int,
    ) -> None:
        """Coverage-first selection with semantic checks (see the module docstring, step 3)."""
        p = self.cfg.pair
        near = score < p.min_change_score  # frames that show the same expression and pose
        tgt_cover = np.zeros(len(frames), int)  # kept targets that look like each frame
        src_cover = np.zeros(len(frames), int)
        uses = np.zeros(len(frames), int)
        images: dict[int, np.ndarray] = {}
        cache: dict[int, Any] = {}
        kept = checks = 0
        remaining = set(candidates)
        while remaining:
            open_ = [ij for ij in remaining if max(uses[ij[0]], uses[ij[1]]) < p.max_uses_per_frame]
            if not open_ or kept >= budget or checks >= p.max_semantic_checks:
                break
            i, j = min(open_, key=lambda ij: (tgt_cover[ij[1]], src_cover[ij[0]], -score[ij], ij))
            remaining.discard((i, j))
            row = rows[(i, j)]
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
            tgt_cover += near[j]
            src_cover += near[i]
            kept += 1
        for i, j in remaining:
            if kept >= budget:
                why = f"the video already has {kept} pairs (its budget)"
            elif checks >= p.max_semantic_checks:
                why = f"semantic-check budget ({p.max_semantic_checks}) spent"
            else:
                why = f"a frame is already in {p.max_uses_per_frame} kept pairs"
            reject(rows[(i, j)], "not_selected", why)

    @staticmethod
    def candidate_row(
        a: dict[str, Any], b: dict[str, Any], inner: float, overall: float, score: float
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "key": pair_key(a["video_id"], a["frame_index"], b["frame_index"]),
            "video": a["video"],
            "video_id": a["video_id"],
            "track_id": a["track_id"],
            "linked_tracks": 1,
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
