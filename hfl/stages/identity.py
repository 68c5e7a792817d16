"""Stage `identity` (paper Sec. 3.1, App. B.1): cross-frame identity verification of kept pairs.

Two checks, both recorded where both run; `identity.decider` picks which decides:
* face: distance of the configured face embedder's vectors (offline default dlib: Euclidean distance of
  the raw 128-d descriptors; same person below 0.6, dlib's standard threshold);
* clip: cosine similarity of CLIP image embeddings of the two frames (paper: >= 0.9), when
  `backends.clip.path` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.backends.base import FaceBox
from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg
from hfl.landmarks import as_points
from hfl.schema import IDENTITY_SCHEMA
from hfl.stages.rows import judged_safely, kept_batches, reject

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig


@dataclass
class IdentityConfig:
    """Section `identity` of the pipeline config (YAML `identity:`, `--set identity.<key>=...`)."""

    decider: str = "face"  # face (embedding distance) | clip (paper: CLIP cosine) | both (both must pass)
    max_face_distance: float = 0.6  # face-embedding distance (dlib: Euclidean, 0.6 is its standard)
    min_clip_identity: float = 0.9  # CLIP image-embedding cosine similarity (paper: >= 0.9)


def face_box(box: list[float]) -> FaceBox:
    return FaceBox(float(box[0]), float(box[1]), float(box[2]), float(box[3]), 1.0)


def face_vector(embedder: Any, image: np.ndarray, box: list[float], landmarks: list[float]) -> np.ndarray:
    """dlib: the raw descriptor (its 0.6 threshold is defined on it); others: the normalised embedding."""
    fb, pts = face_box(box), as_points(landmarks).astype(np.float32)
    if hasattr(embedder, "descriptor"):
        return np.asarray(embedder.descriptor(image, fb, pts), np.float32)
    return np.asarray(embedder.embed(image, fb, pts), np.float32)


class IdentityStage(Stage):
    name = "identity"
    inputs = ("pair",)
    outputs = ("face_distance", "clip_identity", "src_embedding")
    schema = IDENTITY_SCHEMA
    description = "same person in both frames: face-embedding distance and/or CLIP similarity"
    unit_aligned = True
    config_class = IdentityConfig
    reasons = {
        "different_identity": "the two faces are not the same person (face-embedding distance / CLIP)",
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        from hfl.backends.clip import check_clip_weights
        from hfl.backends.face import check_face_weights

        errors: list[str] = []
        if cfg.identity.decider not in ("face", "clip", "both"):
            errors.append("identity.decider: one of face, clip, both")
        if cfg.identity.decider in ("clip", "both") and not cfg.backends.clip.path:
            errors.append("backends.clip.path: required when identity.decider uses clip")
        if cfg.backends.clip.path:
            errors += [f"backends.clip: {e}" for e in check_clip_weights(cfg.backends.clip)]
        if "mine" not in stages:
            errors += check_face_weights(cfg.backends.face)
        return errors

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        i = cfg.identity
        return {
            "thresholds": [
                ["identity", "face-embedding distance", f"<= {i.max_face_distance:g}"],
                ["identity", "CLIP cosine similarity", f">= {i.min_clip_identity:g}"],
            ],
            "backends": [["identity decider", i.decider]],
        }

    def resources(self) -> Resources:
        return Resources(num_cpus=1, batch_size=16)

    def config_section(self) -> dict[str, Any]:
        return {
            "identity": asdict(self.cfg.identity),
            "embedder": self.cfg.backends.face.embedder,
            "clip": asdict(self.cfg.backends.clip),
        }

    def thresholds(self) -> dict[str, Any]:
        i = self.cfg.identity
        return {"face_distance": i.max_face_distance, "clip_identity": i.min_clip_identity}

    def setup(self) -> None:
        from hfl.backends.face import load_embedder

        self.embedder = load_embedder(self.cfg.backends.face)
        self.clip = None
        if self.cfg.backends.clip.path:
            from hfl.backends.clip import load_clip

            self.clip = load_clip(self.cfg.backends.clip)

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        for rows in kept_batches(unit.payload["path"], self.resources().batch_size):
            yield [judged_safely(self.judge, r) for r in rows]

    def face_vector(self, image: np.ndarray, box: list[float], landmarks: list[float]) -> np.ndarray:
        return face_vector(self.embedder, image, box, landmarks)

    def judge(self, row: dict[str, Any]) -> dict[str, Any]:
        ic = self.cfg.identity
        src, tgt = decode_jpeg(row["src_image"]), decode_jpeg(row["tgt_image"])
        va = self.face_vector(src, row["src_box"], row["src_landmarks"])
        vb = self.face_vector(tgt, row["tgt_box"], row["tgt_landmarks"])
        dist = float(np.linalg.norm(va - vb))
        row.update(
            face_distance=dist,
            face_backend=self.embedder.name,
            src_embedding=va.tolist(),
            identity_decider=ic.decider,
        )
        if self.clip is not None:
            from hfl.backends.clip import cosine

            ea, eb = self.clip.embed([src, tgt])
            row["clip_identity"] = cosine(ea, eb)
        face_ok = dist <= ic.max_face_distance
        clip_ok = row.get("clip_identity") is None or row["clip_identity"] >= ic.min_clip_identity
        if ic.decider in ("face", "both") and not face_ok:
            return reject(
                row,
                "different_identity",
                f"{self.embedder.name} distance={dist:.3f} > {ic.max_face_distance:g}",
            )
        if ic.decider in ("clip", "both") and not clip_ok:
            return reject(
                row,
                "different_identity",
                f"clip similarity={row['clip_identity']:.3f} < {ic.min_clip_identity:g}",
            )
        return row
