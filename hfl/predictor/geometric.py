"""Geometric landmark predictor (offline default, beyond the paper).

Target = rigid 3-D turn of the source face + an expression displacement:

1. ``hfl.face3d.fit_face`` lifts the 68 source points to 3-D (mean-face depth) and ``turn_from_pose`` rotates
   them about the head centre so the PnP pose changes by the instructed yaw/pitch, and re-projects them.
2. The expression displacement for the instructed (expression, intensity) cell, stored in the normalised
   face frame of ``hfl.face3d.face_frame`` (centroid, inter-ocular distance = 1, eyes horizontal), is added
   in the frame of ``rigid``: ``target = from_frame(to_frame(rigid) + D[expr, intensity])``.

The table ``expression_displacements.json`` is fitted by ``python -m inference.fit_displacements`` from HFL
pair shards (mean target - rigid displacement per cell after removing the measured pose change and a
similarity alignment), shrunk towards a hand-set anatomical prior (``PRIOR``) with weight ``k`` pseudo-pairs;
cells without pairs are the prior. Deterministic, numpy + OpenCV only, about a millisecond per face.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from hfl.face3d import FaceFit, face_frame, fit_face, from_frame, to_frame, turn_matrix
from hfl.landmarks import head_pose
from hfl.predictor.edit_spec import EXPRESSIONS, INTENSITIES, EditSpec, parse_instruction

TABLE_PATH = Path(__file__).with_name("expression_displacements.json")
INTENSITY_GAIN = {"slightly": 0.5, "normally": 1.0, "strongly": 1.6, None: 1.0}

# Hand-set prior, face-frame units (inter-ocular distance 1; x right, y down), at intensity "normally".
_REGIONS: dict[str, list[tuple[list[int], float, float]]] = {
    "happy": [
        ([48, 60], -0.06, -0.05),
        ([54, 64], 0.06, -0.05),
        ([49, 53], 0.0, -0.02),
        ([55, 56, 57, 58, 59, 65, 66, 67], 0.0, 0.02),
        ([40, 41, 46, 47], 0.0, -0.015),
    ],
    "surprised": [
        (list(range(17, 27)), 0.0, -0.08),
        ([37, 38, 43, 44], 0.0, -0.03),
        ([6, 7, 8, 9, 10], 0.0, 0.08),
        ([5, 11], 0.0, 0.05),
        ([55, 56, 57, 58, 59, 65, 66, 67], 0.0, 0.15),
        ([48, 60], 0.02, 0.04),
        ([54, 64], -0.02, 0.04),
    ],
    "sad": [
        ([20, 21], 0.01, -0.04),
        ([22, 23], -0.01, -0.04),
        ([48, 60], -0.01, 0.04),
        ([54, 64], 0.01, 0.04),
    ],
    "angry": [
        ([17, 18, 19], 0.0, 0.03),
        ([24, 25, 26], 0.0, 0.03),
        ([20, 21], 0.03, 0.05),
        ([22, 23], -0.03, 0.05),
        ([61, 62, 63], 0.0, 0.01),
        ([65, 66, 67], 0.0, -0.01),
    ],
    "fearful": [
        ([17, 18, 19, 24, 25, 26], 0.0, -0.04),
        ([20, 21], 0.02, -0.06),
        ([22, 23], -0.02, -0.06),
        ([37, 38, 43, 44], 0.0, -0.03),
        ([48, 60], -0.04, 0.02),
        ([54, 64], 0.04, 0.02),
        ([55, 56, 57, 58, 59, 65, 66, 67], 0.0, 0.05),
    ],
    "disgusted": [
        ([49, 50, 51, 52, 53, 61, 62, 63], 0.0, -0.04),
        ([31, 32, 33, 34, 35], 0.0, -0.02),
        ([20, 21], 0.02, 0.04),
        ([22, 23], -0.02, 0.04),
    ],
    "neutral": [],
}


def _prior_cell(expression: str) -> np.ndarray:
    d = np.zeros((68, 2))
    for idx, dx, dy in _REGIONS.get(expression, []):
        d[idx] += (dx, dy)
    return d


PRIOR = {e: _prior_cell(e) for e in EXPRESSIONS}


def cell_key(expression: str, intensity: str | None) -> str:
    return f"{expression}/{intensity or '-'}"


def prior_displacement(expression: str, intensity: str | None) -> np.ndarray:
    """Hand-set displacement (68, 2) of a cell (the "normally" shape times the intensity gain)."""
    return PRIOR.get(expression, np.zeros((68, 2))) * INTENSITY_GAIN.get(intensity, 1.0)


@lru_cache(maxsize=4)
def load_table(path: str = str(TABLE_PATH)) -> dict[str, np.ndarray]:
    """Fitted cells ``"expr/intensity" -> (68, 2)``; the prior for cells the file lacks (or no file)."""
    table = {cell_key(e, i): prior_displacement(e, i) for e in EXPRESSIONS for i in (*INTENSITIES, None)}
    p = Path(path)
    if p.is_file():
        data = json.loads(p.read_text())
        for key, cell in data.get("cells", {}).items():
            table[key] = np.asarray(cell["displacement"], np.float64).reshape(68, 2)
    return table


def turn_from_pose(
    fit: FaceFit, landmarks: np.ndarray, yaw_deg: float, pitch_deg: float, iterations: int = 3
) -> np.ndarray:
    """Turn the fitted head so its re-estimated pose (``hfl.landmarks.head_pose``) changes by (yaw, pitch).

    The rotation is ``T(y0 + cy, p0 + cp) T(y0, p0)^T`` with ``T = hfl.face3d.turn_matrix`` and (y0, p0) the
    source's pose: it maps the source's facing direction onto the target's (``turn_head``'s camera-space
    rotation reads back exactly only for a frontal source). The lifted shape is the person's 2-D shape on
    the mean face's depth, so PnP reads a pitch change of such a shape with a person-dependent gain (up to
    ~40 % off); the commanded (cy, cp) are therefore corrected ``iterations`` times by the difference between
    the asked and the re-estimated change. HFL labels pair pose changes with the same estimator.
    """
    y0, p0, _ = head_pose(landmarks, fit.width, fit.height)
    c = fit.centre

    def turned(cy: float, cp: float) -> np.ndarray:
        delta = turn_matrix(y0 + cy, p0 + cp) @ turn_matrix(y0, p0).T
        return fit.project((fit.points3d - c) @ delta.T + c)

    cy, cp = float(yaw_deg), float(pitch_deg)
    pts = turned(cy, cp)
    for _ in range(iterations):
        y1, p1, _ = head_pose(pts, fit.width, fit.height)
        ey, ep = yaw_deg - (y1 - y0), pitch_deg - (p1 - p0)
        if max(abs(ey), abs(ep)) < 0.5:
            break
        cy, cp = cy + float(np.clip(ey, -20, 20)), cp + float(np.clip(ep, -20, 20))
        pts = turned(cy, cp)
    return pts


class GeometricPredictor:
    """Rigid 3-D turn plus tabled expression displacement (see the module docstring).

    Args:
        table_path: displacement table (default: the packaged ``expression_displacements.json``).
        expression_gain: multiplies every expression displacement (0 = pose only).
    """

    name = "geometric"

    def __init__(self, table_path: str | Path = TABLE_PATH, expression_gain: float = 1.0) -> None:
        self.table = load_table(str(table_path))
        self.expression_gain = expression_gain

    def displacement(self, spec: EditSpec) -> np.ndarray:
        if spec.expression is None:
            return np.zeros((68, 2))
        key = cell_key(spec.expression, spec.intensity)
        d = self.table.get(key)
        if d is None:
            d = prior_displacement(spec.expression, spec.intensity)
        return d * self.expression_gain

    def predict_spec(
        self, landmarks: np.ndarray, spec: EditSpec, width: int = 512, height: int = 512
    ) -> np.ndarray:
        """Target (68, 2) pixels for source landmarks (pixels in a ``width`` x ``height`` image)."""
        src = np.asarray(landmarks, np.float64).reshape(68, 2)
        rigid = (
            src
            if spec.yaw_deg == 0 and spec.pitch_deg == 0
            else turn_from_pose(fit_face(src, width, height), src, spec.yaw_deg, spec.pitch_deg)
        )
        disp = self.displacement(spec)
        if not np.any(disp):
            return rigid
        frame = face_frame(rigid)
        return from_frame(to_frame(rigid, frame) + disp, frame)

    def predict(
        self,
        image: np.ndarray | None,
        landmarks: np.ndarray,
        instruction: str,
        width: int = 512,
        height: int = 512,
    ) -> np.ndarray:
        """Target landmarks for an instruction (the image is not used)."""
        return self.predict_spec(landmarks, parse_instruction(instruction), width, height)
