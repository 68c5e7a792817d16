"""Protocols for model-backed capabilities. Images are RGB uint8 arrays of shape (H, W, 3)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np


class BackendUnavailable(RuntimeError):
    """A backend cannot be loaded: missing weight files or missing optional package."""


class DropsModelWhenPickled:
    """Mixin for lazily loaded backends: `_get()` loads the model once (`_load()`, under `self._lock`);
    pickling (e.g. into Ray workers) drops the loaded model and the lock, and the copy loads again on
    first use. Subclasses set `self._lock = threading.Lock()` and `self._model = None` in __init__; other
    locks they hold are named in `_lock_attrs` (dropped when pickled, made anew in the copy)."""

    _model_attr: ClassVar[str] = "_model"
    _lock_attrs: ClassVar[tuple[str, ...]] = ("_lock",)

    def _load(self) -> Any:
        raise NotImplementedError

    def _get(self) -> Any:
        if getattr(self, self._model_attr) is None:
            with self._lock:
                if getattr(self, self._model_attr) is None:
                    setattr(self, self._model_attr, self._load())
        return getattr(self, self._model_attr)

    def load(self) -> None:
        """Load the model now (workers call this in setup so the first unit does not pay for it)."""
        self._get()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state[self._model_attr] = None
        for name in self._lock_attrs:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in self._lock_attrs:
            setattr(self, name, threading.Lock())


@dataclass(frozen=True)
class FaceBox:
    """One detected face: pixel box (x0, y0, x1, y1) in the image and the detector's confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


@runtime_checkable
class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces in the image, largest first."""
        ...


@runtime_checkable
class Landmarker(Protocol):
    name: str

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """iBUG-68 landmarks of the face in `box`: float32 array (68, 2) of pixel (x, y)."""
        ...


@runtime_checkable
class IdentityEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, image: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> np.ndarray:
        """L2-normalised identity embedding (dim,) of one face."""
        ...


@runtime_checkable
class QualityScorer(Protocol):
    name: str

    def score(self, frames: list[np.ndarray]) -> float:
        """Perceptual quality in [0, 1] (higher is better) of one frame or a short clip of frames."""
        ...
