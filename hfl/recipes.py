"""YAML recipes (``hfl train`` / ``hfl edit``) with ``a.b.c=value`` overrides, and the LaTo recipes as
dataclasses checked before any work (unknown keys and wrong types are errors listing every problem):
:class:`LaToRecipe` (``hfl train lato``, a run's recipe for ``hfl edit --run``), :class:`ReleaseConfig`
(``inference/lato_release.yaml``), :class:`TokenizerRecipe`, :class:`PredictorRecipe` and
:class:`CaptionerRecipe` (:func:`validate_recipe`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hfl.typedconf import build as _build


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML recipe and apply ``a.b.c=value`` overrides (values parsed as YAML)."""
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return cfg


# ----------------------------------------------------------------------------- validated LaTo recipes


class RecipeError(ValueError):
    """A recipe with unknown keys or wrong types; the message lists every problem."""


@dataclass
class DitSection:
    """``dit``: a Step1X-Edit / LaTo checkpoint (``path``, optional) and :class:`~hfl.lato.dit.LaToConfig`
    fields (``config``, with ``preset: tiny``), an optional landmark adapter file."""

    path: str | None = None
    config: dict = field(default_factory=dict)
    landmark_adapter: str | None = None


@dataclass
class ReleaseDitSection(DitSection):
    """``dit`` of a release config: also the learned unconditional tokens when shipped apart."""

    landmark_uncond: str | None = None


@dataclass
class FileSection:
    """``vae`` / ``tokenizer``: a weights file (optional when building random) and config fields."""

    path: str | None = None
    config: dict = field(default_factory=dict)


@dataclass
class TextEncoderSection:
    """``text_encoder``: ``kind`` bytes (tiny, tests) | qwen (Qwen2.5-VL folder at ``path``)."""

    kind: str = "bytes"
    path: str | None = None
    max_length: int | None = None


@dataclass
class LoraSection:
    """``lora``: peft LoRA rank, alpha (default: rank) and dropout."""

    rank: int = 64
    alpha: float | None = None
    dropout: float = 0.0


@dataclass
class LaToDataSection:
    """``data``: pair-shard folder(s), training size, optional latent/embedding cache."""

    train: str | list | None = None
    height: int = 512
    width: int = 512
    cache_dir: str | None = None


@dataclass
class LaToRecipe:
    """``hfl train lato`` recipe (``training/lato*.yaml``); ``train`` is ``training.common.TrainArgs``."""

    output_dir: str = "runs/lato"
    data: LaToDataSection = field(default_factory=LaToDataSection)
    dit: DitSection = field(default_factory=DitSection)
    vae: FileSection = field(default_factory=FileSection)
    text_encoder: TextEncoderSection = field(default_factory=TextEncoderSection)
    tokenizer: FileSection = field(default_factory=FileSection)
    lora: LoraSection = field(default_factory=LoraSection)
    gradient_checkpointing: bool = False
    timestep_shift: float = 1.0
    resume: bool = True
    train: dict = field(default_factory=dict)


@dataclass
class ReleaseConfig:
    """The released LaTo from local files (``inference/lato_release.yaml``)."""

    root: str = "."
    size: int = 512
    canvas: str = "release"
    vae_sample: bool = True
    face: dict = field(default_factory=dict)
    dit: ReleaseDitSection = field(default_factory=ReleaseDitSection)
    lora: str | None = None
    lora_scale: float = 1.0
    vae: FileSection = field(default_factory=FileSection)
    text_encoder: TextEncoderSection = field(default_factory=lambda: TextEncoderSection(kind="qwen"))
    tokenizer: FileSection = field(default_factory=FileSection)


@dataclass
class TokenizerDataSection:
    """``data`` of ``hfl train tokenizer``: frame and/or pair shards, face-crop augmentation."""

    train: str | list | None = None
    eval: str | list | None = None
    crop_scale: list = field(default_factory=lambda: [1.6, 2.2])
    jitter: float = 0.05
    flip_prob: float = 0.0


@dataclass
class TokenizerRecipe:
    """``hfl train tokenizer`` recipe (``training/tokenizer*.yaml``); ``model``: TokenizerConfig fields."""

    output_dir: str = "runs/tokenizer"
    data: TokenizerDataSection = field(default_factory=TokenizerDataSection)
    model: dict = field(default_factory=dict)
    resume: bool = True
    train: dict = field(default_factory=dict)


@dataclass
class VlmModelSection:
    """``model`` of the VLM fine-tunes: a local Qwen-VL folder ("" = tiny random), dtype, device."""

    path: str = ""
    dtype: str = "float32"
    device: str = "cpu"
    max_pixels: int = 0


@dataclass
class VlmLoraSection:
    """``lora`` of the VLM fine-tunes (peft)."""

    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list | str | None = None


@dataclass
class PredictorDataSection:
    """``data`` of ``hfl train predictor``: pair-shard folders, optional limit, keep the SFT examples."""

    train: str | list | None = None
    limit: int | None = None
    write_examples: bool = True


@dataclass
class PredictorRecipe:
    """``hfl train predictor`` recipe (``training/predictor*.yaml``)."""

    output_dir: str = "runs/predictor"
    model: VlmModelSection = field(default_factory=VlmModelSection)
    data: PredictorDataSection = field(default_factory=PredictorDataSection)
    lora: VlmLoraSection = field(default_factory=VlmLoraSection)
    gradient_checkpointing: bool = False
    max_length: int = 4096
    merge: bool = False
    resume: bool = True
    train: dict = field(default_factory=dict)


@dataclass
class CaptionerDataSection:
    """``data`` of ``hfl train captioner``: an ``hfl annotate export`` folder."""

    export: str | None = None


@dataclass
class CaptionerRecipe:
    """``hfl train captioner`` recipe (``training/captioner.yaml``)."""

    output_dir: str = "runs/captioner"
    model: VlmModelSection = field(default_factory=VlmModelSection)
    data: CaptionerDataSection = field(default_factory=CaptionerDataSection)
    lora: VlmLoraSection = field(default_factory=VlmLoraSection)
    gradient_checkpointing: bool = False
    max_length: int = 4096
    merge: bool = False
    eval: bool = True
    resume: bool = True
    train: dict = field(default_factory=dict)


def _check_model_configs(r: LaToRecipe | ReleaseConfig, errors: list[str]) -> None:
    """The ``config`` mappings must construct their dataclasses (unknown fields are errors too)."""
    from hfl.lato.dit import LaToConfig
    from hfl.lato.tokenizer import TokenizerConfig
    from hfl.lato.vae import VAEConfig

    for where, cls, d in (
        ("dit.config", LaToConfig, r.dit.config),
        ("vae.config", VAEConfig, r.vae.config),
        ("tokenizer.config", TokenizerConfig, r.tokenizer.config),
    ):
        try:
            cls.from_dict(d)
        except (TypeError, ValueError) as e:
            errors.append(f"{where}: {e}")
    if r.text_encoder.kind not in ("bytes", "qwen"):
        errors.append(f"text_encoder.kind: bytes | qwen, got {r.text_encoder.kind!r}")
    if r.text_encoder.kind == "qwen" and not r.text_encoder.path:
        errors.append("text_encoder.path: required for kind qwen (a local Qwen2.5-VL folder)")


def validate_lato_recipe(cfg: dict[str, Any]) -> LaToRecipe:
    """A ``hfl train lato`` recipe as a :class:`LaToRecipe`; RecipeError listing every problem."""
    errors: list[str] = []
    recipe = _build(LaToRecipe, cfg, "", errors)
    _check_model_configs(recipe, errors)
    if errors:
        raise RecipeError("LaTo recipe:\n  " + "\n  ".join(errors))
    return recipe


def validate_release_config(cfg: dict[str, Any]) -> ReleaseConfig:
    """A release config as a :class:`ReleaseConfig`; RecipeError listing every problem."""
    errors: list[str] = []
    rc = _build(ReleaseConfig, cfg, "", errors)
    if not errors:
        if not rc.dit.path:
            errors.append("dit.path: required (lato.safetensors)")
        if not rc.vae.path:
            errors.append("vae.path: required (vae.safetensors)")
        if not rc.tokenizer.path:
            errors.append("tokenizer.path: required (Po_VQVAE/model.safetensors)")
        if rc.canvas not in ("square", "release"):
            errors.append(f"canvas: square | release, got {rc.canvas!r}")
    _check_model_configs(rc, errors)
    if errors:
        raise RecipeError("release config:\n  " + "\n  ".join(errors))
    return rc


def validate_recipe(kind: str, cfg: dict[str, Any]) -> Any:
    """Any ``hfl train`` recipe (``kind``: tokenizer | lato | predictor | captioner) as its dataclass."""
    if kind == "lato":
        return validate_lato_recipe(cfg)
    classes = {"tokenizer": TokenizerRecipe, "predictor": PredictorRecipe, "captioner": CaptionerRecipe}
    if kind not in classes:
        raise ValueError(f"recipe kind: tokenizer | lato | predictor | captioner, got {kind!r}")
    errors: list[str] = []
    recipe = _build(classes[kind], cfg, "", errors)
    if kind == "tokenizer":
        from hfl.lato.tokenizer import TokenizerConfig

        try:
            TokenizerConfig.from_dict(recipe.model)
        except (TypeError, ValueError) as e:
            errors.append(f"model: {e}")
        if not recipe.data.train:
            errors.append("data.train: required (frame and/or pair shard folders)")
    elif kind == "predictor" and not recipe.data.train:
        errors.append("data.train: required (pair shard folders)")
    elif kind == "captioner" and not recipe.data.export:
        errors.append("data.export: required (an hfl annotate export folder)")
    if kind != "tokenizer" and recipe.model.dtype not in ("float32", "bfloat16"):
        errors.append(f"model.dtype: float32 | bfloat16, got {recipe.model.dtype!r}")
    if errors:
        raise RecipeError(f"{kind} recipe:\n  " + "\n  ".join(errors))
    return recipe
