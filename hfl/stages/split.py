"""Stage `split` (paper Sec. 4.1: 1,007 stratified test pairs): train/test split with no leakage.

* Groups: pairs of one video are one group; with `group_by: identity`, videos whose mean face embeddings
  (from `identity`) are closer than `link_distance` are merged (union-find), so one person never sits
  in both splits.
* Inputs: the kept rows of `caption` (real pairs) and `validate` (synthetic edits), those of them in the
  pipeline, or `split.inputs`. A synthetic edit keeps the video_id of its source frame, so it joins that
  video's group: a real pair and a synthetic edit of the same person never sit in different splits.
* Strata: subset x instructed expression x pose bucket (yaw and pitch units, clipped to +-2).
* Test size: min(test_pairs, round(test_fraction * pairs)). Whole groups are moved to test in a seeded
  random order while they fill strata that are still short of their proportional target. A build with
  two or more groups whose formula gives no group (small builds) puts its smallest group in test
  (`min_test_groups: 1`), so every multi-person build can be evaluated on a person it was not trained on.
The planner reads only small columns of all caption parts; units then copy each part, adding the split.
The dataset card (DIR/README.md) is written at the end (hfl.card).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.schema import SPLIT_SCHEMA
from hfl.stages.rows import kept_batches
from hfl.storage import Location, parquet_file, read_table
from hfl.tracking import UnionFind

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig

PLAN_COLUMNS = [
    "key",
    "video_id",
    "src_embedding",
    "edit_expression",
    "yaw_units",
    "pitch_units",
    "subset",
    "reject_reason",
]


def stratum(row: dict[str, Any]) -> str:
    yaw, pitch = (int(np.clip(row.get(k) or 0, -2, 2)) for k in ("yaw_units", "pitch_units"))
    return f"{row.get('subset') or 'real'}|{row.get('edit_expression') or 'none'}|yaw{yaw:+d}pitch{pitch:+d}"


def link_videos(video_ids: list[str], embeddings: np.ndarray, max_distance: float) -> dict[str, str]:
    """Union-find over videos whose mean embeddings are closer than max_distance; -> video_id: group id.

    Distances are computed in blocks of 1024 videos, so memory stays O(1024 * V).
    """
    sets = UnionFind(len(video_ids))
    sq = (embeddings**2).sum(1)
    for start in range(0, len(video_ids), 1024):
        block = embeddings[start : start + 1024]
        d2 = sq[start : start + 1024, None] + sq[None, :] - 2 * block @ embeddings.T
        for a, b in zip(*np.nonzero(d2 < max_distance**2), strict=True):
            sets.union(start + int(a), int(b))
    return {v: f"g-{video_ids[sets.find(i)]}" for i, v in enumerate(video_ids)}


def assign_groups(group_strata: dict[str, Counter[str]], n_test: int, seed: int) -> set[str]:
    """Groups moved to test: seeded order, a group joins when it fills more short strata than it overfills."""
    total: Counter[str] = Counter()
    for c in group_strata.values():
        total.update(c)
    n = sum(total.values())
    if n_test <= 0 or n == 0:
        return set()
    remaining = {s: n_test * k / n for s, k in total.items()}
    order = sorted(group_strata)
    random.Random(seed).shuffle(order)
    test: set[str] = set()
    taken = 0
    for g in order:
        c = group_strata[g]
        size = sum(c.values())
        if taken + size > n_test * 1.1 + 1:
            continue
        gain = sum(min(k, max(remaining[s], 0.0)) for s, k in c.items())
        if gain > 0 and gain >= (size - gain):
            test.add(g)
            taken += size
            for s, k in c.items():
                remaining[s] -= k
        if taken >= n_test:
            break
    return test


def at_least_one_test_group(group_strata: dict[str, Counter[str]], test: set[str], seed: int) -> set[str]:
    """With >= 2 groups and an empty test split (a small build, where round(test_fraction * n) is smaller
    than any group), move the smallest group with real pairs to test (ties in seeded order): every build
    with more than one person gets a test split, and no group is ever split."""
    if test or len(group_strata) < 2:
        return test
    order = sorted(group_strata)
    random.Random(seed).shuffle(order)
    # a group with real pairs: their faces passed identity verification, so the person is known; a group
    # of synthetic edits alone (e.g. of a clip too degraded for its embedding to link) may be anyone
    real = [g for g in order if any(k.startswith("real|") for k in group_strata[g])]
    return {min(real or order, key=lambda g: sum(group_strata[g].values()))}


@dataclass
class SplitConfig:
    """Section `split` of the pipeline config (YAML `split:`, `--set split.<key>=...`)."""

    test_pairs: int = 1007  # test-set size at full scale (paper: 1,007)
    test_fraction: float = 0.0067  # test share when that gives fewer pairs than test_pairs (1007/151007)
    group_by: str = "identity"  # identity (videos linked by face embedding) | video
    link_distance: float = 0.5  # videos whose mean face embeddings are closer than this are one person
    min_test_groups: int = 1  # with >= 2 groups, at least this many (0 or 1) in test, even in small builds
    inputs: list[str] = field(default_factory=list)  # stages whose kept rows are split; empty: caption
    # and validate, those of them in `stages`


class SplitStage(Stage):
    name = "split"
    outputs = ("split", "group_id", "stratum")
    schema = SPLIT_SCHEMA
    description = (
        "stratified train/test split (expression x pose), no video or identity in both; dataset card"
    )
    config_class = SplitConfig

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        errors: list[str] = []
        sp = cfg.split
        for name in sp.inputs:
            if name not in cfg.stages:
                errors.append(f"split.inputs: '{name}' is not one of this pipeline's stages")
        if sp.group_by not in ("identity", "video"):
            errors.append("split.group_by: one of identity, video")
        if sp.min_test_groups not in (0, 1):
            errors.append("split.min_test_groups: 0 or 1")
        if not 0 <= sp.test_fraction < 1 or sp.test_pairs < 0:
            errors.append("split.test_fraction: must be in [0, 1); split.test_pairs: >= 0")
        return errors

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        """split.inputs, else caption and validate, those in the pipeline (caption when neither is)."""
        if self.cfg.split.inputs:
            return tuple(self.cfg.split.inputs)
        found = tuple(s for s in ("caption", "validate") if s in self.cfg.stages)
        return found or ("caption",)

    def resources(self) -> Resources:
        return Resources(num_cpus=1, batch_size=64)

    def config_section(self) -> dict[str, Any]:
        return {"split": asdict(self.cfg.split), "seed": self.cfg.seed, "inputs": list(self.inputs)}

    def thresholds(self) -> dict[str, Any]:
        s = self.cfg.split
        return {"test_pairs": s.test_pairs, "test_fraction": s.test_fraction}

    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        ids: dict[Location, str] = {}
        parts: list[Location] = []
        for stage in self.inputs:
            for p in sorted(ctx.stage_dir(stage).glob("part-*.parquet")):
                # unit ids stay unique across input stages: prefixed by the stage when there are several
                ids[p] = p.stem.removeprefix("part-") if len(self.inputs) == 1 else f"{stage}-{p.stem[5:]}"
                parts.append(p)
        rows_by_part: dict[Location, list[dict[str, Any]]] = {}
        for p in parts:
            have = set(parquet_file(p).schema_arrow.names)
            cols = [c for c in PLAN_COLUMNS if c in have]
            table = read_table(p, columns=cols).to_pylist()
            rows_by_part[p] = [r for r in table if r.get("reject_reason") is None]
        rows = [r for p in parts for r in rows_by_part[p]]
        groups = self.groups(rows)
        group_strata: dict[str, Counter[str]] = {}
        for r in rows:
            group_strata.setdefault(groups[r["video_id"]], Counter())[stratum(r)] += 1
        s = self.cfg.split
        n_test = min(s.test_pairs, round(s.test_fraction * len(rows)))
        test = assign_groups(group_strata, n_test, self.cfg.seed)
        if s.min_test_groups > 0:
            test = at_least_one_test_group(group_strata, test, self.cfg.seed)
        units = []
        for p in parts:
            assign = {}
            for r in rows_by_part[p]:
                g = groups[r["video_id"]]
                assign[r["key"]] = ["test" if g in test else "train", g, stratum(r)]
            units.append(WorkUnit(ids[p], {"path": str(p), "assign": assign}))
        return units

    def groups(self, rows: list[dict[str, Any]]) -> dict[str, str]:
        """video_id -> group id (the video itself, or its identity cluster)."""
        videos = sorted({r["video_id"] for r in rows})
        if self.cfg.split.group_by == "video" or not videos:
            return {v: f"g-{v}" for v in videos}
        sums: dict[str, list[np.ndarray]] = {}
        for r in rows:
            if r.get("src_embedding") is not None:
                sums.setdefault(r["video_id"], []).append(np.asarray(r["src_embedding"], np.float64))
        with_emb = [v for v in videos if v in sums]
        out = {v: f"g-{v}" for v in videos}
        if with_emb:
            emb = np.stack([np.mean(sums[v], axis=0) for v in with_emb])
            out.update(link_videos(with_emb, emb, self.cfg.split.link_distance))
        return out

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        assign = unit.payload["assign"]
        for rows in kept_batches(unit.payload["path"], self.resources().batch_size):
            out = []
            for r in rows:
                split, group, strat = assign[r["key"]]
                subset = r.get("subset") or "real"
                out.append({**r, "subset": subset, "split": split, "group_id": group, "stratum": strat})
            yield out

    def finalize(self, ctx: StageContext) -> None:
        from hfl.card import write_card

        write_card(ctx.out_dir, self.cfg)

    def external_outputs(self, ctx: StageContext) -> list[Location]:
        return [ctx.out_dir / "README.md", ctx.out_dir / "card"]

    def extra_stats(self, ctx: StageContext) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        subsets: Counter[str] = Counter()
        for p in sorted(ctx.stage_dir(self.name).glob("part-*.parquet")):
            for r in read_table(p, columns=["split", "subset"]).to_pylist():
                counts[r["split"]] += 1
                subsets[f"{r['subset'] or 'real'}/{r['split']}"] += 1
        return {"splits": dict(counts), "subsets": dict(sorted(subsets.items()))}
