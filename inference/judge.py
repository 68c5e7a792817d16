"""VLM judge (paper Sec. 4.1): SC / VQ / NA scores with the App. D.3 rubric, and the expected edit amplitude
``phi_ins`` of Algorithm 1, on a local Qwen-VL checkpoint (``hfl.backends.vlm.QwenVL``: transformers or vLLM).

Scores are integers 1-5 in the answer's last JSON object, normalised to [0, 1] as ``(s - 1) / 4``
(the paper reports SC/VQ/NA on a normalised [0, 1] scale; it used Qwen2.5-VL-72B).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from hfl.backends.vlm import IMAGE, VlmBackendConfig, VlmRequest, load_prompt
from inference.vlm_backend import load_backend

CRITERIA = ("sc", "vq", "na")
_ALIASES = {
    "sc": ("sc", "semantic_consistency", "semantic consistency"),
    "vq": ("vq", "visual_quality", "visual quality"),
    "na": ("na", "natural_appearance", "natural appearance", "naturalness"),
}


def _last_object(text: str) -> dict[str, Any] | None:
    for cand in reversed(re.findall(r"\{[^{}]*\}", re.sub(r"```\w*", " ", text or ""))):
        for attempt in (cand, re.sub(r",\s*}", "}", cand.replace("'", '"'))):
            try:
                obj = json.loads(attempt)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return {str(k).strip().lower(): v for k, v in obj.items()}
    return None


def parse_scores(text: str) -> dict[str, float] | None:
    """``{"sc", "vq", "na"}`` in [0, 1] from an answer; None when one is missing or out of range."""
    obj = _last_object(text) or {}
    out: dict[str, float] = {}
    low = (text or "").lower()
    for key, names in _ALIASES.items():
        val = next((obj[n] for n in names if n in obj), None)
        if val is None:  # "Semantic Consistency: 4" in prose
            m = re.search(rf"(?:{'|'.join(re.escape(n) for n in names)})\W{{0,4}}(\d(?:\.\d+)?)", low)
            val = m.group(1) if m else None
        try:
            v = float(val)
        except (TypeError, ValueError):
            return None
        if not 1 <= v <= 5:
            return None
        out[key] = (v - 1) / 4
    return out


def parse_amplitude(text: str) -> float | None:
    """``amplitude`` in [0, 1] from the answer's last JSON object (None if absent or out of range)."""
    obj = _last_object(text) or {}
    val = obj.get("amplitude", obj.get("phi_ins"))
    try:
        v = float(val)
    except (TypeError, ValueError):
        return None
    return v if 0 <= v <= 1 else None


class VlmJudge:
    """SC/VQ/NA judge and amplitude predictor on a local Qwen-VL folder."""

    def __init__(self, cfg: VlmBackendConfig | None = None, backend: Any = None) -> None:
        if backend is None:
            if cfg is None:
                raise ValueError("VlmJudge needs a VlmBackendConfig with a local model path")
            cfg.max_new_tokens = max(cfg.max_new_tokens, 512)
            backend = load_backend(cfg)
        self.backend = backend
        self.judge_prompt = load_prompt("judge")
        self.amplitude_prompt = load_prompt("judge_amplitude")

    def scores(
        self, sources: list[np.ndarray], edits: list[np.ndarray], instructions: list[str]
    ) -> list[dict[str, float] | None]:
        reqs = [
            VlmRequest(
                ["Image 1:", IMAGE, "Image 2:", IMAGE, self.judge_prompt.replace("{instruction}", ins)],
                [s, e],
            )
            for s, e, ins in zip(sources, edits, instructions, strict=True)
        ]
        return [parse_scores(a) for a in self.backend.generate(reqs)]

    def amplitude(self, sources: list[np.ndarray], instructions: list[str]) -> list[float | None]:
        reqs = [
            VlmRequest([IMAGE, self.amplitude_prompt.replace("{instruction}", ins)], [s])
            for s, ins in zip(sources, instructions, strict=True)
        ]
        return [parse_amplitude(a) for a in self.backend.generate(reqs)]
