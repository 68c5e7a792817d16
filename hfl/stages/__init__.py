"""Stage registry: name -> Stage class. Adding a stage = its module (hfl/stages/<name>.py, or any importable
module: the Stage class with its config dataclass, checks, reject reasons and card rows) + one line in
_CLASSES below; hfl.pipeline adds its config section, `hfl stages` lists it, the report reads its reasons.

Lazy: a stage's module is imported the first time its class is looked up, so a worker that runs only
`mine` and `quality` never imports what `shard` needs (webdataset pulls in torch: ~1.5 s per process).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from hfl.engine.stage import Stage

_CLASSES = {  # pipeline order
    "mine": ("hfl.stages.mine", "MineStage"),
    "quality": ("hfl.stages.quality", "QualityStage"),
    "pair": ("hfl.stages.pair", "PairStage"),
    "identity": ("hfl.stages.identity", "IdentityStage"),
    "caption": ("hfl.stages.caption", "CaptionStage"),
    "synth": ("hfl.stages.synth", "SynthStage"),
    "validate": ("hfl.stages.validate", "ValidateStage"),
    "split": ("hfl.stages.split", "SplitStage"),
    "shard": ("hfl.stages.shard", "ShardStage"),
}


class _Registry(Mapping[str, type[Stage]]):
    """Read-only mapping that imports a stage's module on first lookup."""

    def __getitem__(self, name: str) -> type[Stage]:
        module, cls = _CLASSES[name]
        return getattr(importlib.import_module(module), cls)

    def __contains__(self, name: object) -> bool:  # without importing the stage
        return name in _CLASSES

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


STAGES: Mapping[str, type[Stage]] = _Registry()


def __getattr__(name: str) -> type[Stage]:
    """`from hfl.stages import MineStage` still works (imports that stage's module)."""
    for stage, (_, cls) in _CLASSES.items():
        if cls == name:
            return STAGES[stage]
    raise AttributeError(f"module 'hfl.stages' has no attribute {name!r}")


def reason_text(reason: str, stage: str | None = None) -> str | None:
    """The human text of a reject reason: as `stage` declares it, else as any registered stage (or the
    shared row helpers) declare it; None for a reason nobody declares."""
    from hfl.stages.rows import REASONS

    if stage in _CLASSES and reason in STAGES[stage].reasons:
        return STAGES[stage].reasons[reason]
    if reason in REASONS:
        return REASONS[reason]
    for name in _CLASSES:
        if reason in STAGES[name].reasons:
            return STAGES[name].reasons[reason]
    return None
