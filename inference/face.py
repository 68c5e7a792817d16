"""Face and 68 landmarks on the 512 canvas (the whole image resized to 512 x 512, as the release does)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hfl.backends.base import FaceBox
from hfl.backends.face import FaceBackendConfig, load_detector, load_landmarker
from hfl.predictor.canvas import CANVAS, read_rgb, to_canvas, write_rgb

__all__ = ["CANVAS", "CanvasFace", "FaceFinder", "read_rgb", "to_canvas", "write_rgb"]


@dataclass
class CanvasFace:
    """The image on the 512 canvas, the largest face's box and its 68 landmarks (canvas pixels)."""

    canvas: np.ndarray  # (512, 512, 3) RGB uint8
    box: FaceBox
    landmarks: np.ndarray  # (68, 2)


class FaceFinder:
    """Detector + landmarker from ``hfl.backends.face`` (dlib offline default); loaded once."""

    def __init__(self, cfg: FaceBackendConfig | None = None) -> None:
        self.cfg = cfg or FaceBackendConfig()
        self._det = load_detector(self.cfg)
        self._lmk = load_landmarker(self.cfg)

    def find(self, image: np.ndarray) -> tuple[FaceBox, np.ndarray] | None:
        """Largest face and its landmarks in an RGB image (its own pixels), or None."""
        boxes = self._det.detect(image)
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.area)
        return box, np.asarray(self._lmk.landmarks(image, box), np.float64).reshape(68, 2)

    def on_canvas(self, image: np.ndarray) -> CanvasFace:
        """Resize to 512 x 512 and find the face there; ValueError when there is none."""
        canvas = to_canvas(image)
        found = self.find(canvas)
        if found is None:
            raise ValueError("no face found in the image")
        return CanvasFace(canvas, found[0], found[1])
