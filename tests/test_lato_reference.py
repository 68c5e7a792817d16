"""hfl's LaTo against the official release, numerically.

``tests/data/reference`` holds small random models saved in the release's own formats and the outputs the
release's own modules computed from them (``scripts/reference_goldens.py``; commits in its README). Here
hfl loads the same files with its loaders and must reproduce those outputs. Tolerances are a few times
the float32 differences measured when the goldens were made (see the README's LaTo section).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hfl.lato import canvas as lcanvas
from hfl.lato import loaders
from hfl.lato.dit import LaToConfig
from hfl.lato.vae import VAEConfig, pack

REF = Path(__file__).parent / "data" / "reference"
G = load_file(str(REF / "goldens.safetensors"))
META = json.loads((REF / "goldens.json").read_text())

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _config(mode: str = "tokens") -> LaToConfig:
    d = META["dit"]
    return LaToConfig(
        in_channels=d["in_channels"],
        vec_in_dim=d["vec_in_dim"],
        context_in_dim=d["context_in_dim"],
        hidden_size=d["hidden_size"],
        mlp_ratio=d["mlp_ratio"],
        num_heads=d["num_heads"],
        depth=d["depth"],
        depth_single_blocks=d["depth_single_blocks"],
        axes_dim=tuple(d["axes_dim"]),
        theta=float(d["theta"]),
        qkv_bias=d["qkv_bias"],
        text_dim=META["text_dim"],
        connector_heads=META["connector_heads"],
        connector_depth=META["connector_depth"],
        landmark_mode=mode,
        landmark_dim=META["tokenizer"]["code_dim"],
    )


def _dit(mode: str = "tokens"):
    adapter = REF / "landmark_in.pth" if mode == "tokens" else None
    return loaders.load_step1x_dit(
        REF / "dit.safetensors", _config(mode), adapter, dtype=torch.float32
    ).eval()


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    """max |a - b| <= rel * max |b| (scale-aware, so one bound fits outputs of any magnitude)."""
    err = float((a.float() - b.float()).abs().max())
    scale = float(b.float().abs().max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel:g} x output scale {scale:.3g}"


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_matches_release() -> None:
    tok = loaders.load_lato_tokenizer(REF / "tokenizer.safetensors")
    norm = torch.from_numpy(lcanvas.normalise(G["tok.points"].numpy()))
    with torch.no_grad():
        _close(tok.encode(norm), G["tok.latents"], 1e-5)
        tokens, indices = tok.tokenize(norm)
        assert torch.equal(indices, G["tok.indices"])
        _close(tokens, G["tok.tokens"], 1e-5)
        _close(tok(norm).recon, G["tok.recon"], 1e-5)


# ----------------------------------------------------------------------------- DiT


@pytest.mark.parametrize("case", [0, 1])
def test_connector_matches_release(case: int) -> None:
    """Step1X-Edit's connector embeds 1000 * t (``Qwen2Connector.forward``: 'fix the times embedding bug')."""
    dit = _dit()
    with torch.no_grad():
        txt, vec = dit.connector(G["dit.text"], G[f"conn.{case}.t"], G["dit.mask"])
    _close(txt, G[f"conn.{case}.txt"], 1e-5)
    _close(vec, G[f"conn.{case}.vec"], 1e-5)


def _landmark_inputs(points: torch.Tensor, grid_hw: tuple[int, int]) -> dict:
    """Release-mode landmark inputs: 512-canvas points, the release's id frame (512 / grid_h per axis)."""
    return {"landmark_xy": points, "image_hw": lcanvas.release_landmark_frame(grid_hw)}


@pytest.mark.parametrize("case", range(len(META["dit_cases"])))
def test_dit_forward_matches_release(case: int) -> None:
    """Full LaTo DiT (connector, landmark adapter, location-mapped landmark ids, all blocks) at several t,
    on a square and a non-square latent grid."""
    dit = _dit()
    gh, gw = META["dit_cases"][case]["grid_hw"]
    with torch.no_grad():
        v = dit(
            noisy=G[f"dit.{case}.noisy"],
            source=G[f"dit.{case}.source"],
            grid_hw=(gh, gw),
            timesteps=G[f"dit.{case}.t"],
            text=G["dit.text"],
            text_mask=G["dit.mask"],
            landmark_tokens=G["dit.landmark_tokens"],
            **_landmark_inputs(G["dit.landmarks"], (gh, gw)),
        )
    _close(v, G[f"dit.{case}.velocity"], 2e-5)


def test_step1x_dit_matches_step1x_edit() -> None:
    """landmark_mode 'none' is Step1X-Edit's own DiT (same base weights, no landmark stream)."""
    dit = _dit("none")
    gh, gw = META["dit_cases"][1]["grid_hw"]
    with torch.no_grad():
        v = dit(
            noisy=G["dit.1.noisy"],
            source=G["dit.1.source"],
            grid_hw=(gh, gw),
            timesteps=G["dit.1.t"],
            text=G["dit.text"],
            text_mask=G["dit.mask"],
        )
    _close(v, G["step1x.velocity"], 2e-5)


# ----------------------------------------------------------------------------- LoRA


def test_kohya_lora_merge_matches_release(caplog: pytest.LogCaptureFixture) -> None:
    """Ranks 4 in the blocks, full-rank landmark_in, alpha = 0 (means alpha = rank), txt_in (kohya's
    input-layer filters merge it) and a key naming no module (kohya ignores it: skipped with a warning)."""
    dit = _dit()
    with caplog.at_level(logging.WARNING, logger="hfl.lato.loaders"):
        n = loaders.merge_kohya_lora(dit, REF / "lora.safetensors")
    assert "lora_unet_not_a_module" in caplog.text and "lora_unet_txt_in" not in caplog.text
    sd = dit.state_dict()
    blocks = [k for k in G if k.startswith("lora.") and k.endswith(".weight")]
    assert n == sum(1 for k in load_file(str(REF / "lora.safetensors")) if k.endswith("lora_down.weight")) - 1
    for key in blocks:
        _close(sd[key.removeprefix("lora.")], G[key], 1e-6)
    gh, gw = META["dit_cases"][0]["grid_hw"]
    with torch.no_grad():
        v = dit(
            noisy=G["dit.0.noisy"],
            source=G["dit.0.source"],
            grid_hw=(gh, gw),
            timesteps=G["dit.0.t"],
            text=G["dit.text"],
            text_mask=G["dit.mask"],
            landmark_tokens=G["dit.landmark_tokens"],
            **_landmark_inputs(G["dit.landmarks"], (gh, gw)),
        )
    _close(v, G["lora.velocity"], 2e-5)


# ----------------------------------------------------------------------------- schedule and sampling


@pytest.mark.parametrize("case", META["schedules"], ids=lambda c: f"{c['steps']}-{c['seq_len']}-{c['shift']}")
def test_schedule_matches_release(case: dict) -> None:
    from hfl.lato.sampling import schedule

    ours = schedule(case["steps"], case["seq_len"], shift=case["shift"])
    assert np.allclose(ours, case["timesteps"], atol=2e-7, rtol=0)


@pytest.mark.parametrize("steps", [1, 2])
def test_release_guidance_steps_match_release(steps: int) -> None:
    """``ImageGenerator.denoise`` with cfg 4: text CFG, landmark tokens in both branches."""
    from hfl.lato.sampling import GuidanceConfig, sample

    dit = _dit()
    tok = loaders.load_lato_tokenizer(REF / "tokenizer.safetensors")
    pts = G["sample.landmarks"]
    with torch.no_grad():
        tokens, _ = tok.tokenize(torch.from_numpy(lcanvas.normalise(pts.numpy())))
    gh, gw = META["sample"]["grid_hw"]
    text, mask = G["sample.text"], G["sample.mask"]
    g = GuidanceConfig.release(steps=steps)
    x = sample(
        dit,
        pack(G["sample.noise_latent"]),
        pack(G["sample.source_latent"]),
        (gh, gw),
        text[:1],
        mask[:1],
        text[1:],
        mask[1:],
        tokens,
        pts,
        lcanvas.release_landmark_frame((gh, gw)),
        g,
        timesteps=META["sample"]["timesteps"][: steps + 1],
    )
    _close(x, G[f"sample.after_{steps}"], 2e-5)


def test_three_branch_guidance_needs_learned_tokens() -> None:
    """The release ships no unconditional landmark tokens: landmark CFG without them is an error."""
    from hfl.lato.sampling import GuidanceConfig, sample

    dit = _dit()
    assert not dit.has_learned_uncond
    gh, gw = META["sample"]["grid_hw"]
    text, mask = G["sample.text"], G["sample.mask"]
    pts = G["sample.landmarks"]
    tokens = torch.zeros(1, 68, META["tokenizer"]["code_dim"])
    with pytest.raises(ValueError, match="no learned unconditional landmark tokens"):
        sample(
            dit,
            pack(G["sample.noise_latent"]),
            pack(G["sample.source_latent"]),
            (gh, gw),
            text[:1],
            mask[:1],
            text[1:],
            mask[1:],
            tokens,
            pts,
            lcanvas.release_landmark_frame((gh, gw)),
            GuidanceConfig(steps=1, text_scale=4.0, landmark_scale=4.0, uncond="learned"),
        )


# ----------------------------------------------------------------------------- VAE


def _vae_config() -> VAEConfig:
    v = META["vae"]
    return VAEConfig(
        ch=v["ch"],
        ch_mult=tuple(v["ch_mult"]),
        num_res_blocks=v["num_res_blocks"],
        z_channels=v["z_channels"],
        scale_factor=v["scale_factor"],
        shift_factor=v["shift_factor"],
    )


def test_vae_matches_step1x_edit() -> None:
    """Encoder moments, the posterior sample the release draws (same seed), and the decoder."""
    vae = loaders.load_flux_vae(REF / "vae.safetensors", _vae_config())
    with torch.no_grad():
        _close(vae.moments(G["vae.image"]), G["vae.moments"], 1e-5)
        torch.manual_seed(7)
        _close(vae.encode(G["vae.image"], sample=True), G["vae.posterior_sample"], 1e-5)
        _close(vae.decode(G["vae.z"]), G["vae.decoded"], 1e-5)


# ----------------------------------------------------------------------------- text preprocessing


@pytest.fixture(scope="module")
def tiny_processor(tmp_path_factory: pytest.TempPathFactory):
    from hfl.lato.qwen_tiny import load_tiny_qwen_processor, write_tiny_qwen_processor

    return load_tiny_qwen_processor(write_tiny_qwen_processor(tmp_path_factory.mktemp("qwen") / "tiny"))


class _Recorder(torch.nn.Module):
    """Stands in for Qwen2.5-VL: records its inputs, returns the goldens' fake last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("C", (), {"hidden_size": 4})()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[dict] = []

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, **vision):
        self.calls.append(
            {
                "input_ids": input_ids[0].tolist(),
                "attention_mask": attention_mask[0].tolist(),
                "image_grid_thw": vision["image_grid_thw"][0].tolist(),
            }
        )
        f = torch.tensor([1e-3, 7e-3, 3e-2, 1.1e-1])
        hs = torch.sin(input_ids[..., None].double() * f).float().to(torch.bfloat16)
        return type("O", (), {"hidden_states": [hs]})()


def test_step1x_prefix_is_the_release_prefix() -> None:
    from hfl.lato.text_encoder import STEP1X_PREFIX

    assert STEP1X_PREFIX == META["step1x_prefix"]


@pytest.mark.parametrize("case", range(len(META["text"])), ids=lambda i: META["text"][i]["instruction"][:20])
def test_text_preprocessing_matches_step1x_edit(case: int, tiny_processor) -> None:
    """Quotes and apostrophes: Step1X-Edit rewrites ' “ ” to ", tokenises quoted spans per character and
    splices the re-tokenised text after <|vision_end|>; the mask is ``ids > 0``; nothing is dropped but the
    217-token prefix."""
    from hfl.lato.text_encoder import QwenVLTextEncoder

    c = META["text"][case]
    rec = _Recorder()
    enc = QwenVLTextEncoder(rec, tiny_processor, max_length=2048, drop_prefix=217)
    h, w = c["image_hw"]
    rgb = np.random.default_rng(case).integers(0, 256, (h, w, 3), dtype=np.uint8)
    emb, mask = enc([c["instruction"]], [rgb])
    got = rec.calls[0]
    assert got["image_grid_thw"] == c["image_grid_thw"]
    assert got["input_ids"] == c["input_ids"]
    assert got["attention_mask"] == c["attention_mask"]
    n = int(mask[0].sum())
    assert n == c["kept"]
    assert torch.equal(emb[0, :n].float(), G[f"text.{case}.embeddings"])
