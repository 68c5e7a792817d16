"""Pure functions: frame sampling, tracking, geometry, LoG, input listing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hfl.backends.face import FaceBackendConfig, load_detector, load_landmarker
from hfl.imageops import central_half_width, hull_area_fraction, in_central_box, landmark_centroid, log_blur
from hfl.inputs import list_inputs, video_id_for
from hfl.tracking import Tracker
from hfl.video import DecodeError, open_frames, sample_indices


def test_sample_indices_rate_and_cap() -> None:
    assert sample_indices(120, 30.0, 10.0, 100) == list(range(0, 120, 3))
    capped = sample_indices(3000, 30.0, 10.0, 5)
    assert len(capped) == 5 and capped[0] == 0 and capped[-1] >= 2900  # spread, not the first 5
    assert sample_indices(1, 30.0, 2.0, 10) == [0]
    assert sample_indices(0, 30.0, 2.0, 10) == []


def test_tracker_links_overlapping_boxes_and_splits_far_ones() -> None:
    t = Tracker("v", min_iou=0.3)
    assert t.update([(0, 0, 10, 10)]) == ["v_t0"]
    assert t.update([(1, 1, 11, 11), (50, 50, 60, 60)]) == ["v_t0", "v_t1"]
    assert t.update([(51, 50, 61, 60)]) == ["v_t1"]
    assert t.update([(200, 200, 210, 210)]) == ["v_t2"]


def test_central_box_definition() -> None:
    # axis reading: the box spans 20 % of W and of H
    assert in_central_box(0.5, 0.5, 0.2, "axis")
    assert in_central_box(0.6, 0.4, 0.2, "axis")
    assert not in_central_box(0.61, 0.5, 0.2, "axis")
    assert not in_central_box(0.5, 0.39, 0.2, "axis")
    # area reading (default): the frame-shaped box covering 20 % of the area, half-side sqrt(0.2)/2
    assert (2 * central_half_width(0.2, "area")) ** 2 == pytest.approx(0.2)
    assert (2 * central_half_width(0.2, "axis")) ** 2 == pytest.approx(0.04)
    assert in_central_box(0.61, 0.5, 0.2) and in_central_box(0.72, 0.28, 0.2)
    assert not in_central_box(0.73, 0.5, 0.2) and not in_central_box(0.5, 0.27, 0.2)
    with pytest.raises(ValueError, match="centring rule"):
        in_central_box(0.5, 0.5, 0.2, "radius")


@pytest.mark.parametrize(
    ("box", "axis_ok", "area_ok"),
    [
        ((300, 160, 340, 200), True, True),  # dead centre of a 640x360 frame
        ((380, 150, 440, 210), False, True),  # face centred at x = 0.64: passes only by area
        ((440, 150, 500, 210), False, False),  # x = 0.73: outside both
        ((300, 60, 340, 100), False, False),  # y = 0.22: outside both
        ((280, 100, 360, 180), False, True),  # y = 0.389: just outside the axis box, inside the area box
    ],
)
def test_centring_rule_on_hand_made_boxes(
    box: tuple[int, int, int, int], axis_ok: bool, area_ok: bool
) -> None:
    """Landmarks spread inside a hand-made face box; the quality stage's centroid, both readings."""
    x0, y0, x1, y1 = box
    gx, gy = np.meshgrid(np.linspace(x0, x1, 17), np.linspace(y0, y1, 4))
    lms = np.stack([gx.ravel()[:68], gy.ravel()[:68]], 1).astype(np.float32)
    cx, cy = landmark_centroid(lms, 640, 360)
    assert in_central_box(cx, cy, 0.2, "axis") is axis_ok
    assert in_central_box(cx, cy, 0.2, "area") is area_ok


def test_log_blur_separates_sharp_from_blurred_and_is_resolution_free(astronaut: np.ndarray) -> None:
    det = load_detector(FaceBackendConfig())
    lm = load_landmarker(FaceBackendConfig())
    face = det.detect(astronaut)[0]
    pts = lm.landmarks(astronaut, face)
    sharp = log_blur(astronaut, pts)
    blurred = log_blur(cv2.GaussianBlur(astronaut, (0, 0), 3), pts)
    assert sharp > 50 > blurred
    big = cv2.resize(astronaut, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    assert log_blur(big, pts * 2) == pytest.approx(sharp, rel=0.35)
    assert 0.0 < hull_area_fraction(pts, 512, 512) < 0.1


def test_decoding_real_video_with_decord_and_pyav(carphone) -> None:
    dec, frames = open_frames(str(carphone), fps=2.0, cap=64)
    got = list(frames)
    assert dec == "decord" and [f.index for f in got] == sample_indices(120, 29.97, 2.0, 64)
    assert got[0].rgb.shape == (144, 176, 3)
    dec2, frames2 = open_frames(str(carphone), fps=2.0, cap=64, decoder="pyav")
    got2 = list(frames2)
    assert dec2 == "pyav" and [f.index for f in got2] == [f.index for f in got]
    assert np.abs(got2[3].rgb.astype(int) - got[3].rgb.astype(int)).mean() < 3


def test_bad_files_raise_decode_errors(bad_inputs) -> None:
    for name, reason in [
        ("zero.mp4", "empty_file"),
        ("text.mp4", "decode_error"),
        ("truncated.mp4", "decode_error"),
    ]:
        with pytest.raises(DecodeError) as err:
            open_frames(str(bad_inputs / name), 2.0, 8)
        assert err.value.reason == reason


def test_list_inputs_folder_and_list_file(tmp_path, carphone) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / "b.mov").write_bytes(b"1")
    (tmp_path / ".hidden.mp4").write_bytes(b"1")
    names = [i.name for i in list_inputs(str(tmp_path))]
    assert names == ["a/x.mp4", "b.mov"]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{carphone}\npkg:skimage/data/astronaut.png\n")
    items = list_inputs(str(lst))
    assert [i.path for i in items][0] == str(carphone) and items[1].path.endswith("astronaut.png")
    assert video_id_for("a/x.mp4") == video_id_for("a/x.mp4") != video_id_for("b/x.mp4")


def test_audio_only_container_is_rejected_before_decord(tmp_path) -> None:
    import av

    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    with pytest.raises(DecodeError) as err:
        open_frames(str(path), 2.0, 8)
    assert err.value.reason == "no_video_stream"
