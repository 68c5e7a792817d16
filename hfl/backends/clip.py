"""CLIP image embedder (paper: CLIP cosine similarity >= 0.9 for cross-frame identity verification).

Real weights only, from a local folder in Hugging Face format (transformers `CLIPModel`): ``config.json``,
``model.safetensors`` or ``pytorch_model.bin`` (or a sharded index of either), ``preprocessor_config.json``.
Preprocessing uses the PIL implementation of the CLIP image processor (``CLIPImageProcessorPil`` in
transformers 5, ``CLIPImageProcessor`` before), which matches OpenAI's PIL-bicubic preprocessing and needs no
torchvision."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled

CLIP_CONFIG = "config.json"
CLIP_PREPROCESSOR = "preprocessor_config.json"
# single-file or sharded weights; any one of them makes the folder usable
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class ClipBackendConfig:
    path: str = ""  # local folder of a transformers CLIPModel (config.json + weights); empty = not used
    device: str = "cpu"  # torch device
    batch_size: int = 32  # images per forward pass


# ---------------------------------------------------------------------------- weight checks (shared with vlm)


def missing_weight_files(path: str) -> list[str]:
    """Problems with the Hugging Face weights in `path`: none of the weight files, or shards named by an
    index that are not there. Empty when the weights look complete."""
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return []
    for index in WEIGHT_INDEXES:
        index_path = os.path.join(path, index)
        if os.path.isfile(index_path):
            return _missing_shards(path, index_path)
    wanted = " or ".join(WEIGHT_FILES + WEIGHT_INDEXES)
    return [f"missing weights in {path}: expected {wanted}"]


def _missing_shards(path: str, index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return [f"unreadable weight index {index_path}: {e}"]
    missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
    return [f"missing weight shard {s} in {path} (named by {os.path.basename(index_path)})" for s in missing]


def model_type_error(path: str, expected: str, what: str) -> str | None:
    """A message when ``config.json`` in `path` is unreadable or declares another ``model_type``."""
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        return f"unreadable {config_path}: {e}"
    if model_type != expected:
        return f"{config_path} declares model_type {model_type!r}, expected {expected!r} ({what})"
    return None


def check_clip_weights(cfg: ClipBackendConfig) -> list[str]:
    """Errors naming what is missing under cfg.path (empty list when usable)."""
    path = cfg.path
    if not path:
        return ["path is empty (set it to a local folder of a transformers CLIPModel)"]
    if not os.path.isdir(path):
        return [f"folder {path} not found (needs {CLIP_CONFIG}, weights, {CLIP_PREPROCESSOR})"]
    errors = [
        f"missing {name} in {path}" for name in (CLIP_CONFIG, CLIP_PREPROCESSOR) if not _is_file(path, name)
    ]
    errors += missing_weight_files(path)
    if _is_file(path, CLIP_CONFIG) and (err := model_type_error(path, "clip", "a transformers CLIPModel")):
        errors.append(err)
    return errors


def _is_file(folder: str, name: str) -> bool:
    return os.path.isfile(os.path.join(folder, name))


# ----------------------------------------------------------------------------- embedder


def rgb_u8(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 image (H, W, 3); returns it contiguous."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got {getattr(image, 'shape', type(image))}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    return np.ascontiguousarray(image)


def pil_image_processor_class(name: str) -> Any:
    """The PIL-backed image processor class `name` + "Pil" (transformers 5), else `name` (transformers 4,
    where the default processors are the PIL/numpy ones)."""
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


@dataclass
class _LoadedClip:
    model: Any  # transformers CLIPModel, eval mode, on the configured device
    processor: Any  # CLIP image processor (PIL backend)
    dim: int  # embedding size (projection_dim)


class ClipImageEmbedder(DropsModelWhenPickled):
    """L2-normalised CLIP image embeddings (``CLIPModel.get_image_features``); loads on first use, once per
    instance, and drops the model when pickled into Ray workers."""

    name = "clip"

    def __init__(self, cfg: ClipBackendConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._model: _LoadedClip | None = None

    def load(self) -> None:
        """Load the model now (workers call this in setup so the first unit does not pay for it)."""
        self._get()

    @property
    def dim(self) -> int:
        """Embedding size (loads the model)."""
        return self._get().dim

    def _get(self) -> _LoadedClip:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> _LoadedClip:
        errors = check_clip_weights(self.cfg)
        if errors:
            raise BackendUnavailable("clip: " + "; ".join(errors))
        try:
            import torch  # noqa: F401
            from transformers import CLIPModel
        except ImportError as e:
            raise BackendUnavailable("clip backend needs packages 'torch' and 'transformers'") from e
        processor = pil_image_processor_class("CLIPImageProcessor").from_pretrained(self.cfg.path)
        model = CLIPModel.from_pretrained(self.cfg.path).to(self.cfg.device).eval()
        return _LoadedClip(model=model, processor=processor, dim=int(model.config.projection_dim))

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """(n, d) float32 L2-normalised image embeddings, in the order of `images`."""
        loaded = self._get()
        batch = max(1, int(self.cfg.batch_size))
        chunks = [self._embed_batch(loaded, images[i : i + batch]) for i in range(0, len(images), batch)]
        if not chunks:
            return np.zeros((0, loaded.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def _embed_batch(self, loaded: _LoadedClip, images: list[np.ndarray]) -> np.ndarray:
        import torch

        pixels = loaded.processor(images=[rgb_u8(im) for im in images], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = loaded.model.get_image_features(pixel_values=pixels.to(self.cfg.device))
        # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        feats = feats.float().cpu().numpy()
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return (feats / np.maximum(norms, 1e-12)).astype(np.float32)


def load_clip(cfg: ClipBackendConfig) -> ClipImageEmbedder:
    """A CLIP embedder for cfg.path (model loads lazily); BackendUnavailable naming what is missing."""
    errors = check_clip_weights(cfg)
    if errors:
        raise BackendUnavailable("clip: " + "; ".join(errors))
    return ClipImageEmbedder(cfg)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine of vectors of different sizes {a.shape} and {b.shape}")
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0
