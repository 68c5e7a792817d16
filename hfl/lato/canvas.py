"""Landmark coordinate maps shared by the tokenizer, the DiT and the trainers.

Conventions (iBUG-68, pixel ``(x, y)``):

- *stored image*: pixel coordinates in the image as stored in a shard (DESIGN.md).
- *512 canvas*: the coordinates the landmark tokenizer sees. For a LaTo pair the canvas is the stored
  image resized to 512 x 512 (what the official release does: its landmarks come from the image resized to
  512 x 512), so ``x_c = x * 512 / W`` and ``y_c = y * 512 / H``. For a full video frame (frame shards,
  where the face is small) the canvas is the square face crop around the landmarks (side ``crop_scale`` x
  the longer side of their bounding box, centred on it) resized to 512; this matches the framing of a
  face-crop pair image. See :func:`face_crop_canvas`.
- *normalised*: ``2 * c / 512 - 1`` in [-1, 1] (Eq. 2's input).
- *latent grid*: the packed latent grid of the DiT (image / 16 per side); see ``rope.landmark_ids``.
"""

from __future__ import annotations

import numpy as np

CANVAS = 512.0
NUM_POINTS = 68

# iBUG-68 index permutation under a horizontal flip (left <-> right).
_FLIP_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw 0..16
    + [(17 + i, 26 - i) for i in range(5)]  # brows 17..26
    + [(31, 35), (32, 34)]  # nose base
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (60, 64), (61, 63), (67, 65), (59, 55), (58, 56)]  # mouth
)
FLIP_PERMUTATION = np.arange(NUM_POINTS)
for _a, _b in _FLIP_PAIRS:
    FLIP_PERMUTATION[_a], FLIP_PERMUTATION[_b] = _b, _a


def image_to_canvas(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Stored-image pixels -> 512 canvas of the whole image resized to 512 x 512 (pair images)."""
    pts = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    return pts * np.array([CANVAS / width, CANVAS / height], dtype=np.float32)


def face_crop_canvas(
    landmarks: np.ndarray, crop_scale: float = 1.9, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Stored-image pixels -> 512 canvas of the square face crop around the landmarks.

    Args:
        landmarks: (68, 2) pixel coordinates.
        crop_scale: crop side as a multiple of the longer side of the landmarks' bounding box.
        shift: crop-centre offset as fractions of the crop side (augmentation; 0 for evaluation).
    """
    pts = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    side = crop_scale * float(max(hi - lo))
    centre = (lo + hi) / 2 + np.asarray(shift, dtype=np.float32) * side
    return (pts - (centre - side / 2)) * (CANVAS / side)


def normalise(canvas_pts: np.ndarray) -> np.ndarray:
    """512 canvas -> [-1, 1]."""
    return 2.0 * np.asarray(canvas_pts, dtype=np.float32) / CANVAS - 1.0


def denormalise(norm_pts: np.ndarray) -> np.ndarray:
    """[-1, 1] -> 512 canvas."""
    return (np.asarray(norm_pts, dtype=np.float32) + 1.0) * (CANVAS / 2.0)


def flip_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Landmarks of the horizontally mirrored image, re-indexed so iBUG-68 order still holds."""
    pts = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2).copy()
    pts[:, 0] = (width - 1) - pts[:, 0]
    return pts[FLIP_PERMUTATION]


# iBUG-68 polylines (start, end inclusive, closed) used to rasterise a landmark image.
_CONTOURS = [
    (0, 16, False),
    (17, 21, False),
    (22, 26, False),
    (27, 30, False),
    (31, 35, False),
    (36, 41, True),
    (42, 47, True),
    (48, 59, True),
    (60, 67, True),
]


def render_landmarks(landmarks: np.ndarray, width: int, height: int, thickness: int = 2) -> np.ndarray:
    """Rasterise landmarks as white iBUG-68 contours on black: (H, W, 3) uint8 RGB.

    Used by the rendered-landmark-image conditioning switch (paper Table 3, "rendering landmarks as 2D
    images and extracting facial tokens with a shared VAE").
    """
    import cv2

    img = np.zeros((height, width, 3), dtype=np.uint8)
    pts = np.round(np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)).astype(np.int32)
    for a, b, closed in _CONTOURS:
        cv2.polylines(img, [pts[a : b + 1]], closed, (255, 255, 255), thickness, cv2.LINE_AA)
    return img


# ----------------------------------------------------------------------------- the release's frames


def release_image_size(width: int, height: int, size_level: int = 512) -> tuple[int, int]:
    """(width, height) the release resizes a source image to (``ImageGenerator.input_process_image``).

    The aspect ratio is kept at about ``size_level**2`` pixels, each side floored to a multiple of 16 (so
    the packed latent grid is whole): e.g. 1000 x 750 -> 576 x 432, 512 x 512 -> 512 x 512.
    """
    import math

    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    r = width / height
    if width > height:
        w_new = math.ceil(math.sqrt(size_level * size_level * r))
        h_new = math.ceil(w_new / r)
    else:
        h_new = math.ceil(math.sqrt(size_level * size_level / r))
        w_new = math.ceil(h_new * r)
    w_new, h_new = w_new // 16 * 16, h_new // 16 * 16
    if w_new < 16 or h_new < 16:
        raise ValueError(f"image {width} x {height} is too elongated for a {size_level} canvas")
    return w_new, h_new


def release_landmark_frame(grid_hw: tuple[int, int]) -> tuple[float, float]:
    """``image_hw`` that makes :func:`hfl.lato.rope.landmark_ids` reproduce the release's landmark ids.

    The release's landmarks live on the 512 x 512 canvas (FAN on the image resized to 512 x 512) and
    ``step1x_utils.prepare_landmark_ids`` divides *both* coordinates by ``512 / grid_h``. On a square grid
    that is the plain canvas mapping; on a non-square grid (aspect-preserving canvas) x is scaled by the
    grid's height too, which this frame (512, 512 * grid_w / grid_h) reproduces exactly.
    """
    gh, gw = grid_hw
    return (CANVAS, CANVAS * gw / gh)
