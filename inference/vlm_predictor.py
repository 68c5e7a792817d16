"""VLM landmark predictor (paper Sec. 3.3): Qwen2.5-VL / Qwen3-VL with the App. D.2 chain of thought.

``hfl.backends.vlm.QwenVL`` runs the model (transformers or vLLM engine, local folder). For each request
the user turn is the source image (resized to the 512 canvas) and ``cot.build_prompt``; the answer is
parsed with ``landmark_json.parse_landmarks`` (last JSON answer), checked with ``sanity.check`` against
the rigid reference, smoothed (``sanity.smooth``) and, when parsing or a check fails, replaced by the
fallback predictor (the geometric one by default). ``last_report`` says which case each face took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hfl.backends.vlm import IMAGE, VlmBackendConfig, VlmRequest
from hfl.predictor.cot import build_prompt
from hfl.predictor.edit_spec import EditSpec, parse_instruction
from hfl.predictor.geometric import GeometricPredictor
from hfl.predictor.landmark_json import parse_landmarks
from inference.sanity import SanityConfig, check, smooth
from inference.vlm_backend import load_backend


@dataclass
class PredictionReport:
    """How one prediction was obtained: "vlm", "fallback:parse" or "fallback:sanity" (+ reasons)."""

    source: str
    reasons: list[str] = field(default_factory=list)
    raw: str = ""


class VlmPredictor:
    """Landmark predictor on a local Qwen-VL checkpoint, with parsing, sanity checks and a fallback.

    Args:
        cfg: VLM backend config (``path`` = local HF folder, ``engine`` = transformers | vllm).
        fallback: predictor used when the answer is unusable (default: ``GeometricPredictor``).
        sanity: check thresholds; smooth: apply ``sanity.smooth`` to accepted answers.
        backend: an already loaded ``QwenVL`` (tests, sharing one model).
    """

    name = "vlm"

    def __init__(
        self,
        cfg: VlmBackendConfig | None = None,
        fallback: Any = None,
        sanity: SanityConfig | None = None,
        smooth: bool = True,
        backend: Any = None,
    ) -> None:
        if backend is None:
            if cfg is None:
                raise ValueError("VlmPredictor needs a VlmBackendConfig with a local model path")
            cfg.max_new_tokens = max(cfg.max_new_tokens, 2048)
            backend = load_backend(cfg)
        self.backend = backend
        self.fallback = fallback or GeometricPredictor()
        self.sanity = sanity or SanityConfig()
        self.smooth = smooth
        self.last_report: list[PredictionReport] = []

    def answers(
        self, images: list[np.ndarray], landmarks: list[np.ndarray], instructions: list[str]
    ) -> list[str]:
        """Raw model answers, one per request."""
        reqs = [
            VlmRequest([IMAGE, build_prompt(lm, ins)], [img])
            for img, lm, ins in zip(images, landmarks, instructions, strict=True)
        ]
        return self.backend.generate(reqs)

    def postprocess(
        self, answer: str, src: np.ndarray, instruction: str
    ) -> tuple[np.ndarray, PredictionReport]:
        """Parse + check + smooth one answer; the fallback's prediction when unusable."""
        spec = parse_instruction(instruction)
        reference = GeometricPredictor().predict_spec(
            src, EditSpec(yaw_deg=spec.yaw_deg, pitch_deg=spec.pitch_deg)
        )
        pts = parse_landmarks(answer)
        if pts is None:
            return self.fallback.predict(None, src, instruction), PredictionReport(
                "fallback:parse", [], answer
            )
        fails = check(pts, reference, self.sanity)
        if fails:
            return self.fallback.predict(None, src, instruction), PredictionReport(
                "fallback:sanity", fails, answer
            )
        return (smooth(pts, reference) if self.smooth else pts), PredictionReport("vlm", [], answer)

    def predict_batch(
        self, images: list[np.ndarray], landmarks: list[np.ndarray], instructions: list[str]
    ) -> list[np.ndarray]:
        """Target landmarks (512 canvas) per (canvas image, source landmarks, instruction)."""
        out, self.last_report = [], []
        for ans, lm, ins in zip(
            self.answers(images, landmarks, instructions), landmarks, instructions, strict=True
        ):
            pts, rep = self.postprocess(ans, np.asarray(lm, np.float64), ins)
            out.append(pts)
            self.last_report.append(rep)
        return out

    def predict(
        self, image: np.ndarray, landmarks: np.ndarray, instruction: str, width: int = 512, height: int = 512
    ) -> np.ndarray:
        return self.predict_batch([image], [landmarks], [instruction])[0]


def load_predictor(
    kind: str = "geometric",
    vlm_path: str = "",
    engine: str = "transformers",
    device: str = "cpu",
    dtype: str = "auto",
) -> Any:
    """``"geometric"`` (default, offline) or ``"vlm"`` (needs ``vlm_path``)."""
    if kind == "geometric":
        return GeometricPredictor()
    if kind == "vlm":
        return VlmPredictor(VlmBackendConfig(path=vlm_path, engine=engine, device=device, dtype=dtype))
    raise ValueError(f"unknown predictor {kind!r} (geometric | vlm)")
