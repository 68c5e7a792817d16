"""Head-pose estimators: one small API that stages call for (yaw, pitch, roll) of a face.

Names for :func:`load_head_pose`:

- ``"pnp"``: PnP of the 68 landmarks on insightface's 3-D mean face (:func:`hfl.landmarks.head_pose`);
  needs the landmarks, ignores the pixels; no network.
- ``"3ddfa"``: the 3DDFA_V2 network (:mod:`hfl.backends.face_3ddfa`) regresses the camera from the face
  crop; needs the pixels and the box, ignores the landmarks; independent of insightface's mean face.
  Opt-in: it loads the BFM file (for its 68 points), which is for academic use only.
- ``"3ddfa-pose"`` (the pipeline's default): the same network and the same pose, read from the regressed
  camera alone (the first 12 of its 62 parameters): only ``mb1_120x120.onnx`` and
  ``param_mean_std_62d_120x120.pkl`` (3DDFA_V2, MIT) are read, never the BFM file.

Conventions (both): degrees; yaw > 0 when the face turns towards image right, pitch > 0 when it tilts up,
roll > 0 when it rotates clockwise in the image. ``None`` when the estimator cannot tell (no landmarks for
``pnp``, an empty box, a failed solve).
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled

HEAD_POSE_ESTIMATORS = ("pnp", "3ddfa", "3ddfa-pose")


@runtime_checkable
class HeadPoseEstimator(Protocol):
    name: str

    def pose(
        self, rgb: np.ndarray, box: tuple[float, float, float, float], landmarks: np.ndarray | None
    ) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) in degrees of the face in ``box`` (x0, y0, x1, y1); None if it cannot tell."""
        ...


class PnpHeadPose:
    """PnP of the 68 points on insightface's mean face (wraps hfl.landmarks.head_pose)."""

    name = "pnp"

    def pose(
        self, rgb: np.ndarray, box: tuple[float, float, float, float], landmarks: np.ndarray | None
    ) -> tuple[float, float, float] | None:
        """Pose from ``landmarks`` ((68, 2) or flat 136); the image only gives the camera's size."""
        from hfl.landmarks import head_pose

        if landmarks is None:
            return None
        pts = np.asarray(landmarks, np.float64).reshape(-1, 2)
        if pts.shape != (68, 2) or not np.isfinite(pts).all():
            return None
        h, w = rgb.shape[:2]
        try:
            return head_pose(pts, w, h)
        except ValueError:  # solvePnP failed
            return None


class TddfaPose(DropsModelWhenPickled):
    """3DDFA_V2's head pose from the regressed camera only (no BFM file is read)."""

    name = "3ddfa-pose"

    def __init__(self, threads: int = 1) -> None:
        problems = head_pose_problems(self.name)
        if problems:
            raise BackendUnavailable("head pose '3ddfa-pose': " + "; ".join(problems))
        self.threads = threads
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> dict[str, Any]:
        import onnxruntime as ort

        from hfl.backends.face_3ddfa import TDDFA_FILES, nsface_dir

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        opts.log_severity_level = 3
        folder = nsface_dir()
        sess = ort.InferenceSession(
            os.path.join(folder, TDDFA_FILES["onnx"]), opts, providers=["CPUExecutionProvider"]
        )
        with open(os.path.join(folder, TDDFA_FILES["mean_std"]), "rb") as f:
            ms = pickle.load(f)
        mean, std = (np.asarray(ms[k], np.float64)[:12] for k in ("mean", "std"))
        return {"sess": sess, "input": sess.get_inputs()[0].name, "mean": mean, "std": std}

    def pose(
        self, rgb: np.ndarray, box: tuple[float, float, float, float], landmarks: np.ndarray | None = None
    ) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) degrees of the face in ``box``; ``landmarks`` is unused."""
        from hfl.backends.face_3ddfa import network_input, pose_from_camera

        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            return None
        m = self._get()
        x, _ = network_input(rgb, x0, y0, x1, y1)
        with self._lock:
            out = m["sess"].run(None, {m["input"]: x})[0]
        cam = (out.reshape(-1)[:12].astype(np.float64) * m["std"] + m["mean"]).reshape(3, 4)
        return pose_from_camera(cam)


class PoseChain:
    """Estimators tried in order (e.g. 3ddfa-pose, then pnp): the first that can tell gives the pose."""

    def __init__(self, names: list[str]) -> None:
        self.estimators = [load_head_pose(n) for n in dict.fromkeys(n for n in names if n)]

    def pose(
        self, rgb: np.ndarray, box: list[float] | tuple[float, ...], landmarks: Any
    ) -> tuple[tuple[float, float, float], str] | None:
        """((yaw, pitch, roll), the estimator's name), or None when none can tell."""
        pts = None if landmarks is None else np.asarray(landmarks, np.float64).reshape(-1, 2)
        for est in self.estimators:
            pose = est.pose(rgb, tuple(float(v) for v in box[:4]), pts)
            if pose is not None:
                return (float(pose[0]), float(pose[1]), float(pose[2])), est.name
        return None

    def require(
        self, rgb: np.ndarray, box: list[float] | tuple[float, ...], landmarks: Any
    ) -> tuple[tuple[float, float, float], str]:
        """Like `pose`, but an error (recorded by the stage as the row's `error`) when none can tell."""
        got = self.pose(rgb, box, landmarks)
        if got is None:
            raise ValueError("no head-pose estimator could tell the pose")
        return got


def head_pose_problems(name: str) -> list[str]:
    """What is missing for estimator ``name``, found without loading anything ([] when all is there)."""
    if name == "pnp":
        from hfl.landmarks import mean_face_3d

        try:
            mean_face_3d()
        except FileNotFoundError as e:
            return [str(e)]
        return []
    from hfl.backends.face_3ddfa import TDDFA_FILES, nsface_dir, tddfa_file_problems

    if name == "3ddfa":
        return tddfa_file_problems()
    if name == "3ddfa-pose":
        return (
            [p for p in tddfa_file_problems() if TDDFA_FILES["bfm"] not in p]
            if nsface_dir()
            else tddfa_file_problems()
        )
    return [f"unknown estimator {name!r} (choose from {', '.join(HEAD_POSE_ESTIMATORS)})"]


def load_head_pose(name: str) -> HeadPoseEstimator:
    """Head-pose estimator ``name`` ("pnp" or "3ddfa"); raises BackendUnavailable if it cannot load."""
    if name == "pnp":
        from hfl.landmarks import mean_face_3d

        try:
            mean_face_3d()
        except FileNotFoundError as e:
            raise BackendUnavailable(f"head pose 'pnp': {e}") from e
        return PnpHeadPose()
    if name == "3ddfa":
        from hfl.backends.face_3ddfa import TddfaLandmarker

        return TddfaLandmarker()
    if name == "3ddfa-pose":
        return TddfaPose()
    raise BackendUnavailable(
        f"head pose: unknown estimator {name!r} (choose from {', '.join(HEAD_POSE_ESTIMATORS)})"
    )
