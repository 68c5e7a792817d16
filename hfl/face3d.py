"""A 3-D face fitted to 68 landmarks: turn it by a yaw/pitch and re-project (geometric editing and landmark
prediction without a learned model).

Fit: PnP against insightface's 3-D mean face (hfl.landmarks) gives the head rotation R and translation t;
each landmark is then lifted to 3-D at the depth its mean-face point has under (R, t), so the fitted
points re-project exactly onto the observed landmarks (the person's own 2-D shape is kept, depth comes
from the mean face). Turning rotates these 3-D points about the head centre and projects them again.

Angle conventions are those of `hfl.landmarks.head_pose`: yaw > 0 turns the face towards image right,
pitch > 0 tilts it up. Camera: pinhole, focal length max(W, H), principal point at the image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hfl.landmarks import as_points, mean_face_3d


@dataclass
class FaceFit:
    """A face lifted to 3-D camera coordinates (x right, y down, z away from the viewer)."""

    points3d: np.ndarray  # (68, 3) camera-space points that project onto the observed landmarks
    rotation: np.ndarray  # (3, 3) head rotation from PnP (model -> camera)
    camera: np.ndarray  # (3, 3) intrinsics
    width: int
    height: int

    @property
    def centre(self) -> np.ndarray:
        """Rotation centre: the centroid of the 3-D points, pushed back by half the face depth."""
        return self.points3d.mean(axis=0)

    def project(self, points3d: np.ndarray | None = None) -> np.ndarray:
        """(68, 2) pixel coordinates of camera-space points (default: the fitted ones)."""
        p = self.points3d if points3d is None else points3d
        uvw = p @ self.camera.T
        return uvw[:, :2] / uvw[:, 2:3]


def camera_matrix(width: int, height: int) -> np.ndarray:
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def fit_face(landmarks: np.ndarray | list[float], width: int, height: int) -> FaceFit:
    """Lift 68 landmarks (pixels) to 3-D with the mean face's depth (see the module docstring)."""
    pts = as_points(landmarks)
    model = mean_face_3d()
    cam = camera_matrix(width, height)
    ok, rvec, tvec = cv2.solvePnP(model, pts, cam, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise ValueError("solvePnP failed")
    ok, rvec, tvec = cv2.solvePnP(model, pts, cam, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
    rot, _ = cv2.Rodrigues(rvec)
    depth = (model @ rot.T + tvec.reshape(1, 3))[:, 2]
    rays = np.c_[pts, np.ones(68)] @ np.linalg.inv(cam).T  # (68, 3) with z = 1
    return FaceFit(rays * depth[:, None], rot, cam, int(width), int(height))


def turn_matrix(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-space rotation that tilts a face by pitch (up) then turns it by yaw (towards image right):
    the order in which `head_pose` decomposes a pose, so a frontal face turned by (y, p) reads (y, p)."""
    ry = cv2.Rodrigues(np.array([0.0, -math.radians(yaw_deg), 0.0]))[0]
    rx = cv2.Rodrigues(np.array([-math.radians(pitch_deg), 0.0, 0.0]))[0]
    return ry @ rx


def turn_head(fit: FaceFit, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """The landmarks (68, 2) after turning the fitted head by yaw/pitch about its centre."""
    c = fit.centre
    moved = (fit.points3d - c) @ turn_matrix(yaw_deg, pitch_deg).T + c
    return fit.project(moved)


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Normalised 2-D face frame: (centroid, inter-ocular distance, 2x2 rotation aligning the eyes).

    to_frame(p) = (p - centroid) @ R.T / iod; from_frame(q) = q * iod @ R + centroid.
    """
    pts = as_points(landmarks)
    c = pts.mean(axis=0)
    eye = pts[45] - pts[36]
    iod = float(np.linalg.norm(eye))
    a = math.atan2(eye[1], eye[0])
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return c, iod, rot


def to_frame(landmarks: np.ndarray, frame: tuple[np.ndarray, float, np.ndarray]) -> np.ndarray:
    c, iod, rot = frame
    return (as_points(landmarks) - c) @ rot.T / iod


def from_frame(points: np.ndarray, frame: tuple[np.ndarray, float, np.ndarray]) -> np.ndarray:
    c, iod, rot = frame
    return np.asarray(points, np.float64) * iod @ rot + c
