"""VLM backends for the predictor and the judge: Qwen2.5-VL through ``hfl.backends.vlm.QwenVL`` (its
weight checks, transformers or vLLM engine), and other image-text chat checkpoints such as Qwen3-VL (the
model family the LaTo release's predictor uses) through a generic engine:

- ``transformers``: ``AutoModelForImageTextToText`` + ``AutoProcessor`` from the local folder (the
  processor falls back to the image-only Qwen processor of ``hfl.backends.vlm`` when ``AutoProcessor``
  needs torchvision for its video part), the folder's chat template, greedy decoding;
- ``vllm``: ``hfl.backends.vlm.VllmEngine`` without the Qwen2.5-VL model-type check (Qwen3-VL uses the
  same chat and image-pad tokens).

Each returns an object with ``generate(list[VlmRequest]) -> list[str]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hfl.backends.base import BackendUnavailable
from hfl.backends.vlm import QWEN_MODEL_TYPE, VlmBackendConfig, VlmRequest, chat_messages, load_vlm, rgb_u8


def model_type(path: str) -> str | None:
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


class GenericTransformersEngine:
    """Any local image-text-to-text chat checkpoint on one torch device (batch of 1 per call)."""

    def __init__(self, cfg: VlmBackendConfig) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.cfg = cfg
        try:
            self.processor = AutoProcessor.from_pretrained(cfg.path)
        except (ImportError, OSError, ValueError, TypeError):
            from hfl.backends.vlm import build_qwen_processor

            self.processor = build_qwen_processor(cfg.path, cfg.max_pixels)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            cfg.dtype
        )
        if dtype is None:
            dtype = torch.bfloat16 if cfg.device.startswith("cuda") else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(cfg.path, dtype=dtype)
        self.model = model.to(cfg.device).eval()

    def generate(self, requests: list[VlmRequest]) -> list[str]:
        import torch

        out = []
        for r in requests:
            text = self.processor.apply_chat_template(
                chat_messages(r.parts), tokenize=False, add_generation_prompt=True
            )
            inputs = self.processor(
                text=[text], images=[rgb_u8(im) for im in r.images] or None, return_tensors="pt"
            ).to(self.model.device)
            with torch.inference_mode():
                ids = self.model.generate(
                    **inputs, max_new_tokens=int(self.cfg.max_new_tokens), do_sample=False
                )
            out.append(
                self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[
                    0
                ]
            )
        return out


def load_backend(cfg: VlmBackendConfig) -> Any:
    """``QwenVL`` for Qwen2.5-VL folders, the generic engines for other model types."""
    mt = model_type(cfg.path)
    if mt is None:
        raise BackendUnavailable(f"vlm: no readable config.json in {cfg.path!r}")
    if mt == QWEN_MODEL_TYPE:
        return load_vlm(cfg)
    if cfg.engine == "vllm":
        from hfl.backends.vlm import VllmEngine

        return VllmEngine(cfg)
    return GenericTransformersEngine(cfg)
