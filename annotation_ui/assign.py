"""Assignment: lease-based claims, guarded label submission, skip and undo.

Invariants, enforced by the database and not only by this code:
- `labels` is unique on (item_id, annotator_id): no annotator labels an item twice;
- `items.n_labels` moves in the same transaction as the label rows, by a guarded UPDATE
  (`... WHERE n_labels < max_labels`) under a CHECK (`n_labels <= max_labels`): no item ever holds
  more labels than configured.
Claims are leases: an unexpired claim holds one of the item's slots, so an item is handed to at most
`max_labels - n_labels` annotators at once. On SQLite every write transaction is BEGIN IMMEDIATE
(serialised); on PostgreSQL candidates are locked `FOR UPDATE SKIP LOCKED` and recounted after the
lock (READ COMMITTED sees the latest commits), so concurrent annotators never share the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, exists, func, select, update
from sqlalchemy.orm import Session

from annotation_ui.labels import EXPRESSIONS, INTENSITIES, NO_INTENSITY
from annotation_ui.models import Claim, Item, ItemMedia, Label, Project, Skip, utcnow

MAX_CANDIDATES = 64


class AssignError(Exception):
    """A refused request; `status` is the HTTP status the API answers with."""

    status = 409


class NotInQueue(AssignError):
    status = 409


class ItemFull(AssignError):
    status = 409


class BadLabel(AssignError):
    status = 422


@dataclass
class Served:
    item_id: int
    key: str
    kind: str
    instruction: str | None
    media: list[str]
    lease_expires: datetime
    claimed_at: datetime


def _active_others_query(item_id_col, user_id: int, now: datetime):  # type: ignore[no-untyped-def]
    """How many unexpired claims of other annotators hold slots of the item."""
    return (
        select(func.count())
        .select_from(Claim)
        .where(Claim.item_id == item_id_col, Claim.expires_at > now, Claim.annotator_id != user_id)
    )


def _active_others(item_id_col, user_id: int, now: datetime):  # type: ignore[no-untyped-def]
    return _active_others_query(item_id_col, user_id, now).scalar_subquery()


def _served(s: Session, item: Item, claim: Claim) -> Served:
    roles = list(
        s.scalars(select(ItemMedia.role).where(ItemMedia.item_id == item.id).order_by(ItemMedia.role))
    )
    order = {"image": 0, "src": 1, "tgt": 2}
    return Served(
        item_id=item.id,
        key=item.key,
        kind=item.kind,
        instruction=item.instruction,
        media=sorted(roles, key=order.__getitem__),
        lease_expires=claim.expires_at,
        claimed_at=claim.claimed_at,
    )


def _candidate(
    s: Session, project: Project, user_id: int, gold: bool, now: datetime, skip: list[int], wait: bool = False
) -> int | None:
    done = exists().where(Label.item_id == Item.id, Label.annotator_id == user_id)
    skipped = exists().where(Skip.item_id == Item.id, Skip.annotator_id == user_id)
    q = (
        select(Item.id)
        .where(
            Item.project_id == project.id,
            Item.is_gold == gold,
            Item.n_labels < Item.max_labels,
            ~done,
            ~skipped,
            Item.n_labels + _active_others(Item.id, user_id, now) < Item.max_labels,
        )
        # Fill items that are under way first, so complete (agreeable) items accumulate early.
        .order_by(Item.n_labels.desc(), Item.id)
        .limit(1)
    )
    if skip:
        q = q.where(Item.id.not_in(skip))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=not wait, of=Item)
    return s.scalar(q)


def _has_room(s: Session, item_id: int, user_id: int, now: datetime) -> Item | None:
    """Recount after the lock, in fresh statements (READ COMMITTED: they see every committed claim)."""
    item = s.get(Item, item_id, populate_existing=True)
    if item is None:
        return None
    others = s.scalar(_active_others_query(item_id, user_id, now)) or 0
    return item if item.n_labels + others < item.max_labels else None


def _take(s: Session, project: Project, item: Item, user_id: int, now: datetime) -> Claim:
    s.execute(delete(Claim).where(Claim.annotator_id == user_id, Claim.item_id == item.id))
    claim = Claim(
        item_id=item.id,
        annotator_id=user_id,
        claimed_at=now,
        expires_at=now + timedelta(seconds=project.lease_seconds),
    )
    s.add(claim)
    s.flush()
    return claim


def _gold_due(s: Session, project: Project, user_id: int) -> bool:
    if project.gold_every <= 0:
        return False
    n = s.scalar(
        select(func.count())
        .select_from(Label)
        .join(Item, Item.id == Label.item_id)
        .where(Item.project_id == project.id, Label.annotator_id == user_id)
    )
    return (int(n or 0) + 1) % project.gold_every == 0


def _release_others(s: Session, project: Project, user_id: int, keep: int | None = None) -> None:
    mine = select(Item.id).where(Item.project_id == project.id)
    q = delete(Claim).where(Claim.annotator_id == user_id, Claim.item_id.in_(mine))
    if keep is not None:
        q = q.where(Claim.item_id != keep)
    s.execute(q.execution_options(synchronize_session=False))


def next_item(s: Session, project: Project, user_id: int, now: datetime | None = None) -> Served | None:
    """The annotator's current item: their unexpired claim, else a new claim; None when nothing is left."""
    now = now or utcnow()
    current = s.execute(
        select(Claim, Item)
        .join(Item, Item.id == Claim.item_id)
        .where(Claim.annotator_id == user_id, Item.project_id == project.id, Claim.expires_at > now)
        .order_by(Claim.claimed_at.desc())
        .limit(1)
    ).first()
    if current is not None:
        claim, item = current
        _release_others(s, project, user_id, keep=item.id)
        claim.expires_at = now + timedelta(seconds=project.lease_seconds)
        return _served(s, item, claim)
    _release_others(s, project, user_id)
    # Gold is mixed in only while regular work remains: when the regular queue is empty, the queue is done.
    if _gold_due(s, project, user_id) and _candidate_nolock(s, project, user_id, now) is not None:
        served = _claim_first(s, project, user_id, True, now)
        if served is not None:
            return served
    return _claim_first(s, project, user_id, False, now)


def _claim_first(s: Session, project: Project, user_id: int, gold: bool, now: datetime) -> Served | None:
    tried: list[int] = []
    for _ in range(MAX_CANDIDATES):
        item_id = _candidate(s, project, user_id, gold, now, tried)
        if item_id is None and s.get_bind().dialect.name == "postgresql":
            # Every free candidate was locked by a concurrent transaction (e.g. a submit on it): wait for
            # one rather than report an empty queue that is not empty.
            item_id = _candidate(s, project, user_id, gold, now, tried, wait=True)
        if item_id is None:
            return None
        item = _has_room(s, item_id, user_id, now)
        if item is not None:
            return _served(s, item, _take(s, project, item, user_id, now))
        tried.append(item_id)
    return None


def _candidate_nolock(s: Session, project: Project, user_id: int, now: datetime) -> int | None:
    done = exists().where(Label.item_id == Item.id, Label.annotator_id == user_id)
    skipped = exists().where(Skip.item_id == Item.id, Skip.annotator_id == user_id)
    return s.scalar(
        select(Item.id)
        .where(
            Item.project_id == project.id,
            ~Item.is_gold,
            ~done,
            ~skipped,
            Item.n_labels + _active_others(Item.id, user_id, now) < Item.max_labels,
        )
        .limit(1)
    )


def check_label(expression: str, intensity: str | None) -> str | None:
    """Validate a label; returns the intensity to store (None for neutral)."""
    if expression not in EXPRESSIONS:
        raise BadLabel(f"expression must be one of {EXPRESSIONS}")
    if expression in NO_INTENSITY:
        return None
    if intensity not in INTENSITIES:
        raise BadLabel(f"{expression} needs an intensity, one of {INTENSITIES}")
    return intensity


def _own_claim(s: Session, project: Project, user_id: int, item_id: int) -> Claim | None:
    """The annotator's claim on an item of this project, lapsed or not (None: not in their queue)."""
    return s.scalar(
        select(Claim)
        .join(Item, Item.id == Claim.item_id)
        .where(Claim.item_id == item_id, Claim.annotator_id == user_id, Item.project_id == project.id)
    )


def submit_label(
    s: Session,
    project: Project,
    user_id: int,
    item_id: int,
    expression: str,
    intensity: str | None,
    now: datetime | None = None,
) -> Label:
    """Store a label for an item the annotator holds a claim on (a lapsed lease counts if a slot is free)."""
    now = now or utcnow()
    intensity = check_label(expression, intensity)
    claim = _own_claim(s, project, user_id, item_id)
    if claim is None:
        mine = s.scalar(select(Label.id).where(Label.item_id == item_id, Label.annotator_id == user_id))
        if mine is not None:
            raise NotInQueue(f"you labelled item #{item_id} already: that label is stored (this one is not)")
        raise NotInQueue(f"item #{item_id} is not in your queue (skipped, released, or never served to you)")
    guard = update(Item).where(Item.id == item_id, Item.n_labels < Item.max_labels)
    if claim.expires_at <= now:  # lapsed lease: only if no live claim of someone else needs the slot
        guard = guard.where(Item.n_labels + _active_others(Item.id, user_id, now) < Item.max_labels)
    done = s.execute(guard.values(n_labels=Item.n_labels + 1).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        message = _refusal(s, item_id, user_id, claim, now)
        s.delete(claim)
        raise ItemFull(message)
    label = Label(
        item_id=item_id,
        annotator_id=user_id,
        expression=expression,
        intensity=intensity,
        served_at=claim.claimed_at,
        created_at=now,
        duration_ms=max(0, int((now - claim.claimed_at).total_seconds() * 1000)),
    )
    s.add(label)
    s.delete(claim)
    s.flush()  # the unique (item_id, annotator_id) raises IntegrityError on a double label
    return label


def _refusal(s: Session, item_id: int, user_id: int, claim: Claim, now: datetime) -> str:
    """Why a submit found no slot, as it is: the item is full, or its free slots are held by others."""
    item = s.get(Item, item_id, populate_existing=True)
    assert item is not None
    lapsed = int((now - claim.expires_at).total_seconds())
    when = f"your lease lapsed {lapsed} s ago" if lapsed >= 0 else "your lease was cut short"
    if item.n_labels >= item.max_labels:
        return (
            f"item #{item_id} has all its {item.max_labels} labels from other annotators ({when}); "
            "your label was not stored"
        )
    others = int(s.scalar(_active_others_query(item_id, user_id, now)) or 0)
    free = item.max_labels - item.n_labels
    return (
        f"{when}: item #{item_id} has {item.n_labels} of {item.max_labels} labels and its {free} free "
        f"slot(s) are reserved by {others} other annotator(s) now; your label was not stored"
    )


def renew(s: Session, project: Project, user_id: int, item_id: int, now: datetime | None = None) -> datetime:
    """Extend the annotator's lease on an item they are looking at (the page calls this while they are
    active); a lapsed lease is taken again if a slot is still free. Returns the new expiry."""
    now = now or utcnow()
    claim = _own_claim(s, project, user_id, item_id)
    if claim is None:
        raise NotInQueue(f"item #{item_id} is not in your queue any more")
    if claim.expires_at <= now and _has_room(s, item_id, user_id, now) is None:
        message = _refusal(s, item_id, user_id, claim, now)
        s.delete(claim)
        raise ItemFull(message)
    claim.expires_at = now + timedelta(seconds=project.lease_seconds)
    s.flush()
    return claim.expires_at


def skip_item(s: Session, project: Project, user_id: int, item_id: int, now: datetime | None = None) -> None:
    now = now or utcnow()
    claim = _own_claim(s, project, user_id, item_id)
    if claim is None:
        raise NotInQueue("this item is not in your queue")
    s.delete(claim)
    s.add(Skip(item_id=item_id, annotator_id=user_id, created_at=now))
    s.flush()


def undo_last(s: Session, project: Project, user_id: int, now: datetime | None = None) -> Served:
    """Undo the annotator's latest label or skip in the project; that item becomes their current item.

    A label can always be undone (its slot is the annotator's own). A skip can be undone only while the
    item has a free slot: a skipped item that others have filled since is passed over (the skip stays on
    record), so an older label behind it can still be undone."""
    now = now or utcnow()
    in_project = select(Item.id).where(Item.project_id == project.id)
    label = s.scalar(
        select(Label)
        .where(Label.annotator_id == user_id, Label.item_id.in_(in_project))
        .order_by(Label.created_at.desc(), Label.id.desc())
        .limit(1)
    )
    newer_skips = select(Skip).where(Skip.annotator_id == user_id, Skip.item_id.in_(in_project))
    if label is not None:
        newer_skips = newer_skips.where(Skip.created_at >= label.created_at)
    passed: list[int] = []
    _release_others(s, project, user_id)
    for skip in s.scalars(newer_skips.order_by(Skip.created_at.desc(), Skip.id.desc())).all():
        item = _has_room(s, skip.item_id, user_id, now)
        if item is None:
            passed.append(skip.item_id)  # filled by others since: nothing to go back to
            continue
        s.delete(skip)
        s.flush()
        return _served(s, item, _take(s, project, item, user_id, now))
    if label is None:
        if passed:
            listed = ", ".join(f"#{i}" for i in passed[:5])
            raise NotInQueue(f"nothing to undo: the items you skipped ({listed}) have all their labels now")
        raise NotInQueue("nothing to undo")
    item_id = label.item_id
    s.delete(label)
    s.execute(
        update(Item)
        .where(Item.id == item_id, Item.n_labels > 0)
        .values(n_labels=Item.n_labels - 1)
        .execution_options(synchronize_session=False)
    )
    item = s.get(Item, item_id, populate_existing=True)
    assert item is not None
    return _served(s, item, _take(s, project, item, user_id, now))


def progress(s: Session, project: Project, user_id: int) -> dict[str, int]:
    """The annotator's counts and the project's; cheap (indexed counts), run after every answer."""
    regular = (Item.project_id == project.id) & ~Item.is_gold
    total, complete = s.execute(
        select(func.count(), func.coalesce(func.sum(case((Item.n_labels >= Item.max_labels, 1), else_=0)), 0))
        .select_from(Item)
        .where(regular)
    ).one()
    mine: dict[str, int] = {}
    for name, table in (("labelled", Label), ("skipped", Skip)):
        rows = s.execute(
            select(Item.is_gold, Item.n_labels < Item.max_labels, func.count())
            .select_from(table)
            .join(Item, Item.id == table.item_id)
            .where(table.annotator_id == user_id, Item.project_id == project.id)
            .group_by(Item.is_gold, Item.n_labels < Item.max_labels)
        ).all()
        mine[name] = sum(n for _, _, n in rows)
        mine[name + "_open"] = sum(n for gold, is_open, n in rows if not gold and is_open)
    return {
        "labelled": mine["labelled"],
        "skipped": mine["skipped"],
        # regular items with a free slot that this annotator has neither labelled nor skipped
        "available": int(total) - int(complete) - mine["labelled_open"] - mine["skipped_open"],
        "items": int(total),
        "complete": int(complete),
    }
