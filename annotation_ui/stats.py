"""Project figures from the database (the dashboard and `hfl annotate export` share them)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotation_ui.agreement import Vote, gold_accuracy, project_agreement
from annotation_ui.models import Item, Label, Project, User


def project_votes(s: Session, project: Project, gold: bool = False) -> list[Vote]:
    rows = s.execute(
        select(Label.item_id, User.username, Label.expression, Label.intensity, Label.duration_ms)
        .join(Item, Item.id == Label.item_id)
        .join(User, User.id == Label.annotator_id)
        .where(Item.project_id == project.id, Item.is_gold == gold)
        .order_by(Label.item_id, Label.id)
    ).all()
    return [Vote(*r) for r in rows]


def project_report(s: Session, project: Project, with_items: bool = False) -> dict:
    report = project_agreement(project_votes(s, project), project.raters_per_item, project.quorum)
    if not with_items:
        report.pop("items")
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
