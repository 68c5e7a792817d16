"""Smoothing and geometric sanity checks for predicted landmarks (paper Sec. 3.3: "smoothing and geometric
sanity checks are applied to preserve identity-consistent rigid distances").

A prediction is compared with a *reference*: the source turned rigidly by the instructed yaw/pitch (the
geometric predictor without expression), so a head turn's foreshortening is expected, not penalised.

Checks (``check``), each a reason string when it fails:

- finite, inside the canvas with a margin of 25 %;
- inter-ocular distance (36-45) and nose-bridge length (27-30) within ``rigid_tol`` (ratio 1/1.35..1.35)
  of the reference: these are rigid and do not change with expression;
- face size (bounding-box diagonal) within ``scale_tol`` of the reference;
- no point further than ``max_point_iod`` inter-ocular distances from its reference position (an
  "exploded" face, a swapped group).

Smoothing (``smooth``): the rigid points (eye corners 36/39/42/45, nose 27-35) are pulled towards the
reference similarity-aligned onto the prediction (weight ``rigid_weight``), and the jaw and brow contours
get one pass of neighbour averaging (weight ``contour_weight``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIGID = np.r_[27:36, 36, 39, 42, 45]
_CONTOURS = [np.r_[0:17], np.r_[17:22], np.r_[22:27]]


@dataclass
class SanityConfig:
    rigid_tol: float = 1.35
    scale_tol: float = 1.35
    max_point_iod: float = 0.8
    canvas: float = 512.0
    margin: float = 0.25


def _dist(p: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(p[a] - p[b]))


def _ratio_ok(x: float, ref: float, tol: float) -> bool:
    return ref > 1e-6 and 1 / tol <= x / ref <= tol


def check(pred: np.ndarray, reference: np.ndarray, cfg: SanityConfig | None = None) -> list[str]:
    """Failed checks (empty when the prediction is plausible)."""
    cfg = cfg or SanityConfig()
    p, r = np.asarray(pred, np.float64).reshape(-1, 2), np.asarray(reference, np.float64).reshape(68, 2)
    if p.shape != (68, 2):
        return [f"expected 68 points, got {p.shape[0]}"]
    if not np.isfinite(p).all():
        return ["non-finite coordinates"]
    fails = []
    lo, hi = -cfg.margin * cfg.canvas, (1 + cfg.margin) * cfg.canvas
    if (p < lo).any() or (p > hi).any():
        fails.append("points outside the canvas")
    for name, (a, b) in {"inter-ocular": (36, 45), "nose bridge": (27, 30)}.items():
        if not _ratio_ok(_dist(p, a, b), _dist(r, a, b), cfg.rigid_tol):
            fails.append(f"{name} distance {_dist(p, a, b):.1f} vs {_dist(r, a, b):.1f}")
    diag = lambda q: float(np.linalg.norm(q.max(0) - q.min(0)))  # noqa: E731
    if not _ratio_ok(diag(p), diag(r), cfg.scale_tol):
        fails.append(f"face size {diag(p):.1f} vs {diag(r):.1f}")
    iod = max(_dist(r, 36, 45), 1e-6)
    worst = float(np.linalg.norm(p - r, axis=1).max()) / iod
    if worst > cfg.max_point_iod:
        fails.append(f"a point moved {worst:.2f} inter-ocular distances from the rigid reference")
    return fails


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` mapped by the least-squares similarity transform onto ``dst``."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1, d]) @ vt
    scale = (s * [1, d]).sum() / max((a**2).sum(), 1e-12)
    return a @ rot * scale + md


def smooth(
    pred: np.ndarray, reference: np.ndarray, rigid_weight: float = 0.5, contour_weight: float = 0.25
) -> np.ndarray:
    """Pred with rigid points pulled to the aligned reference and contours lightly averaged."""
    p = np.asarray(pred, np.float64).reshape(68, 2).copy()
    r = np.asarray(reference, np.float64).reshape(68, 2)
    aligned = similarity_fit(r[RIGID], p[RIGID])
    p[RIGID] = (1 - rigid_weight) * p[RIGID] + rigid_weight * aligned
    for idx in _CONTOURS:
        c = p[idx].copy()
        mid = 0.5 * (c[:-2] + c[2:])
        c[1:-1] = (1 - contour_weight) * c[1:-1] + contour_weight * mid
        p[idx] = c
    return p
