"""Geometry on iBUG-68 landmarks: the paper's change score (Eq. 8) and head pose from the 68 points.

Change score (paper App. B.1, Eq. 8):  0.7 * inner_diff + 0.3 * overall_diff, where

* a landmark set is first translated so its centroid is at the origin: where the head sits in the frame
  is not an edit, so a head that only slides across the frame scores ~0; rotation and scale are kept,
  because head turns are edits and the pair images are the frames as shot;
* diff = mean over the points of |p_src - p_tgt| (per-coordinate absolute difference averaged over x
  and y, i.e. the paper's "mean absolute difference"), divided by the mean inter-ocular distance of the
  two faces (outer eye corners 36 and 45, the 300-W normaliser) and multiplied by 1000;
* inner = eyes 36-47 and mouth 48-67; overall = all 68 points.

So the score is in **thousandths of the inter-ocular distance (per mille IOD)**. What 23 means: projecting
insightface's 3-D mean face, a pure head turn scores 17 at 10 degrees of yaw, 26 at 15, 57 at 30
(one pose unit) and 151 at 60; pitch scores about 0.8x that. So >= 23 asks for at least about half a
30-degree unit of head motion, or an expression change that moves eyes and mouth as much: about the
smallest change the instruction template can describe. `tests/test_pairs.py` recomputes these figures.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

INNER = np.r_[36:48, 48:68]  # eyes and mouth (paper: indices 36-47 and 48-67)
EYE_OUTER = (36, 45)  # outer eye corners: the inter-ocular normaliser
SCALE = 1000.0  # change scores are in thousandths of the inter-ocular distance
POSE_UNIT_DEG = 30.0  # paper: 30 degrees is the base unit of head-pose edits


def as_points(flat: list[float] | np.ndarray) -> np.ndarray:
    """Flat [x0, y0, x1, y1, ...] (or (68, 2)) -> float64 (68, 2)."""
    pts = np.asarray(flat, np.float64).reshape(-1, 2)
    if pts.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks, got {pts.shape[0]}")
    return pts


def interocular(pts: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance of (..., 68, 2) landmark sets."""
    return np.linalg.norm(pts[..., EYE_OUTER[0], :] - pts[..., EYE_OUTER[1], :], axis=-1)


def change_scores(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Eq. 8 for aligned batches: src, tgt (..., 68, 2) -> (...) change score in per mille of IOD."""
    a = src - src.mean(axis=-2, keepdims=True)
    b = tgt - tgt.mean(axis=-2, keepdims=True)
    absdiff = np.abs(a - b)  # (..., 68, 2)
    iod = np.maximum((interocular(src) + interocular(tgt)) / 2, 1e-6)
    inner = absdiff[..., INNER, :].mean(axis=(-2, -1)) / iod * SCALE
    overall = absdiff.mean(axis=(-2, -1)) / iod * SCALE
    return 0.7 * inner + 0.3 * overall


def change_score(src: np.ndarray, tgt: np.ndarray) -> float:
    """Eq. 8 for one pair of (68, 2) landmark sets."""
    return float(change_scores(as_points(src), as_points(tgt)))


def pairwise_diffs(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 68, 2) -> symmetric (n, n) inner_diff and overall_diff matrices (per mille of IOD).

    O(n^2 * 68) numpy work, row by row so memory stays O(n * 68); n is capped per track by the caller.
    """
    c = pts - pts.mean(axis=1, keepdims=True)
    iod = interocular(pts)
    n = len(pts)
    inner, overall = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n - 1):
        d = np.abs(c[i + 1 :] - c[i])
        norm = np.maximum((iod[i] + iod[i + 1 :]) / 2, 1e-6)
        inner[i, i + 1 :] = inner[i + 1 :, i] = d[:, INNER, :].mean(axis=(1, 2)) / norm * SCALE
        overall[i, i + 1 :] = overall[i + 1 :, i] = d.mean(axis=(1, 2)) / norm * SCALE
    return inner, overall


def combine(inner: np.ndarray | float, overall: np.ndarray | float) -> np.ndarray | float:
    """Eq. 8 weights."""
    return 0.7 * inner + 0.3 * overall


# ----------------------------------------------------------------------------- head pose


@lru_cache(maxsize=1)
def mean_face_3d() -> np.ndarray:
    """The 3-D 68-point mean face that the insightface wheel ships (data/objects/meanshape_68.pkl).

    Returned in a right-handed camera-style frame: x to image right, y down, z away from the viewer
    (the file's z points at the viewer, so it is negated).
    """
    spec = importlib.util.find_spec("insightface")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / "data" / "objects" / "meanshape_68.pkl"
        if path.is_file():
            with path.open("rb") as f:
                return np.asarray(pickle.load(f), np.float64).reshape(68, 3) * (1.0, 1.0, -1.0)
    raise FileNotFoundError(
        "insightface/data/objects/meanshape_68.pkl not found: pip install --no-deps insightface==2.1 "
        "(only its data files are used)"
    )


def head_pose(pts: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face from its 68 landmarks: PnP against the 3-D mean face.

    Pinhole camera with focal length = max(width, height) and the principal point at the image centre.
    Signs, as seen in the image: yaw > 0 when the face turns towards image right, pitch > 0 when it
    tilts up, roll > 0 when it rotates clockwise.
    """
    import cv2

    model = mean_face_3d()
    f = float(max(width, height))
    cam = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    img = as_points(pts)
    ok, rvec, tvec = cv2.solvePnP(model, img, cam, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise ValueError("solvePnP failed")
    ok, rvec, tvec = cv2.solvePnP(model, img, cam, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
    rot, _ = cv2.Rodrigues(rvec)
    normal = rot @ np.array([0.0, 0.0, -1.0])  # out of the face, towards the viewer when frontal
    yaw = math.degrees(math.atan2(normal[0], -normal[2]))
    pitch = math.degrees(math.atan2(-normal[1], math.hypot(normal[0], normal[2])))
    right = rot @ np.array([1.0, 0.0, 0.0])
    roll = math.degrees(math.atan2(right[1], right[0]))
    return yaw, pitch, roll


def pose_delta(
    src: tuple[float, float, float], tgt: tuple[float, float, float]
) -> tuple[float, float, float]:
    """(yaw, pitch, roll) change from src to tgt in degrees; roll wrapped into [-180, 180)."""
    return tgt[0] - src[0], tgt[1] - src[1], (tgt[2] - src[2] + 180.0) % 360.0 - 180.0


def pose_units(delta_deg: float, unit: float = POSE_UNIT_DEG) -> int:
    """Signed number of `unit`-degree steps nearest to a pose change (paper: 30-degree budget)."""
    return int(np.round(delta_deg / unit))
