"""Load LaTo for inference: a ``hfl train lato`` run folder plus its recipe, or the released weights from
local paths (``inference/lato_release.yaml``; layout in ``hfl.lato.loaders``).

A *tiny run* (``training/lato_tiny.yaml``) keeps only the trainable tensors (``export/lora.safetensors``,
``export/landmark_in.safetensors``, ``export/landmark_uncond.safetensors``); the frozen parts it trained
against (random tiny DiT base, VAE, byte text encoder, tokenizer) are rebuilt exactly as the trainer did:
``accelerate.utils.set_seed(train.seed)`` and then ``hfl.lato.build.build_parts(recipe)``. The LoRA is
merged into the base weights (kohya format, ``alpha / r`` scale).

A *release config* names files: ``dit.path`` (Step1X-Edit / ``lato.safetensors``), ``dit.landmark_adapter``
(``landmark_in.pth``), ``dit.landmark_uncond`` (optional; the release DiT may carry ``landmark_uncond``
itself), ``lora`` (kohya LoRA, optional), ``vae.path``, ``text_encoder.path`` (Qwen2.5-VL-7B-Instruct
folder) and ``tokenizer.path`` (``Po_VQVAE/model.safetensors``). ``dtype`` (bfloat16 on GPU) applies to
the DiT and the text encoder; the VAE and the tokenizer stay in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hfl.lato.dit import LaToConfig, LaToDiT
from hfl.lato.tokenizer import LandmarkTokenizer
from hfl.lato.vae import FluxVAE

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LaToBundle:
    """Everything sampling needs, plus where its modules live.

    ``offload``: modules stay on the CPU and move to ``device`` only while they run (model-level CPU
    offload: text encoder, then tokenizer, then the DiT for all steps, then the VAE).
    ``canvas``: ``"square"`` (the source resized to ``height`` x ``width``; hfl-trained runs) or
    ``"release"`` (the release's aspect-preserving size at about ``height``**2 pixels, sides multiples of
    16, landmark ids in the release's frame; see ``hfl.lato.canvas``).
    ``vae_sample``: encode the source with a posterior sample (the release) instead of the mean.
    ``face``: ``hfl.backends.face.FaceBackendConfig`` fields for finding source landmarks (e.g. FAN).
    """

    dit: LaToDiT
    vae: FluxVAE
    text_encoder: nn.Module
    tokenizer: LandmarkTokenizer
    height: int
    width: int
    device: torch.device
    dtype: torch.dtype
    offload: bool = False
    canvas: str = "square"
    vae_sample: bool = False
    face: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> LaToConfig:
        return self.dit.config

    @contextlib.contextmanager
    def use(self, module: nn.Module):
        """Context: ``module`` on the compute device (moved there and back when offloading)."""
        if self.offload and self.device.type != "cpu":
            module.to(self.device)
            try:
                yield module
            finally:
                module.to("cpu")
                torch.cuda.empty_cache()
        else:
            yield module

    def place(self) -> LaToBundle:
        """Put the modules where they live between uses (the device, or the CPU when offloading)."""
        home = torch.device("cpu") if self.offload else self.device
        self.dit.to(home, self.dtype).eval()
        self.vae.to(home).eval()
        self.tokenizer.to(home).eval()
        te_dtype = self.dtype if not _is_bytes(self.text_encoder) else torch.float32
        self.text_encoder.to(home, te_dtype).eval()
        return self


def _is_bytes(m: nn.Module) -> bool:
    return type(m).__name__ == "ByteTextEncoder"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} unknown (auto | {' | '.join(DTYPES)})")
    return DTYPES[name]


def load_run(
    run_dir: str | Path,
    recipe: dict[str, Any],
    device: str = "cpu",
    dtype: str = "auto",
    offload: bool = False,
) -> LaToBundle:
    """A ``hfl train lato`` output folder + the recipe it was trained with (see the module docstring)."""
    from accelerate.utils import set_seed

    from hfl.lato import loaders
    from hfl.lato.build import build_parts
    from hfl.recipes import validate_lato_recipe

    validate_lato_recipe(recipe)
    export = Path(run_dir) / "export"
    loaders.require_files(export, ["lora.safetensors"], f"LaTo run {run_dir}")
    set_seed(int((recipe.get("train") or {}).get("seed", 0)))  # training.common.TrainArgs.seed's default
    parts = build_parts(recipe)
    loaders.merge_kohya_lora(parts.dit, export / "lora.safetensors")
    if parts.config.landmark_mode == "tokens":
        loaders.load_landmark_adapter(parts.dit, export / "landmark_in.safetensors")
        loaders.load_landmark_uncond(parts.dit, export / "landmark_uncond.safetensors")
    data = recipe.get("data", {})
    dev = torch.device(device)
    return LaToBundle(
        parts.dit, parts.vae, parts.text_encoder, parts.tokenizer,
        int(data.get("height", 512)), int(data.get("width", 512)),
        dev, resolve_dtype(dtype, dev), offload,
    ).place()  # fmt: skip


def load_release(
    cfg: dict[str, Any], device: str = "cpu", dtype: str = "auto", offload: bool = False
) -> LaToBundle:
    """The released LaTo (Step1X-Edit base + LaTo files) from local paths in a config dict."""
    from hfl.lato import loaders
    from hfl.lato.text_encoder import ByteTextEncoder
    from hfl.lato.vae import VAEConfig
    from hfl.recipes import validate_release_config

    validate_release_config(cfg)
    dev = torch.device(device)
    dt = resolve_dtype(dtype, dev)
    base = Path(cfg.get("root", "."))
    p = lambda v: str(base / v) if v else None  # noqa: E731
    d = cfg.get("dit", {})
    if not d.get("path"):
        raise ValueError("release config: dit.path is required")
    config = LaToConfig.from_dict(d.get("config", {}))
    dit = loaders.load_step1x_dit(p(d["path"]), config, p(d.get("landmark_adapter")), dtype=dt)
    if d.get("landmark_uncond"):
        loaders.load_landmark_uncond(dit, p(d["landmark_uncond"]))
    if cfg.get("lora"):
        loaders.merge_kohya_lora(dit, p(cfg["lora"]), float(cfg.get("lora_scale", 1.0)))
    v = cfg.get("vae", {})
    vae = loaders.load_flux_vae(p(v["path"]), VAEConfig.from_dict(v.get("config", {})))
    t = cfg.get("text_encoder", {})
    if t.get("kind", "qwen") == "bytes":
        text_encoder: nn.Module = ByteTextEncoder(config.text_dim, t.get("max_length", 64))
    else:
        text_encoder = loaders.load_text_encoder(p(t["path"]), dtype=dt, max_length=t.get("max_length", 640))
    tokenizer = loaders.load_lato_tokenizer(p(cfg["tokenizer"]["path"]))
    size = cfg.get("size", 512)
    canvas = cfg.get("canvas", "release")
    if canvas not in ("square", "release"):
        raise ValueError(f"release config: canvas must be square | release, got {canvas!r}")
    face = dict(cfg.get("face") or {})
    if face.get("fan_path"):
        face["fan_path"] = p(face["fan_path"])
        face.setdefault("landmarker", "fan")
    return LaToBundle(
        dit, vae, text_encoder, tokenizer, int(size), int(size), dev, dt, offload,
        canvas=canvas, vae_sample=bool(cfg.get("vae_sample", True)), face=face,
    ).place()  # fmt: skip
