"""Runs stages on Ray Data with resume: done units are skipped, stats.json marks a stage done.

Execution: consecutive unit-aligned stages form one streaming Ray Data pipeline. Inside it, stages fuse
(run one after the other on the same actor) only when their resource shapes (CPUs, GPUs, memory) match; a
stage with another shape (a GPU captioner) is its own operator with its own actor pool, fed unit by unit by
the operator before it while that one is still running (Ray Data's streaming executor: backpressure, not
barriers). A CPU pool's actor takes one unit per call; a GPU pool's actor takes up to ray.gpu_batch_units
units per call, so that its stages' model calls can span units (Stage.run_units). Stages that need all of
their input first (split, shard) run alone, after their inputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from tqdm import tqdm

from hfl.config import config_hash, to_dict
from hfl.engine.parts import clean_tmp, reason_counts, write_json_atomic, write_part
from hfl.engine.stage import Resources, Stage, StageContext, WorkerCrash, WorkUnit
from hfl.storage import Location, location, rmtree, storage_env

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig

log = logging.getLogger("hfl")


# ---------------------------------------------------------------------------- Ray

AUTH_FIX = (
    "the Ray cluster at {address} is reachable but refused this driver, most likely because it uses token "
    "authentication and this driver's token is missing or wrong (a Ray version other than the cluster's "
    "fails the same way). Fix: "
    "export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token> (on the head node: "
    "`cat ~/.ray/auth_token`, or the token the cluster was started with), then run hfl build again"
)


class RayConnectError(RuntimeError):
    """Connecting to the Ray cluster failed; the message names the fix."""


def _reachable(address: str) -> bool:
    """True when host:port (a GCS address; ray:// or auto are not probed) accepts a TCP connection."""
    import socket

    host, _, port = address.rpartition(":")
    if not port.isdigit() or "://" in address:
        return False
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return True
    except OSError:
        return False


def init_ray(cfg: PipelineConfig, address: str | None = None) -> None:
    """Connect to a cluster (address / RAY_ADDRESS) or start an embedded Ray on this machine (with a
    watchdog that ends its processes if this driver dies: hfl.engine.watchdog)."""
    import ray

    if ray.is_initialized():
        return
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # AuthenticationError, or ConnectionError after the GCS refused the token
            text = f"{type(exc).__name__}: {exc}"
            # A wrong or missing token shows as an AuthenticationError, or (the GCS answering
            # "Unauthenticated" to every retry) as a ConnectionError to a GCS port that accepts connections.
            if "token" in text.lower() or "uthenticat" in text or _reachable(address):
                raise RayConnectError(AUTH_FIX.format(address=address)) from exc
            raise RayConnectError(f"cannot connect to the Ray cluster at {address}: {text[:400]}") from exc
    else:
        # An embedded cluster keeps Ray's default (token authentication on, a local token generated if
        # missing); Ray announces that default with a warning on every start, which is not news to act on.
        # (Setting RAY_AUTH_MODE here instead is unsafe: Ray's native side has read it at import time.)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        from hfl.engine.watchdog import start_watchdog

        ray.init(
            num_cpus=cfg.ray.num_cpus or None,
            num_gpus=cfg.ray.num_gpus if cfg.ray.num_gpus >= 0 else None,
            object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            **kwargs,
        )
        start_watchdog()
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


def stage_resources(cfg: PipelineConfig, stage: Stage) -> Resources:
    """The stage's declared resources with ray.stage_resources.<stage> applied."""
    res = stage.resources()
    over = cfg.ray.stage_resources.get(stage.name, {})
    return dataclasses.replace(
        res,
        num_cpus=float(over.get("num_cpus", res.num_cpus)),
        num_gpus=float(over.get("num_gpus", res.num_gpus)),
        memory_mb=int(over.get("memory_mb", res.memory_mb)),
    )


def shape(res: Resources) -> tuple[float, float, int]:
    """What a pool's actors request: stages with the same shape may share actors."""
    return (res.num_cpus, res.num_gpus, res.memory_mb)


def _inject_fault(stage: str, unit_id: str) -> None:
    """Fault injection for tests: HFL_FAULT_SEGFAULT=<stage>:<unit id> kills the worker with SIGSEGV;
    HFL_FAULT_SLEEP=<stage>:<seconds> slows every unit of a stage (to kill a node mid-build)."""
    if os.environ.get("HFL_FAULT_SEGFAULT") == f"{stage}:{unit_id}":
        os.kill(os.getpid(), signal.SIGSEGV)
    sleep = os.environ.get("HFL_FAULT_SLEEP", "")
    if sleep.startswith(f"{stage}:"):
        time.sleep(float(sleep.split(":", 1)[1]))


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:
        return ""


def _node_dead(node_id: str) -> bool:
    """True when the Ray node with this id is known and no longer alive."""
    if not node_id:
        return False
    try:
        import ray

        return any(n["NodeID"] == node_id and not n["Alive"] for n in ray.nodes())
    except Exception:
        return False


def attempt_verdict(marker: str, run_id: str) -> str:
    """What to do with a unit whose attempt marker holds `marker` (``run node units``; older markers have no
    units field): ``crash`` when a worker of this run died with this unit alone in flight (record it, do not
    retry), ``alone`` when it died with several units in flight (which one crashed is unknown: run this one
    by itself, so a second crash names it), ``retry`` for a marker of an earlier run or a dead node."""
    run, node, units = ([*marker.split(" "), "", ""])[:3]
    if run != run_id or _node_dead(node):
        return "retry"
    return "alone" if units.isdigit() and int(units) > 1 else "crash"


class UnitWorker:
    """Ray Data actor of one pool: builds its stages once (models loaded once), then runs whole units.

    With several stages (fused: same resource shape, unit-aligned), each unit runs through all of them in
    turn: stage i+1 reads the part stage i has just written. The first pool reads units; later pools read
    the part the pool before wrote. Parts that exist already are skipped (resume).

    A call holds one unit (CPU pools) or up to ``ray.gpu_batch_units`` units (GPU pools): then each stage
    gets the pending units of the call together (Stage.run_units), so that its model calls take rows of
    several units at once; every unit still gets its own part and its own attempt marker."""

    def __init__(
        self,
        stage_names: list[str],
        cfg_dict: dict[str, Any],
        out_dir: str,
        run_id: str = "",
        first: bool = True,
        pool: int = 0,
    ) -> None:
        import cv2

        from hfl.pipeline import PipelineConfig
        from hfl.stages import STAGES
        from hfl.typedconf import build

        cv2.setNumThreads(1)
        errors: list[str] = []
        cfg = build(PipelineConfig, cfg_dict, "", errors)
        self.stages: list[Stage] = [STAGES[name](cfg) for name in stage_names]
        for st in self.stages:
            st.setup()
        self.stage = self.stages[0]
        self.ctx = StageContext(location(out_dir))
        self.run_id = run_id
        self.first = first
        self.pool = pool
        self.gpu_ids = self._gpu_ids()

    @staticmethod
    def _gpu_ids() -> list[str]:
        try:
            import ray

            return [str(g) for g in ray.get_gpu_ids()]
        except Exception:  # not inside Ray (unit tests call the worker directly)
            return []

    def _paths(self, stage: Stage, unit: WorkUnit) -> tuple[Location, Location]:
        sdir = self.ctx.stage_dir(stage.name)
        return sdir / f"part-{unit.id}.parquet", sdir / "_attempts" / unit.id

    def _mark(self, marker: Location, units: int) -> None:
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(f"{self.run_id} {_node_id()} {units}")

    def _record_error(self, stage: Stage, unit: WorkUnit, part: Location, exc: Exception) -> None:
        """One bad input must not stop the build: the unit's failure is its part (error_rows may re-raise)."""
        if not isinstance(exc, WorkerCrash):
            log.warning("[%s] unit %s failed: %r", stage.name, unit.id, exc)
        write_part(part, [stage.error_rows(unit, exc)], stage.schema)

    def run_one(self, stage: Stage, unit: WorkUnit) -> Location:
        part, marker = self._paths(stage, unit)
        if part.exists():
            return part
        # An attempt marker outlives a worker killed by a native crash (segfault in a decoder, OOM kill):
        # when Ray retries the unit on a restarted worker in the same run, the unit is recorded, not retried.
        # A unit whose node died (raylet killed, node preempted) is retried: the marker names the node.
        if marker.is_file() and attempt_verdict(marker.read_text(), self.run_id) == "crash":
            crash = WorkerCrash(f"the worker died while processing unit {unit.id} (native crash or killed)")
            self._record_error(stage, unit, part, crash)
            marker.unlink(missing_ok=True)
            return part
        self._mark(marker, 1)
        _inject_fault(stage.name, unit.id)
        try:
            write_part(part, stage.run_unit(unit, self.ctx), stage.schema)
        except Exception as exc:  # one bad input must not stop the build: record it on the unit
            self._record_error(stage, unit, part, exc)
        marker.unlink(missing_ok=True)
        return part

    def run_many(self, stage: Stage, units: list[WorkUnit]) -> list[Location]:
        """Run several units of one stage in one go (Stage.run_units); returns each unit's part. Units that
        were in flight when a worker of this run died are run one by one (run_one), so that a native crash is
        recorded on the unit that caused it and the others are redone."""
        paths = [self._paths(stage, u) for u in units]
        fresh: list[int] = []
        for i, (part, marker) in enumerate(paths):
            if part.exists():
                continue
            if marker.is_file() and attempt_verdict(marker.read_text(), self.run_id) != "retry":
                self.run_one(stage, units[i])
            else:
                fresh.append(i)
        if len(fresh) == 1:
            self.run_one(stage, units[fresh[0]])
        elif fresh:
            for i in fresh:
                self._mark(paths[i][1], len(fresh))
            for i in fresh:
                _inject_fault(stage.name, units[i].id)
            batch = [units[i] for i in fresh]
            try:
                results = stage.run_units(batch, self.ctx)
            except Exception as exc:  # a failure of the shared call is every unit's failure
                results = [exc] * len(batch)
            for i, res in zip(fresh, results, strict=True):
                part, marker = paths[i]
                if isinstance(res, Exception):
                    self._record_error(stage, units[i], part, res)
                else:
                    write_part(part, [res], stage.schema)
                marker.unlink(missing_ok=True)
        return [part for part, _ in paths]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: list(v) for k, v in batch.items()}
        t0 = time.time()
        call_id = uuid.uuid4().hex[:12]
        n = len(batch["unit"])
        for st in self.stages:
            st.model_calls.clear()
        if self.first:
            head = [WorkUnit(**json.loads(raw)) for raw in batch["unit"]]
            ids = [u.id for u in head]
            parts = self.run_many(self.stages[0], head)
            rest = self.stages[1:]
        else:
            ids = [str(raw) for raw in batch["unit"]]
            parts, rest = [location(str(p)) for p in batch["part"]], self.stages
        for st in rest:
            todo = [st.unit_for_part(p) for p in parts]
            parts = self.run_many(st, todo)
        calls = {st.name: [list(c) for c in st.model_calls] for st in self.stages if st.model_calls}
        t1 = time.time()
        out["unit"] = ids
        out["part"] = [str(p) for p in parts]
        # per unit: what ran where; the call's model calls ride on its first unit only
        out[f"pool{self.pool}"] = [
            json.dumps([self.pool, os.getpid(), self.gpu_ids, t0, t1, call_id, n, calls if i == 0 else {}])
            for i in range(n)
        ]
        return out


def pools(chain: list[Stage], cfg: PipelineConfig) -> list[list[Stage]]:
    """Split a chain of unit-aligned stages into pools: consecutive stages with the same resource shape."""
    out: list[list[Stage]] = []
    for st in chain:
        if out and shape(stage_resources(cfg, st)) == shape(stage_resources(cfg, out[-1][-1])):
            out[-1].append(st)
        else:
            out.append([st])
    return out


def pool_sizes(
    groups: list[list[Stage]], cfg: PipelineConfig, cluster: dict[str, float], n_units: int
) -> list[int]:
    """Actors per pool. GPU pools: one actor per GPU share, but at most what leaves every CPU pool one
    actor's CPUs; CPU pools share the CPUs left (ray.workers overrides). Never more actors than units."""
    res = [stage_resources(cfg, g[0]) for g in groups]
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    sizes = [0] * len(groups)
    cpu_pools = [i for i, r in enumerate(res) if r.num_gpus == 0]
    reserve = sum(res[i].num_cpus for i in cpu_pools)  # one actor per CPU pool, always
    for i, r in enumerate(res):
        if r.num_gpus > 0:
            n = int(gpus // r.num_gpus)
            if r.num_cpus > 0:
                n = min(n, int(max(cpus - reserve, 0) // r.num_cpus))
            if n < 1:
                raise RuntimeError(
                    f"stage(s) {'+'.join(s.name for s in groups[i])} need {r.num_gpus:g} GPU and "
                    f"{r.num_cpus:g} CPU per worker; the Ray cluster has {gpus:g} GPU and {cpus:g} CPU"
                )
            sizes[i] = n
            cpus -= n * r.num_cpus
            gpus -= n * r.num_gpus
    for i in cpu_pools:
        share = max(cpus, 1.0) / len(cpu_pools)
        sizes[i] = cfg.ray.workers or max(1, int(share // max(res[i].num_cpus, 1e-6)))
    return [max(1, min(n, n_units)) for n in sizes]


# ---------------------------------------------------------------------------- stage hashing


def stage_hashes(cfg: PipelineConfig, stages: dict[str, Stage]) -> dict[str, str]:
    """Hash of each stage's own config chained with its upstream stages' hashes."""
    hashes: dict[str, str] = {}
    for name in cfg.stages:
        st = stages[name]
        ups = [hashes[u] for u in st.inputs if u in hashes]
        hashes[name] = config_hash({"stage": name, "config": st.config_section(), "upstream": ups})
    return hashes


def read_stats(sdir: Location) -> dict[str, Any] | None:
    p = sdir / "stats.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------- running


@dataclasses.dataclass
class StageResult:
    name: str
    skipped: bool
    stats: dict[str, Any]


def read_stats_file(p: Location) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def prepare_stage(stage: Stage, ctx: StageContext, chash: str, force: bool) -> dict[str, Any] | None:
    """Return the stats of a stage that is done with this config (skip it); else make its folder ready:
    wiped when the config changed or --force, kept (for resume) otherwise."""
    sdir = ctx.stage_dir(stage.name)
    done = read_stats(sdir)
    if done and done.get("config_hash") == chash and not force:
        print(f"[{stage.name}] done already (config {chash}); skipped. Use --force to redo.")
        return done
    state = sdir / "_state.json"
    prev = (read_stats_file(state) or {}).get("config_hash")
    if sdir.exists() and (force or done or prev != chash):
        rmtree(sdir)  # changed config or --force: redo from scratch
        for extra in stage.external_outputs(ctx):
            rmtree(extra)
    sdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, {"config_hash": chash})
    clean_tmp(sdir)
    return None


def execute_chain(
    chain: list[Stage], ctx: StageContext, cfg: PipelineConfig
) -> tuple[int, list[dict[str, Any]]]:
    """Run the units of chain[0] through every stage of the chain: one streaming Ray Data pipeline with an
    actor pool per resource shape. Returns how many units chain[0] planned, and per pool what ran where."""
    import ray

    head = chain[0]
    units = head.plan(ctx)
    have = {st.name: {p.name for p in ctx.stage_dir(st.name).glob("part-*.parquet")} for st in chain}
    pending = [u for u in units if not all(f"part-{u.id}.parquet" in have[st.name] for st in chain)]
    names = "+".join(st.name for st in chain)
    done = {st.name: sum(f"part-{u.id}.parquet" in have[st.name] for u in units) for st in chain}
    if any(done.values()):
        per = ", ".join(f"{k} {v} of {len(units)}" for k, v in done.items())
        print(f"[{names}] resuming: {per} units already done")
    if not pending:
        return len(units), []
    groups = pools(chain, cfg)
    sizes = pool_sizes(groups, cfg, ray.cluster_resources(), len(pending))
    run_id = uuid.uuid4().hex
    items = [{"unit": json.dumps(dataclasses.asdict(u))} for u in pending]
    # a remote output (and input) is reached from every node with the driver's endpoint and credentials
    env = storage_env(str(ctx.out_dir), cfg.mine.input)
    remote_args: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    per_call = [  # units per call of each pool's actors
        units_per_call(cfg, stage_resources(cfg, g[0]), len(pending), n)
        for g, n in zip(groups, sizes, strict=True)
    ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for i, (group, n) in enumerate(zip(groups, sizes, strict=True)):
        res = stage_resources(cfg, group[0])
        ds = ds.map_batches(
            UnitWorker,
            fn_constructor_kwargs={
                "stage_names": [st.name for st in group],
                "cfg_dict": to_dict(cfg),
                "out_dir": str(ctx.out_dir),
                "run_id": run_id,
                "first": i == 0,
                "pool": i,
            },
            batch_size=per_call[i],
            # one call in flight per actor: Ray Data's default (2) queues the first units on the first actor
            # that is ready while the others still load models, so 2 big units (two long videos) ran one
            # after the other on one of 2 actors (measured: benchmarks/long_video.py)
            compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
            **remote_args,
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus or None,
            memory=res.memory_mb * 1024 * 1024 or None,
        )
    desc = " | ".join(f"{'+'.join(s.name for s in g)} x{n}" for g, n in zip(groups, sizes, strict=True))
    seen: list[list[Any]] = []
    with quiet_native_stderr():
        bar = tqdm(total=len(pending), desc=desc, unit="unit", dynamic_ncols=True)
        for row in ds.iter_rows():
            seen += [json.loads(row[f"pool{i}"]) for i in range(len(groups))]
            bar.update(1)
        bar.close()
    report = []
    for i, (group, n) in enumerate(zip(groups, sizes, strict=True)):
        mine = [r for r in seen if r[0] == i]
        res = stage_resources(cfg, group[0])
        report.append(
            {
                "stages": [s.name for s in group],
                "actors": n,
                "num_cpus": res.num_cpus,
                "num_gpus": res.num_gpus,
                "memory_mb": res.memory_mb,
                "gpu_ids": sorted({g for r in mine for g in r[2]}),
                "started": min((r[3] for r in mine), default=None),
                "ended": max((r[4] for r in mine), default=None),
                **call_report(mine, per_call[i]),
            }
        )
    return len(units), report


def units_per_call(cfg: PipelineConfig, res: Resources, units: int = 0, actors: int = 1) -> int:
    """Units per call of a pool's actor: one for a CPU pool; for a GPU pool ray.gpu_batch_units, but no more
    than an even share of the run's `units` over its `actors` (else one actor would take every unit of a
    small run while the others wait, and the pool would start only once the CPU pools had finished)."""
    if res.num_gpus <= 0:
        return 1
    n = max(1, cfg.ray.gpu_batch_units)
    return min(n, max(1, -(-units // max(actors, 1)))) if units else n


def call_report(seen: list[list[Any]], limit: int) -> dict[str, Any]:
    """Calls of one pool's actors and the model calls its stages made (Stage.model_calls), from the rows
    UnitWorker returned: ``[pool, pid, gpu ids, start, end, call id, units in the call, model calls]``."""
    calls = {r[5]: r[6] for r in seen}
    model: dict[str, list[list[int]]] = {}
    for r in seen:
        for stage, entries in r[7].items():
            model.setdefault(stage, []).extend(entries)
    out: dict[str, Any] = {
        "units_per_call_limit": limit,
        "calls": len(calls),
        "units_per_call_max": max(calls.values(), default=0),
    }
    if model:
        out["model_calls"] = {
            stage: {
                "calls": len(entries),
                "rows": sum(e[1] for e in entries),
                "rows_per_call_max": max(e[1] for e in entries),
                "units_per_call_max": max(e[0] for e in entries),
                "calls_with_several_units": sum(e[0] > 1 for e in entries),
            }
            for stage, entries in model.items()
        }
    return out


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


def execution_plan(cfg: PipelineConfig) -> dict[str, str]:
    """stage -> how it runs for this config: `run N, pool M of K: a+b (cpus=.. gpus=..)`."""
    from hfl.stages import STAGES

    objs = [STAGES[name](cfg) for name in cfg.stages if name in STAGES]
    out: dict[str, str] = {}
    for ci, chain in enumerate(chains(objs), 1):
        groups = pools(chain, cfg)
        for pi, group in enumerate(groups, 1):
            r = stage_resources(cfg, group[0])
            if not chain[0].unit_aligned and len(chain) == 1:
                kind = "barrier: runs after its inputs"
            elif r.num_gpus > 0:
                kind = f"streaming, up to {units_per_call(cfg, r)} units per call: ray.gpu_batch_units"
            else:
                kind = "streaming, one unit per call"
            text = (
                f"run {ci}, pool {pi} of {len(groups)}: {'+'.join(s.name for s in group)} "
                f"(cpus={r.num_cpus:g} gpus={r.num_gpus:g} memory_mb={r.memory_mb}; {kind})"
            )
            for st in group:
                out[st.name] = text
    return out


def run_build(
    cfg: PipelineConfig,
    out_dir: Location | str,
    stages: list[str],
    force: bool = False,
    limit: int | None = None,
    ray_address: str | None = None,
) -> list[StageResult]:
    """Run `stages` (in pipeline order) into out_dir. Config must already be validated."""
    from hfl.stages import STAGES

    out_dir = location(out_dir)
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
        n_units, pool_report = execute_chain(chain, ctx, cfg)  # chained stages: one unit per head unit
        extra: dict[str, Any] = {"fused_with": [s.name for s in chain]} if len(chain) > 1 else {}
        if pool_report:
            extra["pools"] = pool_report
        for st in chain:
            stats = finish_stage(st, ctx, hashes[st.name], time.time() - t0, n_units, extra)
            results.append(StageResult(st.name, False, stats))
    results.sort(key=lambda r: cfg.stages.index(r.name))
    return results
