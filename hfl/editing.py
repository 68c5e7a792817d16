"""Synthetic single-turn edits (paper Sec. 3.1, "Synthetic data collection"): the instruction sampler and
the offline landmark-driven geometric editor.

Sampler: each edit is ONE expression change (7 types x 3 intensities; neutral has no intensity) or ONE
head-pose change (yaw or pitch, in whole 30-degree units); `expression_fraction` sets the mix, the seed
and the source key make it reproducible. Pose turns whose target would leave the configured range
(|yaw| <= max_abs_yaw_deg, |pitch| <= max_abs_pitch_deg, measured on the source face) are not drawn.

Geometric editor (no learned model; it moves pixels, it cannot create any):
1. fit the 68 landmarks to 3-D on insightface's mean face (hfl.face3d.fit_face) and, for a pose edit,
   turn the fitted head by the instructed yaw/pitch (hfl.face3d.turn_head);
2. for an expression edit, add a hand-set anatomical displacement template (below) in the normalised
   face frame (hfl.face3d.face_frame: inter-ocular distance = 1, eyes horizontal), scaled by intensity;
   "neutral" instead pulls brows, eyes and mouth part-way to the frontal mean face;
3. warp the image piecewise-affinely over a Delaunay triangulation of the 68 source points, a ring of
   points around the face that follows the head at half strength (forehead, hair, neck move with it),
   a fixed outer ring and fixed anchors on the image border (the background beyond the outer ring stays
   exactly where it was). The inverse map is evaluated per
   pixel (scipy Delaunay + barycentric coordinates) and sampled with cv2.remap.
What it cannot do: reveal content that is not in the source (teeth behind closed lips, the far side of
a turned face, an ear), change shading or wrinkles; large turns squeeze the far half of the face.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

import numpy as np

from hfl.face3d import fit_face, from_frame, to_frame, turn_head
from hfl.instructions import build_instruction
from hfl.labels import EXPRESSIONS, INTENSITIES
from hfl.landmarks import as_points, mean_face_3d

INTENSITY_SCALE = {"slightly": 0.5, "normally": 1.0, "strongly": 1.6}  # template multiplier per intensity


@dataclass(frozen=True)
class EditSpec:
    """One single-turn edit: an expression change or a head turn (never both)."""

    kind: str  # expression | pose
    expression: str | None = None  # one of hfl.labels.EXPRESSIONS (kind == expression)
    intensity: str | None = None  # slightly | normally | strongly (None for neutral)
    yaw_units: int = 0  # head turn in pose units, > 0 towards image right (kind == pose)
    pitch_units: int = 0  # > 0 up
    unit_deg: float = 30.0

    @property
    def yaw_deg(self) -> float:
        return self.yaw_units * self.unit_deg

    @property
    def pitch_deg(self) -> float:
        return self.pitch_units * self.unit_deg

    def instruction(self, pronoun: str | None = None) -> str:
        text = build_instruction(
            self.expression, self.intensity, self.yaw_units, self.pitch_units, pronoun, self.unit_deg
        )
        assert text is not None, self
        return text


def seeded_rng(seed: int, key: str) -> random.Random:
    """A Random stream fixed by (seed, key): the same source frame gets the same edit on every run."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def sample_edit(
    rng: random.Random,
    expression_fraction: float = 0.5,
    yaw_units: list[int] | None = None,
    pitch_units: list[int] | None = None,
    yaw_fraction: float = 0.5,
    src_yaw: float = 0.0,
    src_pitch: float = 0.0,
    max_abs_yaw_deg: float = 45.0,
    max_abs_pitch_deg: float = 35.0,
    unit_deg: float = 30.0,
) -> EditSpec:
    """Draw one single-turn edit (see the module docstring); falls back to an expression edit when no
    head turn keeps the face inside the allowed range."""
    yaw_units = [-1, 1] if yaw_units is None else yaw_units
    pitch_units = [-1, 1] if pitch_units is None else pitch_units
    if rng.random() >= expression_fraction:
        yaws = [u for u in yaw_units if u and abs(src_yaw + u * unit_deg) <= max_abs_yaw_deg]
        pitches = [u for u in pitch_units if u and abs(src_pitch + u * unit_deg) <= max_abs_pitch_deg]
        axes = [a for a, ok in (("yaw", yaws), ("pitch", pitches)) if ok]
        if axes:
            axis = axes[0] if len(axes) == 1 else ("yaw" if rng.random() < yaw_fraction else "pitch")
            if axis == "yaw":
                return EditSpec("pose", yaw_units=rng.choice(yaws), unit_deg=unit_deg)
            return EditSpec("pose", pitch_units=rng.choice(pitches), unit_deg=unit_deg)
    expression = rng.choice(EXPRESSIONS)
    intensity = None if expression == "neutral" else rng.choice(INTENSITIES)
    return EditSpec("expression", expression, intensity, unit_deg=unit_deg)


# ----------------------------------------------------------------------------- expression templates
# Hand-set anatomical displacement templates (NOT learned from data): per expression, {landmark indices:
# (dx, dy)} in the normalised face frame (inter-ocular distance 1, x towards image right, y down), at
# intensity "normally". Index groups (iBUG-68): brows 17-21 (image-left) / 22-26, eyes 36-41 / 42-47,
# nose 27-35, outer lips 48-59 (corners 48, 54), inner lips 60-67 (corners 60, 64), chin 6-10.
# A negative dx on the image-left side and a positive dx on the image-right side widen the face.

_L_BROW, _R_BROW = (17, 18, 19, 20, 21), (22, 23, 24, 25, 26)
_L_BROW_IN, _R_BROW_IN = (20, 21), (22, 23)
_UPPER_LIDS, _LOWER_LIDS = (37, 38, 43, 44), (40, 41, 46, 47)
_UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
_LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
_CHIN = (6, 7, 8, 9, 10)


def _sym(template: dict[tuple[int, ...], tuple[float, float]]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for idx, d in template.items():
        for i in idx:
            out[i] = out.get(i, np.zeros(2)) + np.asarray(d, np.float64)
    return out


def _pairs(left: tuple[int, ...], right: tuple[int, ...], dx: float, dy: float) -> dict:
    """Mirror a displacement: `dx` outward (left side -dx, right side +dx), same dy."""
    return {left: (-dx, dy), right: (dx, dy)}


EXPRESSION_TEMPLATES: dict[str, dict[int, np.ndarray]] = {
    "happy": _sym(
        {
            **_pairs((48, 60), (54, 64), 0.10, -0.10),  # mouth corners out and up
            **_pairs((49, 59), (53, 55), 0.05, -0.05),
            _UPPER_LIP: (0.0, -0.02),
            (56, 57, 58, 65, 66, 67): (0.0, 0.03),  # lips part a little
            _LOWER_LIDS: (0.0, -0.03),  # cheeks raise the lower lids
        }
    ),
    "sad": _sym(
        {
            **_pairs((48, 60), (54, 64), -0.03, 0.08),  # corners down and in
            **_pairs((49, 59), (53, 55), -0.01, 0.04),
            **_pairs(_L_BROW_IN, _R_BROW_IN, 0.0, -0.07),  # inner brows up
            **_pairs((17, 18), (25, 26), 0.0, 0.03),  # outer brows down
            _UPPER_LIDS: (0.0, 0.02),
        }
    ),
    "surprised": _sym(
        {
            (*_L_BROW, *_R_BROW): (0.0, -0.12),  # brows up
            _UPPER_LIDS: (0.0, -0.05),  # eyes wide
            _LOWER_LIP: (0.0, 0.22),  # jaw drops
            _CHIN: (0.0, 0.18),
            **_pairs((48, 60), (54, 64), -0.05, 0.08),  # mouth rounds
            (5, 11): (0.0, 0.10),
        }
    ),
    "fearful": _sym(
        {
            (*_L_BROW, *_R_BROW): (0.0, -0.08),
            **_pairs(_L_BROW_IN, _R_BROW_IN, -0.03, -0.04),  # inner brows up and together
            _UPPER_LIDS: (0.0, -0.05),
            **_pairs((48, 60), (54, 64), 0.10, 0.03),  # lips stretched sideways
            _LOWER_LIP: (0.0, 0.08),
            _CHIN: (0.0, 0.05),
        }
    ),
    "disgusted": _sym(
        {
            _UPPER_LIP: (0.0, -0.08),  # upper lip raised
            (31, 32, 33, 34, 35): (0.0, -0.03),  # nose wrinkles
            **_pairs((48, 60), (54, 64), 0.02, -0.02),
            (*_L_BROW, *_R_BROW): (0.0, 0.05),  # brows lowered
            **_pairs(_L_BROW_IN, _R_BROW_IN, -0.03, 0.02),
            _LOWER_LIDS: (0.0, -0.04),
        }
    ),
    "angry": _sym(
        {
            (*_L_BROW, *_R_BROW): (0.0, 0.06),  # brows down
            **_pairs(_L_BROW_IN, _R_BROW_IN, -0.05, 0.04),  # and drawn together
            _UPPER_LIDS: (0.0, 0.03),  # eyes narrowed
            _LOWER_LIDS: (0.0, -0.02),
            _UPPER_LIP: (0.0, 0.02),  # lips pressed
            (56, 57, 58, 65, 66, 67): (0.0, -0.03),
            **_pairs((48, 60), (54, 64), -0.02, 0.02),
        }
    ),
}
NEUTRAL_POINTS = np.r_[17:27, 36:68]  # brows, eyes, mouth: pulled towards the mean face for "neutral"
NEUTRAL_PULL = {None: 0.8, "slightly": 0.5, "normally": 0.8, "strongly": 1.0}


def mean_face_frame() -> np.ndarray:
    """The frontal mean face's 68 points in the normalised face frame."""
    m = mean_face_3d()[:, :2]
    return to_frame(m, _frame_of(m))


def _frame_of(pts: np.ndarray):
    from hfl.face3d import face_frame

    return face_frame(pts)


def expression_target(landmarks: np.ndarray, expression: str, intensity: str | None) -> np.ndarray:
    """The 68 landmarks after the expression template (pixels)."""
    pts = as_points(landmarks)
    frame = _frame_of(pts)
    q = to_frame(pts, frame)
    if expression == "neutral":
        mean = mean_face_frame()
        # align the mean face to this face on the rigid points (eye corners, nose) before pulling
        rigid = np.r_[27:36, 36, 39, 42, 45]
        mean = mean - mean[rigid].mean(0) + q[rigid].mean(0)
        w = NEUTRAL_PULL.get(intensity, 0.8)
        q[NEUTRAL_POINTS] += w * (mean[NEUTRAL_POINTS] - q[NEUTRAL_POINTS])
    else:
        s = INTENSITY_SCALE[intensity or "normally"]
        for i, d in EXPRESSION_TEMPLATES[expression].items():
            q[i] += s * d
    return from_frame(q, frame)


# ----------------------------------------------------------------------------- warp


def _ring(pts: np.ndarray, scale: float, n: int = 16) -> np.ndarray:
    """n points on an ellipse around the landmarks, `scale` times their extent, centred a bit higher
    (the forehead is above the brows)."""
    c = pts.mean(0)
    half = (pts.max(0) - pts.min(0)) / 2 * scale
    c = c - np.array([0.0, half[1] * 0.25])
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return c + np.c_[np.cos(t) * half[0], np.sin(t) * half[1] * 1.15]


def _border(w: int, h: int, n: int = 4) -> np.ndarray:
    xs, ys = np.linspace(0, w - 1, n + 1), np.linspace(0, h - 1, n + 1)
    pts = [(x, 0) for x in xs] + [(x, h - 1) for x in xs] + [(0, y) for y in ys[1:-1]]
    pts += [(w - 1, y) for y in ys[1:-1]]
    return np.asarray(pts, np.float64)


def piecewise_affine_warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Warp `image` so that points `src` move to `dst` (piecewise-affine over the Delaunay triangulation
    of `dst`; pixels outside every triangle are left where they are)."""
    import cv2
    from scipy.spatial import Delaunay

    h, w = image.shape[:2]
    tri = Delaunay(dst)
    x0, y0 = np.floor(np.maximum(dst.min(0), 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(dst.max(0), (w - 1, h - 1))).astype(int)
    gx, gy = np.meshgrid(np.arange(x0, x1 + 1, dtype=np.float64), np.arange(y0, y1 + 1, dtype=np.float64))
    q = np.c_[gx.ravel(), gy.ravel()]
    simplex = tri.find_simplex(q)
    inside = simplex >= 0
    s = simplex[inside]
    trans = tri.transform[s]  # (n, 3, 2): barycentric transform per pixel
    b = np.einsum("nij,nj->ni", trans[:, :2], q[inside] - trans[:, 2])
    bary = np.c_[b, 1 - b.sum(1)]
    verts = tri.simplices[s]  # (n, 3)
    mapped = q.copy()
    mapped[inside] = np.einsum("ni,nij->nj", bary, src[verts])
    map_x = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    map_y = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    map_x[y0 : y1 + 1, x0 : x1 + 1] = mapped[:, 0].reshape(gx.shape)
    map_y[y0 : y1 + 1, x0 : x1 + 1] = mapped[:, 1].reshape(gx.shape)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


JAW_FAR = {1: np.r_[9:17], -1: np.r_[0:8]}  # far-side jaw contour when the head turns right (+) / left (-)
INNER_RIGID = np.r_[27:48, 48:68]  # nose, eyes, mouth


def silhouette(pts: np.ndarray, yaw_deg: float, margin: float = 0.12) -> np.ndarray:
    """Keep the far-side jaw contour outside the turned nose, eyes and mouth (as a 2-D landmarker places
    it on the visible silhouette), so that the warp does not fold the face over itself."""
    frame = _frame_of(pts)
    q = to_frame(pts, frame)
    side = 1 if yaw_deg > 0 else -1
    for i in JAW_FAR[side]:
        near = INNER_RIGID[np.abs(q[INNER_RIGID, 1] - q[i, 1]) < 0.35]
        if len(near):
            edge = (q[near, 0] * side).max() + margin
            if q[i, 0] * side < edge:
                q[i, 0] = edge * side
    return from_frame(q, frame)


def _inside(pts: np.ndarray, w: int, h: int) -> np.ndarray:
    return pts[(pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)]


@dataclass
class GeometricEdit:
    image: np.ndarray  # edited RGB image, same size as the source
    landmarks: np.ndarray  # (68, 2) where the editor moved the source landmarks (its intended target)


class GeometricEditor:
    """The offline edit generator (see the module docstring). Deterministic; CPU only."""

    name = "geometric"

    def __init__(self, ring_scale: float = 1.6, ring_follow: float = 0.5) -> None:
        self.ring_scale = ring_scale  # ring of context points: this many times the landmark extent
        self.ring_follow = ring_follow  # how much of the head's motion the ring follows (0..1)

    def target_landmarks(self, landmarks: np.ndarray, width: int, height: int, spec: EditSpec) -> np.ndarray:
        pts = as_points(landmarks)
        if spec.kind == "pose":
            out = turn_head(fit_face(pts, width, height), spec.yaw_deg, spec.pitch_deg)
            return silhouette(out, spec.yaw_deg) if spec.yaw_deg else out
        return expression_target(pts, spec.expression or "neutral", spec.intensity)

    def edit(self, image: np.ndarray, landmarks: np.ndarray, spec: EditSpec) -> GeometricEdit:
        h, w = image.shape[:2]
        src = as_points(landmarks)
        dst = self.target_landmarks(src, w, h, spec)
        ring_src = _ring(src, self.ring_scale)
        if spec.kind == "pose":
            # the ring moves like the head (an affine fit of the landmark motion), at ring_follow strength
            A = np.c_[src, np.ones(68)]
            coef, *_ = np.linalg.lstsq(A, dst, rcond=None)
            moved = np.c_[ring_src, np.ones(len(ring_src))] @ coef
            ring_dst = ring_src + self.ring_follow * (moved - ring_src)
        else:
            ring_dst = ring_src
        # a fixed outer ring: between it and the border the map is the identity (the background stays put)
        border = np.r_[_border(w, h), _inside(_ring(src, self.ring_scale * 1.6, 24), w, h)]
        keep = (
            (ring_src[:, 0] > 1) & (ring_src[:, 0] < w - 2) & (ring_src[:, 1] > 1) & (ring_src[:, 1] < h - 2)
        )
        keep &= (
            (ring_dst[:, 0] > 1) & (ring_dst[:, 0] < w - 2) & (ring_dst[:, 1] > 1) & (ring_dst[:, 1] < h - 2)
        )
        s_all = np.r_[src, ring_src[keep], border]
        d_all = np.r_[dst, ring_dst[keep], border]
        return GeometricEdit(piecewise_affine_warp(image, s_all, d_all), dst)
