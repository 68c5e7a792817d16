"""Paper landmark backend: face-alignment's 2D-FAN (68 points) from a local TorchScript file.

face-alignment 1.4.x releases 2DFAN4 as a TorchScript zip loaded with ``torch.jit.load``; that is the
format read here. As a fallback, a plain ``state_dict`` checkpoint (1.5's ``2DFAN4-*.pth.tar``) is accepted
when the ``face_alignment`` package is installed to provide the FAN module. Pre/post-processing follows
``face_alignment/api.py`` and ``utils.py``: centre/scale from the box, 256x256 crop scaled to [0, 1],
64x64 heatmaps, argmax + quarter-pixel refinement, transform back to image pixels. torch is imported lazily.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from typing import Any

import cv2
import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled, FaceBox

CROP_RESOLUTION = 256
SCALE_FACTOR = 200.0
CENTER_Y_OFFSET = 0.12
REFERENCE_SCALE = 195.0
NUM_LANDMARKS = 68
# face_alignment.utils.shuffle_lr: iBUG-68 index of each point's mirror image.
FLIP_PAIRS = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51,
    50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65,
]  # fmt: skip


def fan_center_scale(box: FaceBox, reference_scale: float = REFERENCE_SCALE) -> tuple[np.ndarray, float]:
    """face-alignment's crop parameters for a detector box: centre moved up by 12% of the height."""
    w, h = box.x1 - box.x0, box.y1 - box.y0
    center = np.array([box.x1 - w / 2.0, box.y1 - h / 2.0 - h * CENTER_Y_OFFSET])
    return center, (w + h) / reference_scale


def _fan_matrix(center: np.ndarray, scale: float, resolution: float, invert: bool = False) -> np.ndarray:
    h = SCALE_FACTOR * scale
    t = np.eye(3)
    t[0, 0] = t[1, 1] = resolution / h
    t[0, 2] = resolution * (-center[0] / h + 0.5)
    t[1, 2] = resolution * (-center[1] / h + 0.5)
    return np.linalg.inv(t) if invert else t


def _fan_point(pt: tuple[float, float], center: np.ndarray, scale: float, res: float) -> np.ndarray:
    """face_alignment.utils.transform(..., invert=True) including its truncation to int."""
    p = _fan_matrix(center, scale, res, invert=True) @ np.array([pt[0], pt[1], 1.0])
    return np.trunc(p[:2]).astype(np.int64)


def fan_crop(
    image: np.ndarray, center: np.ndarray, scale: float, resolution: int = CROP_RESOLUTION
) -> np.ndarray:
    """face_alignment.utils.crop: zero-padded square crop around ``center``, resized to ``resolution``."""
    ul = _fan_point((1, 1), center, scale, resolution)
    br = _fan_point((resolution, resolution), center, scale, resolution)
    ht, wd = image.shape[:2]
    out = np.zeros((max(1, br[1] - ul[1]), max(1, br[0] - ul[0]), 3), dtype=np.uint8)
    new_x = (max(1, -ul[0] + 1), min(br[0], wd) - ul[0])
    new_y = (max(1, -ul[1] + 1), min(br[1], ht) - ul[1])
    old_x = (max(1, ul[0] + 1), min(br[0], wd))
    old_y = (max(1, ul[1] + 1), min(br[1], ht))
    if new_x[1] >= new_x[0] and new_y[1] >= new_y[0] and old_x[1] >= old_x[0] and old_y[1] >= old_y[0]:
        src = image[old_y[0] - 1 : old_y[1], old_x[0] - 1 : old_x[1]]
        out[new_y[0] - 1 : new_y[1], new_x[0] - 1 : new_x[1]] = src
    return cv2.resize(out, (resolution, resolution), interpolation=cv2.INTER_LINEAR)


def heatmaps_to_points(hm: np.ndarray, center: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """face_alignment.utils.get_preds_fromhm for one face: (C, H, W) heatmaps -> image (x, y) and peak scores.

    The final image coordinates are kept as floats (face-alignment truncates them to int).
    """
    c, h, w = hm.shape
    flat = hm.reshape(c, h * w)
    idx = flat.argmax(axis=1)
    scores = flat[np.arange(c), idx].astype(np.float32)
    px, py = idx % w, idx // w
    preds = np.stack([px + 1, py + 1], axis=1).astype(np.float64)
    for j in range(c):
        x, y = int(px[j]), int(py[j])
        if 0 < x < w - 1 and 0 < y < h - 1:
            diff = np.array([hm[j, y, x + 1] - hm[j, y, x - 1], hm[j, y + 1, x] - hm[j, y - 1, x]])
            preds[j] += np.sign(diff) * 0.25
    preds -= 0.5
    inv = _fan_matrix(center, scale, float(h), invert=True)
    pts = preds @ inv[:2, :2].T + inv[:2, 2]
    return pts.astype(np.float32), scores


class FanLandmarker(DropsModelWhenPickled):
    """face-alignment 2D-FAN landmarker (iBUG-68) from a local TorchScript checkpoint."""

    name = "fan"
    _model_attr = "_net"

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        reference_scale: float = REFERENCE_SCALE,
        flip: bool = False,
    ) -> None:
        if not path:
            raise BackendUnavailable("fan landmarker: backends.face.fan_path not set (2DFAN4 TorchScript)")
        if not os.path.isfile(path):
            raise BackendUnavailable(f"fan landmarker: missing file {path} (2DFAN4 TorchScript .zip/.pt)")
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailable("fan landmarker: package 'torch' is not installed (torch==2.13.0)")
        self.path = path
        self.device = device
        self.reference_scale = float(reference_scale)
        self.flip = bool(flip)
        self._lock = threading.Lock()
        self._net: Any = None

    def _load(self) -> Any:
        import torch

        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit as deprecated; it still loads FAN
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(self.path, map_location=self.device)
        except Exception as jit_err:  # noqa: BLE001 - maybe a plain state_dict checkpoint
            net = self._load_state_dict(torch, jit_err)
        net.eval()
        return net

    def _load_state_dict(self, torch: Any, jit_err: Exception) -> Any:
        try:
            state = torch.load(self.path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"fan landmarker: cannot load {self.path}: {jit_err}") from e
        if not isinstance(state, dict):
            raise BackendUnavailable(f"fan landmarker: {self.path} is neither TorchScript nor a state_dict")
        try:
            from face_alignment.models import FAN
        except ImportError as e:
            raise BackendUnavailable(
                f"fan landmarker: {self.path} is a state_dict, not TorchScript; loading it needs package "
                "'face_alignment' (pip install face-alignment) or a TorchScript 2DFAN4 export"
            ) from e
        net = FAN(4)
        net.load_state_dict(state)
        return net.to(self.device)

    def load(self) -> None:
        """Load the model now (workers call this in setup so the first unit does not pay for it)."""
        self._get()

    def _get(self) -> Any:
        if self._net is None:
            with self._lock:
                if self._net is None:
                    self._net = self._load()
        return self._net

    def heatmaps(self, crop: np.ndarray) -> np.ndarray:
        """Run FAN on one 256x256 RGB uint8 crop -> (68, 64, 64) float32 heatmaps."""
        import torch

        net = self._get()
        x = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(self.device)

        def run(inp: Any) -> Any:
            out = net(inp)
            if isinstance(out, list | tuple):
                out = out[-1]
            return out.detach().float().cpu()

        with torch.no_grad():
            out = run(x)
            if self.flip:
                out = out + run(x.flip(-1))[:, FLIP_PAIRS].flip(-1)
        hm = out.numpy()[0]
        if hm.ndim != 3 or hm.shape[0] != NUM_LANDMARKS:
            raise ValueError(f"fan landmarker: expected heatmaps (1, 68, H, W), got {tuple(out.shape)}")
        return hm

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """iBUG-68 landmarks (68, 2) float32 pixel (x, y) of the face in ``box``."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        center, scale = fan_center_scale(box, self.reference_scale)
        crop = fan_crop(np.ascontiguousarray(image, dtype=np.uint8), center, scale)
        pts, _ = heatmaps_to_points(self.heatmaps(crop), center, scale)
        return pts
