"""The stage contract: a stage declares inputs, outputs and resources, plans work units, and turns each
unit into rows. The runner handles Ray, resume, Parquet output and stats."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from hfl.storage import Location

if TYPE_CHECKING:  # hfl.pipeline composes PipelineConfig from the stage classes: no import at run time
    from hfl.pipeline import PipelineConfig


class WorkerCrash(RuntimeError):
    """A unit's worker process died (native crash, OOM kill) in an earlier attempt of the same run."""


@dataclass
class Resources:
    """What one worker of the stage needs; model-backed stages run in actor pools (model loaded once)."""

    num_cpus: float = 1.0  # CPUs per worker
    num_gpus: float = 0.0  # GPUs per worker
    memory_mb: int = 0  # memory reserved per worker (0 = no reservation)
    batch_size: int = 32  # rows per model call (in a GPU pool, taken from all the units of one call)


@dataclass
class WorkUnit:
    """An independent, deterministic piece of a stage: one output part `part-<id>.parquet`."""

    id: str  # file-name-safe, stable across re-runs of the same input
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """Where a stage reads and writes."""

    out_dir: Location  # build output DIR: a local Path or a RemotePath (s3://, gs://, hdfs://, ...)

    def stage_dir(self, name: str) -> Location:
        return self.out_dir / "stages" / name


class Stage:
    """Base class. Subclasses set the class attributes and implement plan() and run_unit().

    A stage is one module: besides the work it declares, as class attributes read without an instance,
    its config section (`config_class`, a dataclass whose fields carry a one-line comment each; the
    section `cfg.<name>` of the pipeline config), the checks of that section (`check`), the reject
    reasons it writes with one line of human text each (`reasons`, shown in the report) and its rows in
    the dataset card (`card_rows`). hfl.pipeline builds the pipeline config from the registry
    (hfl.stages), so adding a stage is one module plus one registry line.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()  # upstream stages whose output this stage reads
    outputs: ClassVar[tuple[str, ...]] = ()  # columns this stage adds
    schema: ClassVar[pa.Schema | None] = None  # schema of the rows written (None: inferred)
    description: ClassVar[str] = ""
    # True when plan() makes exactly one unit per part of the single input stage, with the same id:
    # such a stage runs fused with its input stage, on the same actors, unit by unit.
    unit_aligned: ClassVar[bool] = False
    config_class: ClassVar[type | None] = None  # dataclass of section `cfg.<name>` (None: no section)
    path_keys: ClassVar[tuple[str, ...]] = ()  # section keys holding a path, relative to the config file
    reasons: ClassVar[dict[str, str]] = {}  # reject reasons this stage writes -> one line of human text
    # reason -> (column holding the value that decided it, key of its bar in this stage's section or None):
    # the per-video yield table (hfl.yields) shows the median of that column next to the bar
    measures: ClassVar[dict[str, tuple[str, str | None]]] = {}

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        """Problems of the config for running this stage (it is in `stages`): inputs readable, weights
        present, values in range; one message per problem, named by its key."""
        return []

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        """Rows this stage adds to the dataset card's tables: {"thresholds": [[stage, check, threshold],
        ...], "backends": [[role, backend], ...]}, in registry order after the card's own rows."""
        return {}

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.limit: int | None = None  # --limit: at most this many input units (debugging)
        # (units, rows) of each model call since the worker last cleared it: reported in stats.json pools
        self.model_calls: list[tuple[int, int]] = []

    # ------------------------------------------------------------------ declared properties
    def resources(self) -> Resources:
        return Resources()

    def config_section(self) -> dict[str, Any]:
        """The config this stage's output depends on (hashed for resume)."""
        return {}

    def thresholds(self) -> dict[str, Any]:
        """Thresholds shown by `hfl stages` and drawn in the report: {column: value}."""
        return {}

    # ------------------------------------------------------------------ work
    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        """Unit-aligned stages: one unit per part of the input stage. Others override this."""
        if not self.unit_aligned:
            raise NotImplementedError
        parts = sorted(ctx.stage_dir(self.inputs[0]).glob("part-*.parquet"))
        return [self.unit_for_part(p) for p in parts]

    def unit_for_part(self, part: Location) -> WorkUnit:
        """The unit that processes one part of the input stage (unit-aligned stages): same id, its path."""
        return WorkUnit(part.stem.removeprefix("part-"), {"path": str(part)})

    def setup(self) -> None:
        """Load models; called once per worker before any unit."""

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        """Yield batches of output rows for one unit (every row seen, with reject_reason)."""
        raise NotImplementedError

    def run_units(self, units: list[WorkUnit], ctx: StageContext) -> list[list[dict[str, Any]] | Exception]:
        """Output rows of several units, one list per unit (or the exception that failed that unit).

        A GPU pool hands its stages up to ``ray.gpu_batch_units`` units at once. This default runs them one
        after the other (run_unit); a stage whose model call is the GPU work overrides it to put rows of
        several units in one model call (caption). Output rows must equal those of run_unit per unit."""
        out: list[list[dict[str, Any]] | Exception] = []
        for unit in units:
            try:
                out.append([row for rows in self.run_unit(unit, ctx) for row in rows])
            except Exception as exc:
                out.append(exc)
        return out

    def error_rows(self, unit: WorkUnit, exc: Exception) -> list[dict[str, Any]]:
        """Rows recording an unexpected failure of a whole unit; the default re-raises (fails the build)."""
        raise exc

    def finalize(self, ctx: StageContext) -> None:
        """Runs on the driver after all units are done (e.g. write a manifest)."""

    def external_outputs(self, ctx: StageContext) -> list[Location]:
        """Outputs outside the stage folder, removed with it when the stage is redone."""
        return []

    def extra_stats(self, ctx: StageContext) -> dict[str, Any]:
        """Stage-specific figures merged into stats.json."""
        return {}
