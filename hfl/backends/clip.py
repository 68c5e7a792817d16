"""CLIP image embedder (paper: CLIP cosine similarity >= 0.9 for cross-frame identity verification).

Real weights only, from a local folder in Hugging Face format (transformers `CLIPModel`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClipBackendConfig:
    path: str = ""  # local folder of a transformers CLIPModel (config.json + weights); empty = not used
    device: str = "cpu"  # torch device


def check_clip_weights(cfg: ClipBackendConfig) -> list[str]:
    """Errors naming what is missing under cfg.path (empty list when usable)."""
    raise NotImplementedError
