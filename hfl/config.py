"""Configuration shared by every pipeline: the core sections (name, stages, seed, ray, backends), YAML
reading, `--set section.key=value` overrides, hashing and checks several stages use.

A stage's own section (its dataclass, with the paper thresholds of App. B.1 as defaults) and the checks
of it live in the stage's module (hfl/stages/<name>.py); hfl.pipeline composes `PipelineConfig` from
`CoreConfig` and the registered stages, loads and validates it. This module imports no stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hfl.backends.clip import ClipBackendConfig
from hfl.backends.expression import ExpressionBackendConfig
from hfl.backends.face import FaceBackendConfig
from hfl.backends.generator import GeneratorBackendConfig
from hfl.backends.quality import QualityBackendConfig


class ConfigError(ValueError):
    """The configuration is invalid; the message names every offending key."""


VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class RayConfig:
    address: str = ""  # Ray cluster address; empty = RAY_ADDRESS or an embedded local Ray
    num_cpus: int = 0  # CPUs for an embedded Ray (0 = all cores)
    object_store_mb: int = 512  # object store size of an embedded Ray
    workers: int = 0  # actors per CPU pool (0 = the cluster's CPUs left after the GPU pools)
    num_gpus: int = -1  # GPUs for an embedded Ray (-1 = those detected; >0 declares logical GPUs)
    gpu_batch_units: int = 8  # units (videos' rows) per call of a GPU pool's actor; model calls span them
    # per-stage resource overrides, e.g. {caption: {num_gpus: 1}}: keys num_cpus, num_gpus, memory_mb
    stage_resources: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class BackendsConfig:
    face: FaceBackendConfig = field(default_factory=FaceBackendConfig)  # detector, landmarker, embedder
    quality: QualityBackendConfig = field(default_factory=QualityBackendConfig)  # DOVER or BRISQUE
    expression: ExpressionBackendConfig = field(
        default_factory=ExpressionBackendConfig
    )  # captions, semantics
    clip: ClipBackendConfig = field(default_factory=ClipBackendConfig)  # CLIP image embedder (identity)
    generator: GeneratorBackendConfig = field(default_factory=GeneratorBackendConfig)  # synth edit generator


@dataclass
class CoreConfig:
    """The sections every pipeline has; hfl.pipeline.PipelineConfig adds one section per registered stage."""

    name: str = "hfl"  # pipeline name (shown in reports)
    stages: list[str] = field(default_factory=lambda: ["mine", "quality", "shard"])  # stage order
    seed: int = 0  # seed for anything random
    ray: RayConfig = field(default_factory=RayConfig)  # execution engine
    backends: BackendsConfig = field(default_factory=BackendsConfig)  # model backends


# -------------------------------------------------------- overrides (dict -> dataclass: hfl.typedconf)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. quality.min_log_blur=40")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(obj: Any) -> str:
    """Stable short hash of any JSON-able structure (dataclasses included)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_config(path: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    """The mapping of a YAML config file ({} without one) and the folder relative paths in it start from."""
    if path is None:
        return {}, None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data, p.parent


def resolve_path(value: str, base: Path) -> str:
    """Expand `pkg:<module>/<relpath>` (a file shipped in an installed package) and relative paths."""
    if value.startswith(("pkg:", "corpus:")) or "://" in value:
        return value  # resolved by hfl.inputs at validation time; URLs (s3://, file://) are absolute
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def check_head_pose(name: str, key: str) -> list[str]:
    """Problems with a head-pose estimator name and its files, without loading it."""
    from hfl.backends.headpose import HEAD_POSE_ESTIMATORS, head_pose_problems

    if name not in HEAD_POSE_ESTIMATORS:
        return [f"{key}: one of {', '.join(HEAD_POSE_ESTIMATORS)}"]
    return [f"{key}: {e}" for e in head_pose_problems(name)]
