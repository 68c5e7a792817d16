"""The pipeline config: `CoreConfig` (hfl.config) plus one section per registered stage (hfl.stages).

`PipelineConfig` is a dataclass composed once, at import, from the registry: section `<name>` has the
type `STAGES[name].config_class` (declared in the stage's own module) and its defaults. So `cfg.mine.fps`
works as before, YAML keys and `--set mine.fps=...` overrides are checked by hfl.typedconf against the
stage's dataclass, and `dataclasses.asdict(cfg)` (config hashes, config.yaml) lists the core sections,
then the stages in registry (pipeline) order.

Importing this module imports every registered stage module (their dataclasses are needed); stage modules
keep heavy imports (torch, model code) inside methods, so that costs a few light modules. `validate`
calls `check` of each stage that is about to run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfl.config import ConfigError, CoreConfig, apply_overrides, read_config, resolve_path
from hfl.stages import STAGES
from hfl.typedconf import build


def compose() -> type:
    """A dataclass with CoreConfig's fields, then one field per registered stage that has a section."""
    fields: list[tuple[str, type, Any]] = []
    for name in STAGES:
        cls = STAGES[name].config_class
        if cls is not None:
            fields.append((name, cls, dataclasses.field(default_factory=cls)))
    cls = dataclasses.make_dataclass(
        "PipelineConfig",
        fields,
        bases=(CoreConfig,),
        namespace={"__doc__": "The whole pipeline config: core sections, then one section per stage."},
    )
    cls.__module__ = __name__  # pickle and repr find it here
    return cls


if TYPE_CHECKING:  # the sections are known only at run time: to a type checker, `cfg.mine.fps` is Any
    from typing import Any as PipelineConfig
else:
    PipelineConfig = compose()


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read YAML, apply overrides, type-check every key; raise ConfigError listing all problems."""
    data, base = read_config(path)
    if base is not None:
        # relative paths in a config file (the keys a stage declares in path_keys) are relative to its folder
        for name in STAGES:
            section = data.get(name)
            if not isinstance(section, dict):
                continue
            for key in STAGES[name].path_keys:
                if isinstance(section.get(key), str) and section[key]:
                    section[key] = resolve_path(section[key], base)
    data = apply_overrides(data, overrides or [])
    errors: list[str] = []
    cfg = build(PipelineConfig, data, "", errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg


def validate(cfg: PipelineConfig, stages: list[str]) -> None:
    """Semantic checks before any work: inputs readable, weights present, values in range.

    The pipeline's stage list is checked here; each stage in `stages` checks its own section (and what it
    needs of the others) in `Stage.check`, in registry order."""
    errors: list[str] = []
    for name in cfg.stages:
        if name not in STAGES:
            errors.append(f"stages: unknown stage '{name}' (known: {', '.join(STAGES)})")
    for name in stages:
        if name not in cfg.stages:
            errors.append(f"--stage {name}: not in this pipeline's stages ({', '.join(cfg.stages)})")
    if cfg.ray.gpu_batch_units < 1:
        errors.append("ray.gpu_batch_units: must be >= 1")
    for name in STAGES:
        if name in stages:
            errors += STAGES[name].check(cfg, stages)
    errors = list(dict.fromkeys(errors))  # one message per problem, even when two stages share it
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
