"""Adapters from the expression backends (fer, Qwen2.5-VL) to what the pair and caption stages call."""

from __future__ import annotations

from typing import Any

import numpy as np

from hfl.backends.expression import Caption, ExpressionBackendConfig, FerExpression, js_distance, load_fer
from hfl.engine.stage import Resources

Face = tuple[np.ndarray, list[float], int]  # (RGB image, face box, frame index within the track)


class FerSemantic:
    """Semantic difference = JS distance of the two faces' FER2013 distributions (cached per frame)."""

    name = "fer"

    def __init__(self, model: FerExpression) -> None:
        self.model = model

    def difference(self, a: Face, b: Face, cache: dict[int, Any]) -> float:
        probs = []
        for image, box, idx in (a, b):
            if idx not in cache:
                cache[idx] = self.model.probabilities(image, box)
            probs.append(cache[idx])
        return js_distance(probs[0], probs[1])


class VlmSemantic:
    """Semantic difference asked of Qwen2.5-VL for the two full frames (prompt: hfl/prompts)."""

    name = "qwen2.5-vl"

    def __init__(self, vlm: Any) -> None:
        self.vlm = vlm

    def difference(self, a: Face, b: Face, cache: dict[int, Any]) -> float | None:
        return self.vlm.difference([(a[0], b[0])])[0]


class FerCaptioner:
    name = "fer"

    def __init__(self, model: FerExpression) -> None:
        self.model = model

    def caption(self, image: np.ndarray, box: list[float]) -> Caption | None:
        return self.model.caption(image, box)

    def caption_many(self, images: list[np.ndarray], boxes: list[list[float]]) -> list[Caption | None]:
        """One call for many faces (FER2013 runs face by face: the same answers as caption())."""
        return [self.model.caption(image, box) for image, box in zip(images, boxes, strict=True)]


class VlmCaptioner:
    name = "qwen2.5-vl"

    def __init__(self, vlm: Any) -> None:
        self.vlm = vlm

    def caption(self, image: np.ndarray, box: list[float]) -> Caption | None:
        return self.caption_many([image], [box])[0]

    def caption_many(self, images: list[np.ndarray], boxes: list[list[float]]) -> list[Caption | None]:
        """All faces in one engine call (QwenVL.caption: one vLLM generate, or generate calls of
        vlm.batch_size requests with transformers); the whole frame is asked, the boxes are not used."""
        return [
            None
            if out is None
            else Caption(out.expression, out.intensity, confidence=None, pronoun=out.pronoun)
            for out in self.vlm.caption(list(images))
        ]


def vlm_resources(cfg: ExpressionBackendConfig, role: str, batch_size: int) -> Resources:
    """One GPU per worker when the stage's backend is a VLM on a GPU; else one CPU."""
    vlm = cfg.vlm
    if getattr(cfg, role) == "vlm" and (vlm.engine == "vllm" or vlm.device.startswith("cuda")):
        return Resources(num_cpus=1, num_gpus=float(vlm.tensor_parallel_size), batch_size=batch_size)
    return Resources(num_cpus=1, batch_size=batch_size)


def _vlm(cfg: ExpressionBackendConfig) -> Any:
    from hfl.backends.vlm import load_vlm

    return load_vlm(cfg.vlm)


def load_semantic(cfg: ExpressionBackendConfig) -> FerSemantic | VlmSemantic:
    if cfg.semantic == "vlm":
        return VlmSemantic(_vlm(cfg))
    model = load_fer(cfg)
    model.load()
    return FerSemantic(model)


def load_captioner(cfg: ExpressionBackendConfig) -> FerCaptioner | VlmCaptioner:
    if cfg.captioner == "vlm":
        return VlmCaptioner(_vlm(cfg))
    model = load_fer(cfg)
    model.load()
    return FerCaptioner(model)
