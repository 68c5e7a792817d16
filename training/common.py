"""Shared trainer plumbing: YAML recipes, Accelerate setup, checkpoints and logs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfl.recipes import load_recipe  # noqa: F401  (re-exported: hfl train's recipes)


@dataclass
class TrainArgs:
    """Optimisation and bookkeeping settings common to both trainers.

    Args:
        batch_size: per-process batch size.
        max_steps: optimiser steps in total (across resumes).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps, then constant.
        grad_accum: gradient-accumulation steps (total batch = batch_size x processes x grad_accum).
        max_grad_norm: gradient clipping (0: off).
        mixed_precision: "no" | "bf16" | "fp16" (Accelerate).
        seed: seed for weights, data order and noise.
        log_every: steps between log lines.
        eval_every: steps between evaluations (0: only at the end).
        save_every: steps between checkpoints (0: only at the end).
        keep_checkpoints: newest checkpoints kept on disk.
        max_minutes: stop (and checkpoint) after this much wall time (0: no limit).
        num_workers: DataLoader workers.
        shuffle_buffer: webdataset shuffle-buffer size.
        torch_threads: intra-op CPU threads (0: torch's default). 1 avoids OpenMP oversubscription on a
            loaded CPU, where it can be >10x faster than 2 threads.
    """

    batch_size: int = 8
    max_steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    max_minutes: float = 0.0
    num_workers: int = 0
    shuffle_buffer: int = 1000
    torch_threads: int = 0

    def apply_threads(self) -> None:
        if self.torch_threads > 0:
            import torch

            torch.set_num_threads(self.torch_threads)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainArgs:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown train settings: {sorted(unknown)}")
        return cls(**known)


def warmup_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


@dataclass
class Checkpoints:
    """``OUTPUT/checkpoints/step-NNNNNNN`` folders written with ``accelerator.save_state`` plus a
    ``trainer_state.json`` (step, data-stream position, metrics)."""

    root: Path
    keep: int = 2

    def __post_init__(self) -> None:
        self.root = Path(self.root) / "checkpoints"

    def latest(self) -> Path | None:
        if not self.root.is_dir():
            return None
        done = [
            p
            for p in self.root.iterdir()
            if re.fullmatch(r"step-\d+", p.name) and (p / "trainer_state.json").exists()
        ]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def save(self, accelerator: Any, step: int, state: dict[str, Any]) -> Path:
        path = self.root / f"step-{step:07d}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            (path / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=1))
            old = sorted(
                (p for p in self.root.iterdir() if p.name.startswith("step-") and p != path),
                key=lambda p: p.name,
            )
            for p in old[: max(0, len(old) - self.keep + 1)]:
                shutil.rmtree(p, ignore_errors=True)
        accelerator.wait_for_everyone()
        return path

    @staticmethod
    def read_state(path: Path) -> dict[str, Any]:
        return json.loads((path / "trainer_state.json").read_text())


@dataclass
class MetricLog:
    """Appends one JSON line per log event to ``OUTPUT/log.jsonl`` and prints a short line."""

    path: Path
    enabled: bool = True
    t0: float = field(default_factory=time.time)

    def __call__(self, step: int, **metrics: float) -> None:
        if not self.enabled:
            return
        rec = {"step": step, "elapsed_s": round(time.time() - self.t0, 2)}
        rec.update(
            {
                k: (round(float(v), 6) if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in metrics.items()
            }
        )
        os.makedirs(self.path.parent, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(" ".join(f"{k}={v}" for k, v in rec.items()), flush=True)


def checkpoint_and_should_stop(
    args: Any, step: int, started: float, ckpts: Any, accelerator: Any, data_state: dict[str, int]
) -> bool:
    """After an optimiser step: save a checkpoint when due (every `save_every`, at `max_steps`, or when
    `max_minutes` ran out) and say whether training should stop."""
    deadline = args.max_minutes * 60
    out_of_time = bool(deadline) and time.time() - started > deadline
    if (args.save_every and step % args.save_every == 0) or step == args.max_steps or out_of_time:
        ckpts.save(accelerator, step, data_state)
    return step >= args.max_steps or out_of_time
