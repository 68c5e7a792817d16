"""hfl.face3d: a face fitted to 68 points turns by the asked yaw/pitch (re-measured with head_pose)."""

from __future__ import annotations

import numpy as np
import pytest

from hfl.face3d import face_frame, fit_face, from_frame, to_frame, turn_head
from hfl.landmarks import head_pose
from tests.test_pairs import face, project


def test_fit_reprojects_exactly_and_frontal_turns_are_exact() -> None:
    pts = project()
    fit = fit_face(pts, 512, 512)
    assert np.abs(fit.project() - pts).max() < 1e-6
    for yaw, pitch in ((30, 0), (-30, 0), (0, 20), (30, 30), (-60, -30)):
        y, p, r = head_pose(turn_head(fit, yaw, pitch), 512, 512)
        assert (y, p, r) == pytest.approx((yaw, pitch, 0.0), abs=0.5)


def test_turning_a_real_face(astronaut) -> None:
    _, pts = face(astronaut)
    y0, p0, _ = head_pose(pts, 512, 512)
    fit = fit_face(pts, 512, 512)
    for yaw, pitch in ((30, 0), (-30, 0), (0, 30), (0, -30)):
        y, p, _ = head_pose(turn_head(fit, yaw, pitch), 512, 512)
        assert y - y0 == pytest.approx(yaw, abs=3) and p - p0 == pytest.approx(pitch, abs=3)


def test_face_frame_round_trip(astronaut) -> None:
    _, pts = face(astronaut)
    fr = face_frame(pts)
    q = to_frame(pts, fr)
    assert np.linalg.norm(q[45] - q[36]) == pytest.approx(1.0) and abs(q[45, 1] - q[36, 1]) < 1e-9
    assert np.abs(from_frame(q, fr) - pts).max() < 1e-9
