"""Head-pose estimators: one small API that stages call for (yaw, pitch, roll) of a face.

Names for :func:`load_head_pose`:

- ``"pnp"``: PnP of the 68 landmarks on insightface's 3-D mean face (:func:`hfl.landmarks.head_pose`);
  needs the landmarks, ignores the pixels; no network.
- ``"3ddfa"``: the 3DDFA_V2 network (:mod:`hfl.backends.face_3ddfa`) regresses the camera from the face
  crop; needs the pixels and the box, ignores the landmarks; independent of insightface's mean face.
  Opt-in: its BFM file is for academic use only.

Conventions (both): degrees; yaw > 0 when the face turns towards image right, pitch > 0 when it tilts up,
roll > 0 when it rotates clockwise in the image. ``None`` when the estimator cannot tell (no landmarks for
``pnp``, an empty box, a failed solve).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from hfl.backends.base import BackendUnavailable

HEAD_POSE_ESTIMATORS = ("pnp", "3ddfa")


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
    raise BackendUnavailable(
        f"head pose: unknown estimator {name!r} (choose from {', '.join(HEAD_POSE_ESTIMATORS)})"
    )
