"""Stage `quality` (paper App. B.1): one face, centred, >= 7 % landmark area, LoG sharpness, DOVER/BRISQUE."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.backends.quality import check_quality_weights, load_quality_scorer
from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import (
    central_half_width,
    decode_jpeg,
    face_crop,
    hull_area_fraction,
    in_central_box,
    landmark_centroid,
    log_blur,
)
from hfl.schema import QUALITY_SCHEMA
from hfl.stages.rows import judged_safely, reject
from hfl.storage import parquet_file

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig


@dataclass
class QualityConfig:
    """Section `quality` of the pipeline config (YAML `quality:`, `--set quality.<key>=...`)."""

    num_faces: int = 1  # exactly this many faces (paper: a single face)
    center_fraction: float = 0.2  # centroid must lie in the central box of this fraction (paper: 20 %)
    center_rule: str = "area"  # area (box with the frame's aspect covering that share of the area) | axis
    min_face_area: float = 0.07  # landmark convex hull / image area (paper: 7 %)
    min_log_blur: float = 50.0  # LoG variance of the face crop at log_size (paper: 50)
    log_size: int = 64  # canonical face-crop side (px) on which LoG is measured
    log_sigma: float = 1.0  # Gaussian sigma (px, at log_size) of the LoG operator
    min_quality: float = 0.5  # quality score in [0,1] (paper: DOVER 0.5)
    quality_clip_frames: int = 1  # frames (this one and its predecessors in the track) scored together
    score_region: str = "auto"  # face (square crop 1.3x the landmark box) | frame | auto (brisque: face,
    # dover: frame, as the paper scores whole videos)


class QualityStage(Stage):
    name = "quality"
    inputs = ("mine",)
    outputs = ("centroid_x", "centroid_y", "face_area", "log_blur", "quality", "quality_backend")
    schema = QUALITY_SCHEMA
    description = "keep frames with exactly one centred, large, sharp, good-quality face"
    unit_aligned = True
    config_class = QualityConfig
    reasons = {
        "no_face": "the face detector found no face in the frame",
        "multiple_faces": "more than one face was found where exactly one is required",
        "off_center": "the landmark centroid is too far from the frame centre",
        "face_too_small": "the face covers too small a part of the frame (face_area below minimum)",
        "blurry": "the face crop is too blurry (LoG variance log_blur below minimum)",
        "low_quality": "perceptual quality score below the configured minimum",
    }
    measures = {
        "off_center": ("centroid", None),  # centroid_x, centroid_y
        "face_too_small": ("face_area", "min_face_area"),
        "blurry": ("log_blur", "min_log_blur"),
        "low_quality": ("quality", "min_quality"),
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        errors: list[str] = []
        q = cfg.quality
        if not 0 < q.center_fraction <= 1:
            errors.append("quality.center_fraction: must be in (0, 1]")
        if q.center_rule not in ("area", "axis"):
            errors.append("quality.center_rule: one of area, axis")
        if not 0 <= q.min_face_area <= 1:
            errors.append("quality.min_face_area: must be in [0, 1]")
        if q.log_size < 16:
            errors.append("quality.log_size: must be >= 16")
        if q.score_region not in ("auto", "face", "frame"):
            errors.append("quality.score_region: one of auto, face, frame")
        if q.quality_clip_frames < 1:
            errors.append("quality.quality_clip_frames: must be >= 1")
        return errors + check_quality_weights(cfg.backends.quality)

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        q = cfg.quality
        return {
            "thresholds": [
                [
                    "quality",
                    "one face, centroid in central box",
                    f"{q.center_fraction:g} of the " + ("area" if q.center_rule == "area" else "W and H"),
                ],
                ["quality", "landmark hull area", f">= {q.min_face_area:g}"],
                ["quality", "LoG sharpness", f">= {q.min_log_blur:g}"],
                ["quality", f"{cfg.backends.quality.scorer} quality", f">= {q.min_quality:g}"],
            ]
        }

    def resources(self) -> Resources:
        return Resources(num_cpus=1, batch_size=32)

    def config_section(self) -> dict[str, Any]:
        return {"quality": asdict(self.cfg.quality), "scorer": asdict(self.cfg.backends.quality)}

    def thresholds(self) -> dict[str, Any]:
        q = self.cfg.quality
        return {
            "num_faces": q.num_faces,
            "center_fraction": q.center_fraction,
            "center_rule": q.center_rule,
            "face_area": q.min_face_area,
            "log_blur": q.min_log_blur,
            "quality": q.min_quality,
            "score_region": self.score_region(),
        }

    def score_region(self) -> str:
        """What the quality scorer sees: the face crop or the whole frame (see QualityConfig.score_region)."""
        q = self.cfg.quality
        if q.score_region != "auto":
            return q.score_region
        return "frame" if self.cfg.backends.quality.scorer == "dover" else "face"

    def setup(self) -> None:
        self.scorer = load_quality_scorer(self.cfg.backends.quality)

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        history: dict[str, deque[np.ndarray]] = {}
        pf = parquet_file(unit.payload["path"])
        for batch in pf.iter_batches(batch_size=self.resources().batch_size):
            rows = [r for r in batch.to_pylist() if r.get("reject_reason") is None]
            yield [self.judge_safely(r, history) for r in rows]

    def judge_safely(self, row: dict[str, Any], history: dict[str, deque[np.ndarray]]) -> dict[str, Any]:
        return judged_safely(lambda r: self.judge(r, history), row)

    def judge(self, row: dict[str, Any], history: dict[str, deque[np.ndarray]]) -> dict[str, Any]:
        """Measure and decide one frame row; the first failed check names the reason."""
        q = self.cfg.quality
        w, h = row["width"], row["height"]
        lms = np.asarray(row["landmarks"], np.float32).reshape(68, 2)
        rgb = decode_jpeg(row["image"])
        cx, cy = landmark_centroid(lms, w, h)
        area = hull_area_fraction(lms, w, h)
        sharp = log_blur(rgb, lms, q.log_size, q.log_sigma)
        row.update(centroid_x=cx, centroid_y=cy, face_area=area, log_blur=sharp)
        if row["num_faces"] != q.num_faces:
            return reject(
                row,
                "no_face" if row["num_faces"] == 0 else "multiple_faces",
                f"num_faces={row['num_faces']} (need {q.num_faces})",
            )
        if not in_central_box(cx, cy, q.center_fraction, q.center_rule):
            half = central_half_width(q.center_fraction, q.center_rule)
            return reject(
                row,
                "off_center",
                f"centroid=({cx:.3f},{cy:.3f}) outside central {q.center_fraction:g} by {q.center_rule} "
                f"(|c-0.5| <= {half:.3f})",
            )
        if area < q.min_face_area:
            return reject(row, "face_too_small", f"face_area={area:.4f} < {q.min_face_area:g}")
        if sharp < q.min_log_blur:
            return reject(row, "blurry", f"log_blur={sharp:.1f} < {q.min_log_blur:g}")
        clip = history.setdefault(row["track_id"] or "", deque(maxlen=q.quality_clip_frames))
        clip.append(face_crop(rgb, lms) if self.score_region() == "face" else rgb)
        score = float(self.scorer.score(list(clip)))
        row.update(quality=score, quality_backend=self.scorer.name)
        if score < q.min_quality:
            return reject(row, "low_quality", f"{self.scorer.name}={score:.3f} < {q.min_quality:g}")
        return row
