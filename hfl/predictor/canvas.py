"""The 512 canvas the predictors and the LaTo pipeline work on, and RGB image I/O.

The release takes landmarks on the whole image resized to 512 x 512; predictors and the edit pipeline use
the same canvas (``to_canvas``).
"""

from __future__ import annotations

import cv2
import numpy as np

CANVAS = 512


def to_canvas(image: np.ndarray, size: int = CANVAS) -> np.ndarray:
    """RGB image resized to size x size (area interpolation when shrinking)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=interp))



def read_rgb(path: str) -> np.ndarray:
    """RGB uint8 image from a file; ValueError when it cannot be read."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_rgb(path: str, image: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the suffix); ValueError when it cannot be written."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"cannot write image {path}")
