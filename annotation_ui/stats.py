"""Project figures from the database (the dashboard and `hfl annotate export` share them).

The dashboard's figures are cached per process and project, keyed by a version of the project's labels
(count, highest id, newest time) and settings: a load with nothing new answers from the cache; after any
label, undo or settings change the figures are recomputed once (vectorised: a fraction of a second at
the paper's 91 K labels) and cached again. The export always computes afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotation_ui.agreement import (
    ItemResult,
    Vote,
    VoteColumns,
    gold_accuracy,
    item_result,
    project_agreement,
)
from annotation_ui.labels import EXPRESSIONS, INTENSITIES
from annotation_ui.models import Item, Label, Project, User

_CACHE: dict[tuple[str, int, str], tuple[tuple, Any]] = {}
_CACHE_LOCK = threading.Lock()


def project_votes(s: Session, project: Project, gold: bool = False) -> list[Vote]:
    """The project's votes as Vote rows (regular items, or gold ones)."""
    rows = s.execute(
        select(Label.item_id, User.username, Label.expression, Label.intensity, Label.duration_ms)
        .join(Item, Item.id == Label.item_id)
        .join(User, User.id == Label.annotator_id)
        .where(Item.project_id == project.id, Item.is_gold == gold)
        .order_by(Label.item_id, Label.id)
    ).all()
    return [Vote(*r) for r in rows]


def vote_columns(s: Session, project: Project) -> VoteColumns:
    """The regular items' votes as columns, straight from the rows (no per-vote objects)."""
    rows = s.execute(
        select(Label.item_id, Label.annotator_id, Label.expression, Label.intensity, Label.duration_ms)
        .join(Item, Item.id == Label.item_id)
        .where(Item.project_id == project.id, ~Item.is_gold)
        .order_by(Label.item_id, Label.id)
    ).all()
    names = dict(s.execute(select(User.id, User.username)).all())
    e_code = {e: i for i, e in enumerate(EXPRESSIONS)}
    i_code = {x: i for i, x in enumerate(INTENSITIES)}
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return VoteColumns(empty, [], empty, empty, np.zeros(0))
    item_ids, annotators, exprs, ints, durations = zip(*rows, strict=True)
    return VoteColumns(
        item_ids=np.asarray(item_ids, dtype=np.int64),
        raters=[names[a] for a in annotators],
        expression=np.asarray([e_code[e] for e in exprs], dtype=np.int64),
        intensity=np.asarray([-1 if i is None else i_code[i] for i in ints], dtype=np.int64),
        duration_ms=np.asarray(durations, dtype=float),
    )


def version(s: Session, project: Project) -> tuple:
    """Changes whenever a figure could: labels added or removed (gold too), items added, settings."""
    n, top, newest = s.execute(
        select(func.count(Label.id), func.max(Label.id), func.max(Label.created_at))
        .join(Item, Item.id == Label.item_id)
        .where(Item.project_id == project.id)
    ).one()
    n_items, top_item = s.execute(
        select(func.count(Item.id), func.max(Item.id)).where(Item.project_id == project.id)
    ).one()
    return (
        n,
        top,
        str(newest),
        n_items,
        top_item,
        project.raters_per_item,
        project.quorum,
        project.lease_seconds,
        project.gold_every,
        project.show_instruction,
    )


def cached(s: Session, project: Project, what: str, compute: Callable[[], Any]) -> Any:
    """`compute()` once per version of the project (per process; every worker keeps its own)."""
    key = (str(s.get_bind().url), project.id, what)
    v = version(s, project)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0] == v:
        return hit[1]
    value = compute()
    with _CACHE_LOCK:
        _CACHE[key] = (v, value)
    return value


def project_report(s: Session, project: Project, with_items: bool = False, use_cache: bool = False) -> dict:
    """Agreement figures, gold accuracy, timing and counts of one project (see agreement.py)."""
    if use_cache and not with_items:
        return cached(s, project, "report", lambda: project_report(s, project))
    report = project_agreement(vote_columns(s, project), project.raters_per_item, project.quorum, with_items)
    gold_rows = s.execute(
        select(User.username, Label.expression, Label.intensity, Item.gold_expression, Item.gold_intensity)
        .join(Item, Item.id == Label.item_id)
        .join(User, User.id == Label.annotator_id)
        .where(Item.project_id == project.id, Item.is_gold)
    ).all()
    report["gold"] = gold_accuracy(gold_rows)
    report["items_total"] = int(
        s.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id, ~Item.is_gold))
        or 0
    )
    timing = report.get("seconds_per_item")
    report["lease_warning"] = (
        f"the lease ({project.lease_seconds} s) is under 3x the measured p99 time per item "
        f"({timing['p99']:.0f} s): slow answers may be thrown away; raise it (hfl annotate settings "
        f"--lease-seconds {max(60, round(3 * timing['p99']))})"
        if timing and timing["n"] >= 20 and project.lease_seconds < 3 * timing["p99"]
        else None
    )
    report["project"] = {
        "id": project.id,
        "name": project.name,
        "raters_per_item": project.raters_per_item,
        "quorum": project.quorum,
        "gold_every": project.gold_every,
        "lease_seconds": project.lease_seconds,
        "show_instruction": project.show_instruction,
    }
    return report


def item_results(s: Session, project: Project, item_ids: list[int]) -> dict[int, ItemResult]:
    """The per-item rule for a few items (a dashboard page), from their votes only."""
    if not item_ids:
        return {}
    rows = s.execute(
        select(Label.item_id, User.username, Label.expression, Label.intensity, Label.duration_ms)
        .join(User, User.id == Label.annotator_id)
        .where(Label.item_id.in_(item_ids))
        .order_by(Label.item_id, Label.id)
    ).all()
    votes: dict[int, list[Vote]] = {}
    for r in rows:
        votes.setdefault(r[0], []).append(Vote(*r))
    return {i: item_result(i, vs, project.quorum, project.raters_per_item) for i, vs in votes.items()}
