"""Stage `quality` (paper App. B.1): one face, centred, >= 7 % landmark area, LoG sharpness, DOVER/BRISQUE."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from hfl.backends.quality import load_quality_scorer
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


class QualityStage(Stage):
    name = "quality"
    inputs = ("mine",)
    outputs = ("centroid_x", "centroid_y", "face_area", "log_blur", "quality", "quality_backend")
    schema = QUALITY_SCHEMA
    description = "keep frames with exactly one centred, large, sharp, good-quality face"
    unit_aligned = True

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
