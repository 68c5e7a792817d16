"""Pair samples (DESIGN.md "A pair sample") -> LaTo training items, with an optional latent cache.

An item holds the source and target images resized to the training size (H, W) in [-1, 1], the instruction,
the target landmarks in resized-image pixels (for the location-mapped RoPE ids) and the same landmarks on
the tokenizer's 512 canvas, normalised (the whole image resized to 512 x 512, as in the release).
With a cache folder, ``{key}.safetensors`` files holding VAE latents and text embeddings replace the images
and the instruction (``precompute_cache`` writes them).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hfl.lato import canvas


def decode_image(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("undecodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def pair_decoder(height: int, width: int, cache_dir: str | Path | None = None):
    """Decoder for :class:`training.data.ShardStream`: a pair sample -> item dict (None if malformed)."""
    cache = Path(cache_dir) if cache_dir else None

    def decode(sample: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
        if "src.jpg" not in sample or "tgt.jpg" not in sample or "json" not in sample:
            return None
        meta = json.loads(sample["json"])
        tgt = np.asarray(meta["tgt"]["landmarks"], np.float32)
        if tgt.shape != (canvas.NUM_POINTS, 2):
            return None
        item: dict[str, Any] = {"key": sample["__key__"]}
        cached = cache / f"{sample['__key__']}.safetensors" if cache else None
        if cached is not None and cached.exists():
            from safetensors.torch import load_file

            item.update(load_file(str(cached)))
            oh, ow = (int(v) for v in item["orig_hw"].tolist())
        else:
            src, tgt_img = decode_image(sample["src.jpg"]), decode_image(sample["tgt.jpg"])
            oh, ow = tgt_img.shape[:2]
            item["src"] = _to_tensor(cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA))
            item["tgt"] = _to_tensor(cv2.resize(tgt_img, (width, height), interpolation=cv2.INTER_AREA))
            item["txt"] = (
                sample.get("txt", b"").decode("utf-8") if isinstance(sample.get("txt"), bytes) else ""
            )
            item["orig_hw"] = torch.tensor([oh, ow])
        item["landmark_xy"] = torch.from_numpy(tgt * np.array([width / ow, height / oh], np.float32))
        item["landmark_norm"] = torch.from_numpy(canvas.normalise(canvas.image_to_canvas(tgt, ow, oh)))
        return item

    return decode


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": [it["key"] for it in items]}
    for k in items[0]:
        if k == "key":
            continue
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
