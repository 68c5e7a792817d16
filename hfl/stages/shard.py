"""Stage `shard`: kept rows of the source stage -> WebDataset tars with stable keys and shard names."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads

from hfl.config import config_hash
from hfl.engine.parts import write_json_atomic
from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.samples import encode_sample, manifest_fields
from hfl.storage import Location, dataset, parquet_file, read_table, write_bytes_atomic, write_table

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig


@dataclass
class ShardConfig:
    """Section `shard` of the pipeline config (YAML `shard:`, `--set shard.<key>=...`)."""

    source: str = ""  # stage whose kept rows become samples; empty = the stage before `shard` in `stages`
    samples_per_shard: int = 1000  # samples per tar
    default_split: str = "all"  # split name for rows without a `split` column


def used_backends(cfg: PipelineConfig) -> dict[str, str]:
    """Backend names of the stages this pipeline runs (recorded in every sample's provenance)."""
    b = cfg.backends
    out = {"detector": b.face.detector, "landmarker": b.face.landmarker, "quality": b.quality.scorer}
    if "pair" in cfg.stages:
        out["semantic"] = b.expression.semantic
    if "identity" in cfg.stages:
        out["identity"] = cfg.identity.decider
        out["embedder"] = b.face.embedder
        if b.clip.path:
            out["clip"] = "clip"
    if "caption" in cfg.stages:
        out["captioner"] = b.expression.captioner
        out["pose"] = "pnp-68-meanshape"
    return out


def shard_name(split: str, index: int) -> str:
    return f"hfl-{split}-{index:06d}"


class ShardStage(Stage):
    name = "shard"
    outputs = ("split", "shard")
    description = "write kept rows as WebDataset shards + per-shard stats + manifest.parquet"
    config_class = ShardConfig

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        errors: list[str] = []
        if cfg.shard.source and cfg.shard.source not in cfg.stages:
            errors.append(f"shard.source: '{cfg.shard.source}' is not one of this pipeline's stages")
        if cfg.shard.samples_per_shard < 1:
            errors.append("shard.samples_per_shard: must be >= 1")
        return errors

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.source,)

    @property
    def source(self) -> str:
        """shard.source, else the stage listed before `shard` in the pipeline."""
        stages = self.cfg.stages
        if self.cfg.shard.source:
            return self.cfg.shard.source
        i = stages.index(self.name) if self.name in stages else len(stages)
        return stages[i - 1] if i > 0 else "quality"

    def resources(self) -> Resources:
        return Resources(num_cpus=1, batch_size=256)

    def config_section(self) -> dict[str, Any]:
        return {"shard": asdict(self.cfg.shard)}

    def thresholds(self) -> dict[str, Any]:
        return {"samples_per_shard": self.cfg.shard.samples_per_shard}

    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        """Sort kept keys (per split) and cut them into shards: stable for the same kept set."""
        src = ctx.stage_dir(self.source)
        by_split: dict[str, list[tuple[str, str]]] = {}
        for p in sorted(src.glob("part-*.parquet")):
            names = parquet_file(p).schema_arrow.names
            cols = ["key", "reject_reason"] + (["split"] if "split" in names else [])
            t = read_table(p, columns=cols).to_pylist()
            for r in t:
                if r["reject_reason"] is None:
                    split = r.get("split") or self.cfg.shard.default_split
                    by_split.setdefault(split, []).append((r["key"], str(p)))
        units = []
        n = self.cfg.shard.samples_per_shard
        for split in sorted(by_split):
            rows = sorted(by_split[split])
            for i in range(0, len(rows), n):
                chunk = rows[i : i + n]
                units.append(
                    WorkUnit(
                        f"{split}-{i // n:06d}",
                        {
                            "split": split,
                            "index": i // n,
                            "keys": [k for k, _ in chunk],
                            "parts": sorted({p for _, p in chunk}),
                        },
                    )
                )
        return units

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        split, index = unit.payload["split"], unit.payload["index"]
        keys = unit.payload["keys"]
        wanted = set(keys)
        rows: dict[str, dict[str, Any]] = {}
        for part in unit.payload["parts"]:
            table = dataset(part).to_table(filter=pads.field("key").isin(pa.array(sorted(wanted))))
            for r in table.to_pylist():
                rows[r["key"]] = r
        out = ctx.out_dir / "shards" / split
        out.mkdir(parents=True, exist_ok=True)
        name = shard_name(split, index)
        chash = config_hash(self.cfg)
        backends = used_backends(self.cfg)
        buf = io.BytesIO()
        manifest = []
        import webdataset as wds  # lazy: it imports torch (~1.5 s), which only this stage needs

        with wds.TarWriter(buf, mtime=0.0, encoder=False) as sink:
            for key in keys:
                sink.write(encode_sample(rows[key], chash, backends))
                manifest.append({**manifest_fields(rows[key]), "split": split, "shard": f"{name}.tar"})
        tar = out / f"{name}.tar"
        data = buf.getvalue()
        write_bytes_atomic(tar, data)
        write_json_atomic(
            out / f"{name}.stats.json",
            {
                "shard": f"{name}.tar",
                "split": split,
                "samples": len(keys),
                "bytes": len(data),
                "first_key": keys[0],
                "last_key": keys[-1],
            },
        )
        yield manifest

    def external_outputs(self, ctx: StageContext) -> list[Location]:
        return [ctx.out_dir / "shards", ctx.out_dir / "manifest.parquet"]

    def finalize(self, ctx: StageContext) -> None:
        parts = sorted(ctx.stage_dir(self.name).glob("part-*.parquet"))
        tables = [read_table(p) for p in parts]
        tables = [t for t in tables if t.num_rows]
        dest = ctx.out_dir / "manifest.parquet"
        if tables:
            write_table(pa.concat_tables(tables, promote_options="permissive"), dest)
        else:
            write_table(
                pa.table(
                    {
                        "key": pa.array([], pa.string()),
                        "split": pa.array([], pa.string()),
                        "shard": pa.array([], pa.string()),
                    }
                ),
                dest,
            )

    def extra_stats(self, ctx: StageContext) -> dict[str, Any]:
        shards = sorted((ctx.out_dir / "shards").glob("*/*.stats.json"))
        per_split: dict[str, dict[str, int]] = {}
        for s in shards:
            d = json.loads(s.read_text())
            e = per_split.setdefault(d["split"], {"shards": 0, "samples": 0})
            e["shards"] += 1
            e["samples"] += d["samples"]
        return {"splits": per_split}
