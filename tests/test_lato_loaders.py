"""Loaders round-trip tiny checkpoints written in the released formats (Step1X-Edit DiT, BFL and diffusers
FLUX VAE, LaTo tokenizer / landmark adapter / kohya LoRA, Qwen2.5-VL folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hfl.lato import loaders
from hfl.lato.dit import LaToConfig, LaToDiT
from hfl.lato.tokenizer import LandmarkTokenizer, TokenizerConfig
from hfl.lato.vae import VAEConfig

# Key names as they appear in the released files (Step1X-Edit i1258 / LaTo lato.safetensors, BFL ae).
STEP1X_KEYS = [
    "img_in.weight",
    "txt_in.weight",
    "time_in.in_layer.weight",
    "vector_in.out_layer.bias",
    "double_blocks.0.img_mod.lin.weight",
    "double_blocks.0.img_attn.qkv.weight",
    "double_blocks.0.img_attn.norm.query_norm.scale",
    "double_blocks.0.txt_mlp.2.weight",
    "single_blocks.0.linear1.weight",
    "single_blocks.0.norm.key_norm.scale",
    "single_blocks.0.modulation.lin.bias",
    "final_layer.adaLN_modulation.1.weight",
    "final_layer.linear.weight",
    "connector.S.individual_token_refiner.blocks.0.self_attn_qkv.weight",
    "connector.S.t_embedder.mlp.0.weight",
    "connector.S.c_embedder.linear_1.weight",
    "connector.global_proj_out.weight",
    "connector.scale_factor",
]
VAE_KEYS = [
    "encoder.down.0.block.0.norm1.weight",
    "encoder.down.0.downsample.conv.weight",
    "encoder.mid.attn_1.q.weight",
    "decoder.up.1.upsample.conv.weight",
    "decoder.up.0.block.1.conv2.weight",
    "decoder.norm_out.weight",
]
TOKENIZER_KEYS = [
    "encoder.conv_in.weight",
    "encoder.resnet1.0.block.2.weight",
    "encoder.resnet2.conv_short.weight",
    "encoder.attn2.proj_out.weight",
    "decoder.conv_out.bias",
    "vq.codebook",
]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _step1x_checkpoint(tmp_path: Path) -> tuple[Path, LaToDiT]:
    torch.manual_seed(0)
    ref = LaToDiT(LaToConfig.tiny())
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("landmark_")}  # not in Step1X-Edit
    assert set(STEP1X_KEYS) <= set(sd)
    path = tmp_path / "step1x-edit-tiny.safetensors"
    save_file(sd, str(path))
    return path, ref


def test_step1x_dit_and_landmark_adapter_round_trip(tmp_path: Path) -> None:
    path, ref = _step1x_checkpoint(tmp_path)
    adapter = {"weight": torch.randn(64, 32), "bias": torch.randn(64)}
    torch.save(adapter, tmp_path / "landmark_in.pth")  # the release's format
    model = loaders.load_step1x_dit(
        path, LaToConfig.tiny(), tmp_path / "landmark_in.pth", dtype=torch.float32
    )
    for k, v in ref.state_dict().items():
        if not k.startswith("landmark_"):
            assert torch.equal(model.state_dict()[k], v), k
    assert torch.equal(model.landmark_in.weight, adapter["weight"])
    assert not model.landmark_uncond.is_meta and model.landmark_uncond.abs().sum() > 0


def test_dit_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="step1x.safetensors"):
        loaders.load_step1x_dit(tmp_path / "step1x.safetensors", LaToConfig.tiny())
    path, _ = _step1x_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="does not match"):
        loaders.load_step1x_dit(path, LaToConfig.tiny(hidden_size=128, num_heads=8))
    sd = {"img_in.weight": torch.zeros(64, 64)}
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        loaders.load_step1x_dit(tmp_path / "bad.safetensors", LaToConfig.tiny())


def test_tokenizer_release_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = TokenizerConfig(channels=(32, 64), code_dim=48, codebook_size=40, num_res_blocks=2)
    ref = LandmarkTokenizer(cfg).eval()
    with torch.no_grad():
        ref.vq.codebook.normal_()
    release = {
        k: v
        for k, v in ref.state_dict().items()
        if k.startswith(("encoder.", "decoder.")) or k == "vq.codebook"
    }
    assert set(TOKENIZER_KEYS) <= set(release)
    save_file(release, str(tmp_path / "model.safetensors"))
    model = loaders.load_lato_tokenizer(tmp_path / "model.safetensors")
    assert model.config.channels == (32, 64) and model.config.code_dim == 48
    assert model.config.codebook_size == 40 and model.config.num_res_blocks == 2
    x = torch.rand(3, 68, 2) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x).recon, ref(x).recon)
    assert torch.equal(model.vq.ema_sum, model.vq.codebook) and bool(model.vq.initialized)
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        loaders.load_lato_tokenizer(tmp_path / "nothing.safetensors")


def _bfl_to_diffusers(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """BFL -> diffusers AutoencoderKL names (written independently of the loader's inverse map)."""
    out = {}
    for k, v in sd.items():
        n = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", k)
        n = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", n)
        n = re.sub(
            r"^decoder\.up\.(\d+)\.block\.(\d+)\.",
            lambda m: f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.resnets.{m.group(2)}.",
            n,
        )
        n = re.sub(
            r"^decoder\.up\.(\d+)\.upsample\.",
            lambda m: f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0.",
            n,
        )
        n = n.replace("mid.block_1.", "mid_block.resnets.0.").replace("mid.block_2.", "mid_block.resnets.1.")
        for a, b in [
            ("mid.attn_1.norm.", "mid_block.attentions.0.group_norm."),
            ("mid.attn_1.q.", "mid_block.attentions.0.to_q."),
            ("mid.attn_1.k.", "mid_block.attentions.0.to_k."),
            ("mid.attn_1.v.", "mid_block.attentions.0.to_v."),
            ("mid.attn_1.proj_out.", "mid_block.attentions.0.to_out.0."),
            ("nin_shortcut", "conv_shortcut"),
            ("encoder.norm_out", "encoder.conv_norm_out"),
            ("decoder.norm_out", "decoder.conv_norm_out"),
        ]:
            n = n.replace(a, b)
        if "attentions.0.to_" in n and n.endswith("weight"):
            v = v[:, :, 0, 0]
        out[n] = v
    return out


def test_flux_vae_loads_bfl_and_diffusers_layouts(tmp_path: Path) -> None:
    """BFL names (Step1X-Edit's vae.safetensors, here the reference goldens' tiny one) are converted to
    diffusers' AutoencoderKL exactly as an independent rename would; a diffusers file loads as it is."""
    from safetensors.torch import load_file

    ref_dir = Path(__file__).parent / "data" / "reference"
    bfl = {k: v.float() for k, v in load_file(str(ref_dir / "vae.safetensors")).items()}
    assert set(VAE_KEYS) - {"decoder.up.1.upsample.conv.weight"} <= set(bfl)  # 2 levels: no up.1 upsample
    cfg = VAEConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=4)
    vae = loaders.load_flux_vae(ref_dir / "vae.safetensors", cfg)
    want = _bfl_to_diffusers(bfl, len(cfg.ch_mult))
    got = vae.ae.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v.reshape(got[k].shape)), k
    save_file(got, str(tmp_path / "diffusers.safetensors"))
    again = loaders.load_flux_vae(tmp_path / "diffusers.safetensors", cfg)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(again.decode(again.encode(x)), vae.decode(vae.encode(x)))
    with pytest.raises(ValueError, match="does not match"):
        loaders.load_flux_vae(ref_dir / "vae.safetensors", VAEConfig(ch=32, ch_mult=(1, 1, 1), z_channels=4))


def test_kohya_lora_merge_and_peft_round_trip(tmp_path: Path) -> None:
    from training.lato import add_lora

    torch.manual_seed(0)
    base = LaToDiT(LaToConfig.tiny())
    r, alpha = 4, 2.0
    targets = {"double_blocks.0.img_attn.qkv": (64, 192), "single_blocks.1.linear2": (320, 64)}
    sd = {}
    for mod, (fan_in, fan_out) in targets.items():
        name = "lora_unet_" + mod.replace(".", "_")
        sd[f"{name}.lora_down.weight"] = torch.randn(r, fan_in)
        sd[f"{name}.lora_up.weight"] = torch.randn(fan_out, r)
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(sd, str(tmp_path / "lato.safetensors"))
    merged = LaToDiT(LaToConfig.tiny())
    merged.load_state_dict(base.state_dict())
    assert loaders.merge_kohya_lora(merged, tmp_path / "lato.safetensors") == 2
    name = "lora_unet_double_blocks_0_img_attn_qkv"
    delta = (alpha / r) * sd[f"{name}.lora_up.weight"] @ sd[f"{name}.lora_down.weight"]
    torch.testing.assert_close(
        merged.double_blocks[0].img_attn.qkv.weight, base.double_blocks[0].img_attn.qkv.weight + delta
    )

    peft_model = add_lora(base, rank=r, alpha=8.0)
    assert loaders.load_kohya_into_peft(peft_model, tmp_path / "lato.safetensors") == 2
    args = (
        torch.randn(1, 6, 64),
        torch.randn(1, 6, 64),
        (2, 3),
        torch.rand(1),
        torch.randn(1, 3, 32),
        torch.ones(1, 3),
        torch.randn(1, 68, 32),
        torch.rand(1, 68, 2) * 30,
        (32, 48),
    )
    with torch.no_grad():
        torch.testing.assert_close(peft_model(*args), merged(*args), rtol=1e-4, atol=1e-4)
    exported = loaders.peft_to_kohya(peft_model)
    assert (
        f"{name}.lora_down.weight" in exported and len(exported) == 3 * 26
    )  # 10 per double + 3 per single block
    save_file(exported, str(tmp_path / "export.safetensors"))
    remerged = LaToDiT(LaToConfig.tiny())
    remerged.load_state_dict({k: v for k, v in merged.state_dict().items()})
    remerged.load_state_dict(_unmerged_base_state(peft_model))
    loaders.merge_kohya_lora(remerged, tmp_path / "export.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(remerged(*args), merged(*args), rtol=1e-4, atol=1e-4)


def _unmerged_base_state(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = peft_model.get_base_model().state_dict()
    return {k.replace(".base_layer", ""): v for k, v in sd.items() if "lora_" not in k}


def test_text_encoder_round_trip(tmp_path: Path) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with pytest.raises(FileNotFoundError, match="config.json"):
        loaders.load_text_encoder(tmp_path, with_processor=False)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=300,
            bos_token_id=1,
            eos_token_id=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            fullatt_block_indexes=[0],
        ),
    )
    torch.manual_seed(0)
    ref = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    ref.save_pretrained(tmp_path / "qwen")
    enc = loaders.load_text_encoder(
        tmp_path / "qwen", dtype=torch.float32, with_processor=False, max_length=16, drop_prefix=3
    )
    ids = torch.randint(3, 300, (2, 10))
    emb, mask = enc.encode_ids(ids, torch.ones_like(ids))
    with torch.no_grad():
        want = ref(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert emb.shape == (2, 16, 32) and mask.sum(1).tolist() == [7, 7]
    torch.testing.assert_close(emb[:, :7], want[:, 3:])
    assert not any(p.requires_grad for p in enc.parameters())
