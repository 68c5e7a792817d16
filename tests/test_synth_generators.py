"""Generator and VLM-validator plumbing: the HTTP image-edit request (built, never sent), the diffusion
loaders' config and file checks, and the Qwen2.5-VL edit judge on a tiny random checkpoint."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from hfl.backends.base import BackendUnavailable
from hfl.backends.generator import (
    GeneratorBackendConfig,
    HttpGenerator,
    check_generator,
    load_generator,
)
from hfl.editing import EditSpec


def test_http_request_building_and_parsing(monkeypatch) -> None:
    monkeypatch.setenv("HFL_EDIT_API_BASE", "https://edit.example.invalid/v1/")
    monkeypatch.setenv("HFL_EDIT_API_KEY", "k-123")
    g = load_generator(GeneratorBackendConfig(name="http", model="flux-kontext-pro"))
    assert isinstance(g, HttpGenerator)
    img = np.zeros((24, 32, 3), np.uint8)
    req = g.build_request(img, "Turn their head 30° left.", 7)
    assert req.method == "POST" and req.url == "https://edit.example.invalid/v1/images/edits"
    assert req.headers["Authorization"] == "Bearer k-123"
    body = req.body
    assert (
        b"Turn their head 30\xc2\xb0 left." in body
        and b'name="image"' in body
        and b"flux-kontext-pro" in body
    )
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buf, format="PNG")
    answer = json.dumps({"data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]}).encode()
    out = HttpGenerator.parse_response(answer, (32, 24))
    assert out.shape == (24, 32, 3) and out[..., 0].min() == 255
    with pytest.raises(ValueError):
        HttpGenerator.parse_response(b'{"error": "quota"}', (32, 24))


def test_http_needs_url_and_key(monkeypatch) -> None:
    monkeypatch.delenv("HFL_EDIT_API_BASE", raising=False)
    monkeypatch.delenv("HFL_EDIT_API_KEY", raising=False)
    errors = check_generator(GeneratorBackendConfig(name="http"))
    assert any("base_url" in e for e in errors) and any("api_key" in e for e in errors)
    with pytest.raises(BackendUnavailable):
        load_generator(GeneratorBackendConfig(name="http"))


@pytest.mark.parametrize("name", ["flux-kontext", "step1x-edit"])
def test_diffusion_loader_checks(tmp_path, name) -> None:
    assert any("path" in e for e in check_generator(GeneratorBackendConfig(name=name)))
    cfg = GeneratorBackendConfig(name=name, path=str(tmp_path))
    assert any("model_index.json" in e for e in check_generator(cfg))
    with pytest.raises(BackendUnavailable):
        load_generator(cfg)
    (tmp_path / "model_index.json").write_text("{}")
    errors = check_generator(cfg)
    import importlib.util

    assert errors == ([] if importlib.util.find_spec("diffusers") else [errors[0]])
    assert check_generator(GeneratorBackendConfig(name="nope"))[0].startswith("backends.generator.name")


def test_geometric_generator_protocol(astronaut) -> None:
    from hfl.backends.face import FaceBackendConfig, load_detector, load_landmarker

    cfg = FaceBackendConfig()
    box = load_detector(cfg).detect(astronaut)[0]
    lms = load_landmarker(cfg).landmarks(astronaut, box)
    g = load_generator(GeneratorBackendConfig())
    spec = EditSpec("expression", "happy", "strongly")
    out = g.edit(astronaut, lms, spec, spec.instruction(), 0)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - astronaut.astype(int)).max() > 30  # the mouth moved
    assert np.array_equal(out, g.edit(astronaut, lms, spec, spec.instruction(), 1))  # deterministic


@pytest.mark.slow
def test_vlm_edit_judge_on_tiny_qwen(tmp_path, astronaut) -> None:
    from hfl.backends.vlm import VlmBackendConfig, load_vlm
    from hfl.stages.validate import VlmEditJudge
    from tests.test_vlm_clip_backends import _write_tiny_qwen

    folder = _write_tiny_qwen(tmp_path / "qwen")
    judge = VlmEditJudge(load_vlm(VlmBackendConfig(path=str(folder), max_new_tokens=4)))
    face = np.ascontiguousarray(astronaut[20:220, 130:330])
    (req,) = judge.requests(face, face, "Turn their head 30° left.")
    assert len(req.images) == 2 and any("Turn their head 30° left." in str(p) for p in req.parts)
    score = judge.score(face, face, "Turn their head 30° left.")
    assert score is None or 0.0 <= score <= 1.0  # a random model: plumbing only
