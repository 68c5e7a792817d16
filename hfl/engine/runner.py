"""Runs stages on Ray Data with resume: done units are skipped, stats.json marks a stage done."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from hfl.config import PipelineConfig, config_hash, to_dict
from hfl.engine.parts import clean_tmp, reason_counts, write_json_atomic, write_part
from hfl.engine.stage import Stage, StageContext, WorkerCrash, WorkUnit

log = logging.getLogger("hfl")


# ---------------------------------------------------------------------------- Ray


def init_ray(cfg: PipelineConfig, address: str | None = None) -> None:
    """Connect to a cluster (address / RAY_ADDRESS) or start an embedded Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # An embedded cluster keeps Ray's default (token authentication on, a local token generated if
        # missing); Ray announces that default with a warning on every start, which is not news to act on.
        # (Setting RAY_AUTH_MODE here instead is unsafe: Ray's native side has read it at import time.)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            num_cpus=cfg.ray.num_cpus or None,
            object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            **kwargs,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # hfl shows its own bar per stage
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # hfl turns Ray Data's progress bars off on purpose (it shows its own bar): not a warning for the user
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


# Lines of Ray's C++ core worker that say nothing a user can act on. Ray Data's actor pool always passes an
# object reference to its map actors and keeps max_restarts > 0 (hfl relies on restarts to record a unit
# whose worker crashed), so Ray logs this on every run (ray-project/ray#57733).
QUIET_NATIVE_LINES = (b"has constructor arguments in the object store and max_restarts > 0",)
_NATIVE_LOG_START = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z] \d+ \d+\] ")
_MAYBE_LOG_START = re.compile(rb"\[[\d\- :,A-Z]*\Z")


def filter_native_lines(data: bytes, patterns: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    """Split stderr bytes into (what to write now, what to hold until more arrives): native log lines
    (``[date time,ms L pid tid] ...``) that contain one of ``patterns`` are dropped whole; everything else,
    including tqdm's carriage-return updates, passes through unchanged."""
    out = b""
    while data:
        m = _NATIVE_LOG_START.search(data)
        if m is None:
            tail = _MAYBE_LOG_START.search(data)  # a log line may be starting at the very end
            cut = tail.start() if tail else len(data)
            return out + data[:cut], data[cut:]
        out += data[: m.start()]
        end = data.find(b"\n", m.start())
        if end == -1:
            return out, data[m.start() :]
        line, data = data[m.start() : end + 1], data[end + 1 :]
        if not any(p in line for p in patterns):
            out += line
    return out, b""


@contextmanager
def quiet_native_stderr(patterns: tuple[bytes, ...] = QUIET_NATIVE_LINES) -> Iterator[None]:
    """Drop the given native (C++) log lines from this process's stderr while the block runs.

    Ray's core worker writes to file descriptor 2 directly, past Python's logging; fd 2 is routed through a
    pipe and a thread copies everything else to the real stderr. Entered after Ray has started, so no child
    process inherits the pipe. Without a usable fd 2 it does nothing."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except OSError:
        yield
        return

    def pump() -> None:
        held = b""
        while chunk := os.read(r, 65536):
            now, held = filter_native_lines(held + chunk, patterns)
            if now:
                os.write(saved, now)
        if held:
            os.write(saved, held)

    thread = threading.Thread(target=pump, name="hfl-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF and flushes
        thread.join(timeout=5)
        os.close(r)
        os.close(saved)


def worker_count(cfg: PipelineConfig, per_worker_cpus: float) -> int:
    import ray

    if cfg.ray.workers > 0:
        return cfg.ray.workers
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int(cpus // max(per_worker_cpus, 1e-6)))


def _inject_fault(stage: str, unit_id: str) -> None:
    """Fault injection for tests: HFL_FAULT_SEGFAULT=<stage>:<unit id> kills the worker with SIGSEGV."""
    if os.environ.get("HFL_FAULT_SEGFAULT") == f"{stage}:{unit_id}":
        os.kill(os.getpid(), signal.SIGSEGV)


class UnitWorker:
    """Ray Data actor: builds its stages once (models loaded once), then runs whole units.

    With several stages (a fused chain of unit-aligned stages), each unit runs through all of them in turn:
    stage i+1 reads the part stage i has just written. Parts that exist already are skipped (resume)."""

    def __init__(
        self, stage_names: list[str], cfg_dict: dict[str, Any], out_dir: str, run_id: str = ""
    ) -> None:
        import cv2

        from hfl.config import PipelineConfig, _build
        from hfl.stages import STAGES

        cv2.setNumThreads(1)
        errors: list[str] = []
        cfg = _build(PipelineConfig, cfg_dict, "", errors)
        self.stages: list[Stage] = [STAGES[name](cfg) for name in stage_names]
        for st in self.stages:
            st.setup()
        self.stage = self.stages[0]
        self.ctx = StageContext(Path(out_dir))
        self.run_id = run_id

    def run_one(self, stage: Stage, unit: WorkUnit) -> Path:
        part = self.ctx.stage_dir(stage.name) / f"part-{unit.id}.parquet"
        if part.exists():
            return part
        # An attempt marker outlives a worker killed by a native crash (segfault in a decoder, OOM kill):
        # when Ray retries the unit on a restarted worker in the same run, the unit is recorded, not retried.
        marker = self.ctx.stage_dir(stage.name) / "_attempts" / unit.id
        if marker.is_file() and marker.read_text() == self.run_id:
            crash = WorkerCrash(f"the worker died while processing unit {unit.id} (native crash or killed)")
            write_part(part, [stage.error_rows(unit, crash)], stage.schema)
            marker.unlink(missing_ok=True)
            return part
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(self.run_id)
        _inject_fault(stage.name, unit.id)
        try:
            write_part(part, stage.run_unit(unit, self.ctx), stage.schema)
        except Exception as exc:  # one bad input must not stop the build: record it on the unit
            log.warning("[%s] unit %s failed: %r", stage.name, unit.id, exc)
            write_part(part, [stage.error_rows(unit, exc)], stage.schema)
        marker.unlink(missing_ok=True)
        return part

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"unit": []}
        for raw in batch["unit"]:
            unit = WorkUnit(**json.loads(raw))
            part = self.run_one(self.stages[0], unit)
            for st in self.stages[1:]:
                part = self.run_one(st, st.unit_for_part(part))
            out["unit"].append(unit.id)
        return out


# ---------------------------------------------------------------------------- stage hashing


def stage_hashes(cfg: PipelineConfig, stages: dict[str, Stage]) -> dict[str, str]:
    """Hash of each stage's own config chained with its upstream stages' hashes."""
    hashes: dict[str, str] = {}
    for name in cfg.stages:
        st = stages[name]
        ups = [hashes[u] for u in st.inputs if u in hashes]
        hashes[name] = config_hash({"stage": name, "config": st.config_section(), "upstream": ups})
    return hashes


def read_stats(sdir: Path) -> dict[str, Any] | None:
    p = sdir / "stats.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


# ---------------------------------------------------------------------------- running


@dataclasses.dataclass
class StageResult:
    name: str
    skipped: bool
    stats: dict[str, Any]


def prepare_stage(stage: Stage, ctx: StageContext, chash: str, force: bool) -> dict[str, Any] | None:
    """Return the stats of a stage that is done with this config (skip it); else make its folder ready:
    wiped when the config changed or --force, kept (for resume) otherwise."""
    sdir = ctx.stage_dir(stage.name)
    done = read_stats(sdir)
    if done and done.get("config_hash") == chash and not force:
        print(f"[{stage.name}] done already (config {chash}); skipped. Use --force to redo.")
        return done
    state = sdir / "_state.json"
    prev = json.loads(state.read_text()).get("config_hash") if state.is_file() else None
    if sdir.exists() and (force or done or prev != chash):
        shutil.rmtree(sdir)  # changed config or --force: redo from scratch
        for extra in stage.external_outputs(ctx):
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink(missing_ok=True)
    sdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, {"config_hash": chash})
    clean_tmp(sdir)
    return None


def execute_chain(chain: list[Stage], ctx: StageContext, cfg: PipelineConfig) -> int:
    """Run the units of chain[0] through every stage of the chain on one Ray Data actor pool.
    Returns how many units chain[0] planned."""
    import ray

    head = chain[0]
    units = head.plan(ctx)

    def done(u: WorkUnit) -> bool:
        return all((ctx.stage_dir(st.name) / f"part-{u.id}.parquet").exists() for st in chain)

    pending = [u for u in units if not done(u)]
    names = "+".join(st.name for st in chain)
    if len(pending) < len(units):
        print(f"[{names}] resuming: {len(units) - len(pending)} of {len(units)} units already done")
    if not pending:
        return len(units)
    res = [st.resources() for st in chain]
    cpus = max(r.num_cpus for r in res)
    n = min(worker_count(cfg, cpus), len(pending))
    items = [{"unit": json.dumps(dataclasses.asdict(u))} for u in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        UnitWorker,
        fn_constructor_kwargs={
            "stage_names": [st.name for st in chain],
            "cfg_dict": to_dict(cfg),
            "out_dir": str(ctx.out_dir),
            "run_id": uuid.uuid4().hex,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=n),
        num_cpus=cpus,
        num_gpus=max(r.num_gpus for r in res) or None,
        memory=max(r.memory_mb for r in res) * 1024 * 1024 or None,
    )
    with quiet_native_stderr():
        bar = tqdm(total=len(pending), desc=f"{names} ({n} workers)", unit="unit", dynamic_ncols=True)
        for _ in ds.iter_rows():
            bar.update(1)
        bar.close()
    return len(units)


def finish_stage(
    stage: Stage, ctx: StageContext, chash: str, seconds: float, units: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Finalize, count rows per reason, write stats.json (which marks the stage done), print a summary."""
    sdir = ctx.stage_dir(stage.name)
    stage.finalize(ctx)
    rows, counts = reason_counts(sdir)
    kept = counts.pop("", 0)
    stats = {
        "stage": stage.name,
        "rows_in": rows,
        "kept": kept,
        "rejected": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "units": units,
        "seconds": round(seconds, 3),
        "config_hash": chash,
        "output": str(sdir),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    stats.update(stage.extra_stats(ctx), **extra)
    write_json_atomic(sdir / "stats.json", stats)
    rej = ", ".join(f"{k} {v}" for k, v in stats["rejected"].items()) or "none"
    print(f"[{stage.name}] in {rows}, kept {kept}, rejected: {rej}; {seconds:.1f}s -> {sdir}")
    return stats


def chains(stages: list[Stage]) -> list[list[Stage]]:
    """Group consecutive stages into chains: a unit-aligned stage joins the chain of its only input."""
    out: list[list[Stage]] = []
    for st in stages:
        if out and st.unit_aligned and st.inputs == (out[-1][-1].name,):
            out[-1].append(st)
        else:
            out.append([st])
    return out


def run_build(
    cfg: PipelineConfig,
    out_dir: Path,
    stages: list[str],
    force: bool = False,
    limit: int | None = None,
    ray_address: str | None = None,
) -> list[StageResult]:
    """Run `stages` (in pipeline order) into out_dir. Config must already be validated."""
    from hfl.stages import STAGES

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    objs = {name: STAGES[name](cfg) for name in cfg.stages}
    for st in objs.values():
        st.limit = limit
    hashes = stage_hashes(cfg, objs)
    ctx = StageContext(out_dir)
    init_ray(cfg, ray_address)
    todo: list[Stage] = []
    results: list[StageResult] = []
    for name in cfg.stages:
        if name not in stages:
            continue
        for up in objs[name].inputs:
            ustats = read_stats(ctx.stage_dir(up))
            upstream_runs = any(st.name == up for st in todo)
            if (
                up in cfg.stages
                and not upstream_runs
                and (not ustats or ustats.get("config_hash") != hashes[up])
            ):
                raise RuntimeError(
                    f"stage '{name}' needs '{up}' done with the current config; run --stage {up} first "
                    f"(or --stage all)"
                )
        done = prepare_stage(objs[name], ctx, hashes[name], force)
        if done is not None:
            results.append(StageResult(name, True, done))
        else:
            todo.append(objs[name])
    for chain in chains(todo):
        t0 = time.time()
        n_units = execute_chain(chain, ctx, cfg)  # chained stages have one unit per head unit
        extra = {"fused_with": [s.name for s in chain]} if len(chain) > 1 else {}
        for st in chain:
            stats = finish_stage(st, ctx, hashes[st.name], time.time() - t0, n_units, extra)
            results.append(StageResult(st.name, False, stats))
    results.sort(key=lambda r: cfg.stages.index(r.name))
    return results
