"""Weight loaders for local files (no hub access): Step1X-Edit (DiT, FLUX VAE, Qwen2.5-VL) and the released
LaTo files (landmark tokenizer, landmark adapter, LoRA).

Expected layout (as downloaded by the official ``scripts/download_model.sh``)::

    models/LaTo/lato/lato.safetensors        DiT (Step1X-Edit key names: img_in, double_blocks.*, connector.*)
    models/LaTo/lato/vae.safetensors         FLUX VAE (BFL key names: encoder.down.0.block.0.norm1.weight)
    models/LaTo/Po_VQVAE/model.safetensors   landmark tokenizer (encoder.*, decoder.*, vq.codebook)
    models/LaTo/lora/lato.safetensors        LoRA, kohya format (lora_unet_<module>.lora_down/lora_up/alpha)
    landmark_in.pth                          adapter: torch.save({"weight", "bias"}); in the release's git
                                             checkout root, beside models/ (its scripts load it from there)
    models/Qwen/Qwen2.5-VL-7B-Instruct/      Hugging Face folder

Every loader fails with ``FileNotFoundError`` naming the missing files, and with ``ValueError`` listing
unexpected / missing keys when a file does not match the model.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from hfl.lato.dit import LaToConfig, LaToDiT
from hfl.lato.tokenizer import LandmarkTokenizer, TokenizerConfig
from hfl.lato.vae import FluxVAE, VAEConfig

KOHYA_PREFIX = "lora_unet"
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files


def require_files(folder: str | Path, names: Iterable[str], what: str) -> None:
    """Raise FileNotFoundError naming every file of ``names`` missing in ``folder``."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what}: {folder} does not exist")
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"{what}: missing {', '.join(missing)} in {folder}")


def weight_files(path: str | Path, what: str) -> list[Path]:
    """Safetensors files of a checkpoint: a file, or a folder with ``*.safetensors`` (sharded index ok)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    index = sorted(path.glob("*.safetensors.index.json"))
    if index:
        names = sorted(set(json.loads(index[0].read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).exists()]
        if missing:
            raise FileNotFoundError(
                f"{what}: missing {', '.join(missing)} in {path} (listed in {index[0].name})"
            )
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{what}: no .safetensors weights in {path}")
    return files


def read_state_dict(path: str | Path, what: str, device: str = "cpu") -> dict[str, Tensor]:
    """All tensors of a safetensors checkpoint (file or folder) or a torch ``.pth``/``.pt`` file."""
    path = Path(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        if not path.is_file():
            raise FileNotFoundError(f"{what}: {path} does not exist")
        sd = torch.load(path, map_location=device, weights_only=True)
        return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    from safetensors.torch import load_file

    out: dict[str, Tensor] = {}
    for f in weight_files(path, what):
        out.update(load_file(str(f), device=device))
    return out


def _load_into(
    model: nn.Module, sd: dict[str, Tensor], what: str, allowed_missing: Iterable[str] = ()
) -> list[str]:
    """``load_state_dict(assign=True)``; unexpected keys or missing keys outside ``allowed_missing``
    (regexes) raise ValueError. Returns the allowed missing keys."""
    try:
        res = model.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{what}: checkpoint does not match the model: {str(e)[:2000]}") from e
    bad_missing = [k for k in res.missing_keys if not any(re.fullmatch(p, k) for p in allowed_missing)]
    if res.unexpected_keys or bad_missing:
        raise ValueError(
            f"{what}: checkpoint does not match the model: missing {bad_missing[:20]} "
            f"({len(bad_missing)}), unexpected {res.unexpected_keys[:20]} ({len(res.unexpected_keys)})"
        )
    return list(res.missing_keys)


def _materialize(model: nn.Module, device: str) -> None:
    """Give parameters and buffers still on ``meta`` (not in the checkpoint) real storage and their init."""
    for mod in model.modules():
        if any(p.is_meta for p in mod.parameters(recurse=False)):
            mod.to_empty(device=device, recurse=False)
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            for name, p in mod.named_parameters(recurse=False):
                if name == "landmark_uncond":
                    with torch.no_grad():
                        p.normal_(0.0, 0.02)


# ----------------------------------------------------------------------------- Step1X-Edit / LaTo DiT


def load_step1x_dit(
    path: str | Path,
    config: LaToConfig | None = None,
    landmark_adapter: str | Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cpu",
) -> LaToDiT:
    """LaTo DiT from a Step1X-Edit (or ``lato.safetensors``) checkpoint.

    Step1X-Edit checkpoints have no ``landmark_in`` / ``landmark_uncond``: they are initialised fresh
    (or ``landmark_in`` is read from ``landmark_adapter``). Built on the meta device, so a 12B model is
    never initialised twice.
    """
    sd = read_state_dict(path, "Step1X-Edit DiT")
    with torch.device("meta"):
        model = LaToDiT(config or LaToConfig())
    sd = {k: v.to(dtype) for k, v in sd.items()}
    _load_into(model, sd, f"Step1X-Edit DiT {path}", allowed_missing=[r"landmark_in\..*", r"landmark_uncond"])
    _materialize(model, device)
    model.has_learned_uncond = "landmark_uncond" in sd
    if landmark_adapter is not None:
        load_landmark_adapter(model, landmark_adapter)
    return model.to(device=device, dtype=dtype)


def load_landmark_adapter(model: LaToDiT, path: str | Path) -> None:
    """Release's ``landmark_in.pth`` ({"weight", "bias"}) or a safetensors with ``landmark_in.*`` keys."""
    sd = read_state_dict(path, "landmark adapter")
    sd = {
        k.removeprefix("landmark_in."): v
        for k, v in sd.items()
        if k.startswith("landmark_in.") or "." not in k
    }
    if set(sd) != {"weight", "bias"}:
        raise ValueError(f"landmark adapter {path}: expected weight and bias, got {sorted(sd)}")
    if not hasattr(model, "landmark_in"):
        raise ValueError("landmark adapter: the model has landmark_mode != 'tokens'")
    model.landmark_in.load_state_dict({k: v.to(model.landmark_in.weight.dtype) for k, v in sd.items()})


def load_landmark_uncond(model: LaToDiT, path: str | Path) -> None:
    """Learned unconditional landmark tokens (``landmark_uncond``, 68 x hidden) from a trained run."""
    sd = read_state_dict(path, "unconditional landmark tokens")
    if "landmark_uncond" not in sd:
        raise ValueError(f"unconditional landmark tokens {path}: no landmark_uncond tensor")
    if not hasattr(model, "landmark_uncond"):
        raise ValueError("unconditional landmark tokens: the model has landmark_mode != 'tokens'")
    with torch.no_grad():
        model.landmark_uncond.copy_(sd["landmark_uncond"])
    model.has_learned_uncond = True


# ----------------------------------------------------------------------------- tokenizer


def tokenizer_config_from_state_dict(
    sd: dict[str, Tensor], base: TokenizerConfig | None = None
) -> TokenizerConfig:
    """Infer widths, code size and block count of a tokenizer checkpoint from its tensor shapes."""
    cfg = TokenizerConfig(**(base.to_dict() if base else {}))
    m, d = sd["vq.codebook"].shape
    a = sd["encoder.conv_in.weight"].shape[0]
    b = sd["encoder.conv_out.weight"].shape[1]
    n = len({k.split(".")[2] for k in sd if k.startswith("encoder.resnet1.")})
    cfg.codebook_size, cfg.code_dim, cfg.channels, cfg.num_res_blocks = m, d, (a, b), n
    return cfg


def load_lato_tokenizer(
    path: str | Path, config: TokenizerConfig | None = None, device: str = "cpu"
) -> LandmarkTokenizer:
    """Landmark tokenizer from the release's ``Po_VQVAE/model.safetensors`` or our trainer's output.

    The release stores only ``vq.codebook``; the EMA statistics are initialised from it (count 1 per code)
    so fine-tuning can continue.
    """
    sd = read_state_dict(path, "landmark tokenizer")
    if "vq.codebook" not in sd:
        raise ValueError(f"landmark tokenizer {path}: no vq.codebook tensor")
    sd = {k: v.float() for k, v in sd.items()}
    model = LandmarkTokenizer(tokenizer_config_from_state_dict(sd, config))
    missing = _load_into(
        model,
        sd,
        f"landmark tokenizer {path}",
        allowed_missing=[r"vq\.(ema_count|ema_sum|window_usage|steps|initialized)"],
    )
    if missing:
        with torch.no_grad():
            model.vq.ema_sum.copy_(model.vq.codebook)
            model.vq.ema_count.fill_(1.0)
            model.vq.initialized.fill_(True)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- VAE


def load_flux_vae(
    path: str | Path, config: VAEConfig | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> FluxVAE:
    """FLUX VAE from BFL / Step1X-Edit ``vae.safetensors`` (converted with diffusers' own LDM-VAE
    converter) or a diffusers ``AutoencoderKL`` folder/file."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = read_state_dict(path, "FLUX VAE")
    config = config or VAEConfig()
    with torch.device("meta"):
        model = FluxVAE(config)
    if any(k.startswith("encoder.down.") for k in sd):
        try:
            sd = convert_ldm_vae_checkpoint(sd, model.ae.config)
        except (KeyError, IndexError) as e:
            raise ValueError(f"FLUX VAE {path}: not a BFL/LDM autoencoder checkpoint ({e!r})") from e
    sd = {k: v.to(dtype) for k, v in sd.items()}
    _load_into(model.ae, sd, f"FLUX VAE {path}")
    return model.to(device).eval()


# ----------------------------------------------------------------------------- text encoder


def load_text_encoder(path: str | Path, dtype: torch.dtype = torch.bfloat16, device: str = "cpu", **kw):
    """Qwen2.5-VL-7B-Instruct from a local Hugging Face folder (see ``text_encoder.QwenVLTextEncoder``)."""
    from hfl.lato.text_encoder import QwenVLTextEncoder

    return QwenVLTextEncoder.from_pretrained(path, dtype=dtype, device=device, **kw)


# ----------------------------------------------------------------------------- LoRA (kohya <-> peft)


# kohya's LoRANetwork (the release's library/lora_module.py), built from a weights file, wraps the Linear
# layers inside DoubleStreamBlock / SingleStreamBlock, plus every Linear whose kohya name contains one of its
# input-layer filters (``in_dims`` becomes [0] * 5 when loading from weights, which enables them) and the
# LaTo release's ``_landmark_in`` (full rank). Keys for any other module are ignored by its merge, so they
# are skipped here too.
KOHYA_BLOCKS = re.compile(r"(double_blocks|single_blocks)\.\d+\..+")
KOHYA_FILTERS = ("_img_in", "_time_in", "_vector_in", "_guidance_in", "_txt_in", "_landmark_in")


def _kohya_name_map(model: nn.Module) -> dict[str, str]:
    """kohya LoRA name (``lora_unet_double_blocks_0_img_attn_qkv``) -> dotted Linear module path, for the
    modules kohya's network targets (:data:`KOHYA_BLOCKS`, :data:`KOHYA_FILTERS`)."""
    names = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            clean = re.sub(r"(^|\.)base_model\.model\.", r"\1", name).replace(".base_layer", "")
            kohya = f"{KOHYA_PREFIX}_{clean.replace('.', '_')}"
            if KOHYA_BLOCKS.fullmatch(clean) or any(f in kohya for f in KOHYA_FILTERS):
                names[kohya] = clean
    return names


def read_kohya_lora(path: str | Path, model: nn.Module) -> dict[str, tuple[Tensor, Tensor, float]]:
    """``{module path: (down (r, in), up (out, r), scale alpha / r)}`` from a kohya-format LoRA file.

    As kohya's loader: ``alpha`` 0 (or absent) means alpha = rank (scale 1); modules the network does not
    target, or that the model does not have, are skipped with one warning naming them.
    """
    sd = read_state_dict(path, "LoRA")
    names = _kohya_name_map(model)
    out: dict[str, tuple[Tensor, Tensor, float]] = {}
    skipped = []
    for key in sd:
        if not key.endswith(".lora_down.weight"):
            continue
        base = key.removesuffix(".lora_down.weight")
        if base not in names:
            skipped.append(base)
            continue
        if f"{base}.lora_up.weight" not in sd:
            raise ValueError(f"LoRA {path}: {base} has lora_down but no lora_up")
        down, up = sd[key].float(), sd[f"{base}.lora_up.weight"].float()
        rank = down.shape[0]
        alpha = float(sd[f"{base}.alpha"]) if f"{base}.alpha" in sd else 0.0
        out[names[base]] = (down, up, (alpha or float(rank)) / rank)
    if skipped:
        log.warning("LoRA %s: skipped %d modules kohya's network does not target: %s", path, len(skipped),
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))  # fmt: skip
    if not out:
        raise ValueError(f"LoRA {path}: no lora_down/lora_up pairs for modules of this model")
    return out


@torch.no_grad()
def merge_kohya_lora(model: nn.Module, path: str | Path, multiplier: float = 1.0) -> int:
    """Add ``multiplier * scale * up @ down`` to each targeted Linear weight; returns the module count."""
    lora = read_kohya_lora(path, model)
    mods = dict(model.named_modules())
    for name, (down, up, scale) in lora.items():
        w = mods[name].weight
        w.add_((multiplier * scale * (up @ down)).to(w.dtype))
    return len(lora)


def load_kohya_into_peft(peft_model: nn.Module, path: str | Path, adapter: str = "default") -> int:
    """Copy a kohya LoRA into a peft model's ``lora_A`` / ``lora_B`` (ranks must match; the kohya
    ``alpha / r`` scale is folded into ``lora_B`` relative to peft's own scaling)."""
    lora = read_kohya_lora(path, peft_model)
    mods = dict(peft_model.named_modules())
    n = 0
    with torch.no_grad():
        for name, (down, up, scale) in lora.items():
            layer = next((m for k, m in mods.items() if k.endswith(name) and hasattr(m, "lora_A")), None)
            if layer is None:
                raise ValueError(f"LoRA {path}: {name} is not a peft LoRA layer of this model")
            a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
            if a.shape != down.shape:
                raise ValueError(f"LoRA {path}: {name} rank {down.shape[0]} != peft rank {a.shape[0]}")
            a.copy_(down)
            b.copy_(up * (scale / layer.scaling[adapter]))
            n += 1
    return n


def peft_to_kohya(peft_model: nn.Module, adapter: str = "default") -> dict[str, Tensor]:
    """Export a peft model's LoRA as a kohya-format state dict (``alpha`` = peft ``lora_alpha``)."""
    out: dict[str, Tensor] = {}
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and adapter in getattr(mod, "lora_A", {}):
            clean = re.sub(r"^base_model\.model\.", "", name)
            base = f"{KOHYA_PREFIX}_{clean.replace('.', '_')}"
            a, b = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight
            rank = a.shape[0]
            out[f"{base}.lora_down.weight"] = a.detach().contiguous().cpu()
            out[f"{base}.lora_up.weight"] = b.detach().contiguous().cpu()
            out[f"{base}.alpha"] = torch.tensor(float(mod.scaling[adapter] * rank))
    return out


def lora_target_modules() -> str:
    """peft ``target_modules`` regex: every Linear of the double- and single-stream blocks (as kohya's
    FLUX LoRA targets DoubleStreamBlock and SingleStreamBlock)."""
    double = [
        f"{s}_{m}" for s in ("img", "txt") for m in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2", "mod.lin")
    ]
    names = "|".join(n.replace(".", r"\.") for n in double + ["linear1", "linear2", "modulation.lin"])
    return rf".*(double_blocks|single_blocks)\.\d+\.({names})"


def count_params(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
