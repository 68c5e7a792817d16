"""Generator and VLM-validator plumbing: the HTTP image-edit request (built, never sent), the diffusion
loaders' config and file checks, and the Qwen2.5-VL edit judge on a tiny random checkpoint."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
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


# ----------------------------------------------------------------------------- tiny diffusion checkpoints


def _write_tiny_flux_kontext(folder: Path) -> Path:
    """A random FLUX.1-Kontext pipeline (1+1 transformer blocks, 4-channel 1-level VAE, 2-layer CLIP and T5,
    word-level tokenizers) saved in the diffusers folder layout."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizerFast,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    torch.manual_seed(0)
    tk = folder / "tokenizers"
    tk.mkdir(parents=True)
    vocab = {f"w{i}": i for i in range(100)}
    vocab.update({"<pad>": 100, "</s>": 101, "<unk>": 102, "<|startoftext|>": 103, "<|endoftext|>": 104})
    bpe = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.save(str(tk / "clip.json"))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"w{i}", -1.0) for i in range(100)]
    uni = Tokenizer(models.Unigram(pieces, unk_id=2))
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.save(str(tk / "t5.json"))
    clip_tok = CLIPTokenizerFast(
        tokenizer_file=str(tk / "clip.json"), unk_token="<unk>", bos_token="<|startoftext|>",
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=77,
    )  # fmt: skip
    t5_tok = T5TokenizerFast(
        tokenizer_file=str(tk / "t5.json"), unk_token="<unk>", eos_token="</s>", pad_token="<pad>",
        extra_ids=0, model_max_length=512,
    )  # fmt: skip
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=105, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, projection_dim=32, max_position_embeddings=77, bos_token_id=103,
            eos_token_id=104, pad_token_id=104,
        )
    )  # fmt: skip
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=103, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=1,
        )
    )  # fmt: skip
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    )  # fmt: skip
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=clip_tok,
        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder / "flux")
    return folder / "flux"


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory) -> Path:
    return _write_tiny_flux_kontext(tmp_path_factory.mktemp("flux"))


def test_flux_kontext_loader_on_tiny_checkpoint(tiny_flux: Path, single_torch_thread) -> None:
    cfg = GeneratorBackendConfig(
        name="flux-kontext", path=str(tiny_flux), device="cpu", dtype="float32", steps=2, max_side=64
    )
    assert check_generator(cfg) == []
    g = load_generator(cfg)
    img = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    out = g.edit(img, None, EditSpec("pose", yaw_units=1), "Turn their head 30° right.", 1)
    assert out.shape == img.shape and out.dtype == np.uint8  # back at the source size (plumbing only)
    assert type(g._model).__name__ == "FluxKontextPipeline"


def test_step1x_loader_runs_the_folders_pipeline_class(
    tiny_flux: Path, tmp_path, single_torch_thread
) -> None:
    folder = tmp_path / "step1x"
    shutil.copytree(tiny_flux, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "Step1XEditPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "pipeline.py").write_text(
        "from diffusers import FluxKontextPipeline\n\n\nclass Step1XEditPipeline(FluxKontextPipeline):\n"
        "    pass\n"
    )
    cfg = GeneratorBackendConfig(
        name="step1x-edit", path=str(folder), device="cpu", dtype="float32", steps=2, max_side=64
    )
    assert any("trust_pipeline_code" in e for e in check_generator(cfg))  # no code runs without consent
    cfg.trust_pipeline_code = True
    g = load_generator(cfg)
    img = (np.random.default_rng(1).random((32, 48, 3)) * 255).astype(np.uint8)
    out = g.edit(img, None, EditSpec("pose", pitch_units=1), "Turn their head 30° up.", 2)
    assert out.shape == img.shape and type(g._model).__name__ == "Step1XEditPipeline"
