"""Evaluation metrics (paper Sec. 4.1 Metrics, Table 3, App. C.7 Algorithm 1).

Rectified identity preservation (Algorithm 1, Eq. 7)::

    p     = ((phi_ins - phi_real) / (phi_ins + eps)) ** alpha          alpha = 2, eps = 1e-5
    s_rip = max(0, s_arc - p)

- ``s_arc`` in [0, 1]: identity similarity of source and edit. insightface ArcFace: cosine similarity of the
  L2-normalised embeddings, clipped at 0 (the paper's). dlib (offline default): ``1 - d / 1.2`` clipped to
  [0, 1] with d the Euclidean distance of the raw 128-d descriptors, so dlib's same-person threshold
  d = 0.6 maps to 0.5 (an approximation of an ArcFace-like scale, not ArcFace).
- ``phi_real`` in [0, 1]: ``1 - SSIM`` of the grey source and edit, both resized to 256 x 256.
- ``phi_ins`` in [0, 1]: expected amplitude. From a VLM (``judge.amplitude``, prompt
  ``hfl/prompts/judge_amplitude.txt``), or from the landmark predictor's displacement:
  ``clip(a + b * m, 0, 1)`` with m = mean point displacement between source and predicted target landmarks
  over the inter-ocular distance; ``a, b`` = ``AMPLITUDE_FIT`` (least squares of 1 - SSIM on m over HFL
  pairs; see ``fit_amplitude``).

Landmark Error (Table 3): mean over the 68 points of the L1 distance ``|dx| + |dy|`` between the given
target landmarks and the landmarks detected on the edit, both on the 512 canvas (pixels).
"""

from __future__ import annotations

import numpy as np

ALPHA = 2.0
EPS = 1e-5
DLIB_SCALE = 1.2
# phi_ins = a + b * m, fitted on the 15 pairs of the demo build (carphone, 176 x 144 frames; r = 0.63).
# The intercept mostly reflects frame-to-frame noise of that low-resolution video: refit on real pairs.
AMPLITUDE_FIT = (0.273, 0.214)


def rectified_ip(
    s_arc: float, phi_ins: float, phi_real: float, alpha: float = ALPHA, eps: float = EPS
) -> float:
    """Algorithm 1: ``max(0, s_arc - ((phi_ins - phi_real) / (phi_ins + eps)) ** alpha)``."""
    p = ((phi_ins - phi_real) / (phi_ins + eps)) ** alpha
    return float(max(0.0, s_arc - p))


def ssim_change(source: np.ndarray, edit: np.ndarray, size: int = 256) -> float:
    """``phi_real = 1 - SSIM`` of two RGB images (grey, resized to size x size), clipped to [0, 1]."""
    import cv2
    from skimage.metrics import structural_similarity

    def grey(im: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY) if im.ndim == 3 else im
        return cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)

    s = structural_similarity(grey(source), grey(edit), data_range=255)
    return float(np.clip(1.0 - s, 0.0, 1.0))


def arcface_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings, clipped to [0, 1]."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.clip(cos, 0.0, 1.0))


def dlib_similarity(a: np.ndarray, b: np.ndarray, scale: float = DLIB_SCALE) -> float:
    """``1 - d / scale`` clipped to [0, 1], d the Euclidean distance of raw dlib descriptors."""
    d = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    return float(np.clip(1.0 - d / scale, 0.0, 1.0))


def displacement_magnitude(src: np.ndarray, tgt: np.ndarray) -> float:
    """Mean point displacement over the source's inter-ocular distance (36-45)."""
    s, t = np.asarray(src, np.float64).reshape(68, 2), np.asarray(tgt, np.float64).reshape(68, 2)
    iod = max(float(np.linalg.norm(s[36] - s[45])), 1e-6)
    return float(np.linalg.norm(t - s, axis=1).mean() / iod)


def amplitude_from_landmarks(
    src: np.ndarray, tgt: np.ndarray, fit: tuple[float, float] = AMPLITUDE_FIT
) -> float:
    """``phi_ins`` from the predicted landmark displacement (see the module docstring)."""
    a, b = fit
    return float(np.clip(a + b * displacement_magnitude(src, tgt), 0.0, 1.0))


def fit_amplitude(magnitudes: list[float], changes: list[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``1 - SSIM = a + b * m`` over pairs."""
    b, a = np.polyfit(np.asarray(magnitudes), np.asarray(changes), 1)
    return float(a), float(b)


def landmark_error(given: np.ndarray, detected: np.ndarray) -> float:
    """Mean per-point L1 distance ``|dx| + |dy|`` (canvas pixels)."""
    g, d = np.asarray(given, np.float64).reshape(68, 2), np.asarray(detected, np.float64).reshape(68, 2)
    return float(np.abs(g - d).sum(axis=1).mean())


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean point-to-point error over the ground truth's inter-ocular distance (predictor accuracy)."""
    p, g = np.asarray(pred, np.float64).reshape(68, 2), np.asarray(gt, np.float64).reshape(68, 2)
    return float(np.linalg.norm(p - g, axis=1).mean() / max(np.linalg.norm(g[36] - g[45]), 1e-6))
