"""Build LaTo's parts from a recipe's model sections (``dit``, ``vae``, ``text_encoder``, ``tokenizer``): the
trainer (``training/lato.py``) and the run loader (``inference/model.py``) share this, so a tiny run's
frozen random parts are rebuilt exactly as they were trained against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hfl.lato.dit import LaToConfig, LaToDiT
from hfl.lato.tokenizer import LandmarkTokenizer, TokenizerConfig
from hfl.lato.vae import FluxVAE, VAEConfig


@dataclass
class LaToParts:
    """The trainable DiT and its frozen helpers."""

    dit: nn.Module
    vae: FluxVAE
    text_encoder: nn.Module
    tokenizer: LandmarkTokenizer | None
    config: LaToConfig


def build_parts(cfg: dict[str, Any]) -> LaToParts:
    """Construct (or load from local paths) DiT, VAE, text encoder and tokenizer from a recipe."""
    from hfl.lato import loaders
    from hfl.lato.text_encoder import ByteTextEncoder

    dcfg = cfg.get("dit", {})
    config = LaToConfig.from_dict(dcfg.get("config", {}))
    if dcfg.get("path"):
        dit = loaders.load_step1x_dit(dcfg["path"], config, dcfg.get("landmark_adapter"), dtype=torch.float32)
    else:
        dit = LaToDiT(config)
        if dcfg.get("landmark_adapter"):
            loaders.load_landmark_adapter(dit, dcfg["landmark_adapter"])
    vcfg = cfg.get("vae", {})
    vae_config = VAEConfig.from_dict(vcfg.get("config", {}))
    vae = loaders.load_flux_vae(vcfg["path"], vae_config) if vcfg.get("path") else FluxVAE(vae_config)
    tcfg = cfg.get("text_encoder", {"kind": "bytes"})
    if tcfg.get("kind", "bytes") == "bytes":
        text_encoder: nn.Module = ByteTextEncoder(config.text_dim, tcfg.get("max_length", 64))
    else:
        text_encoder = loaders.load_text_encoder(tcfg["path"], max_length=tcfg.get("max_length", 640))
    tokenizer = None
    if config.landmark_mode == "tokens":
        kcfg = cfg.get("tokenizer", {})
        if kcfg.get("path"):
            tokenizer = loaders.load_lato_tokenizer(kcfg["path"])
        else:
            tokenizer = LandmarkTokenizer(TokenizerConfig.from_dict(kcfg.get("config", {})))
        if tokenizer.config.code_dim != config.landmark_dim:
            raise ValueError(
                f"tokenizer code_dim {tokenizer.config.code_dim} != dit landmark_dim {config.landmark_dim}"
            )
    for m in (vae, text_encoder, tokenizer):
        if m is not None:
            m.requires_grad_(False).eval()
    return LaToParts(dit, vae, text_encoder, tokenizer, config)
