"""The annotator's API: next item, label, skip, undo, progress, and item images by id."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annotation_ui import assign
from annotation_ui.deps import Auth, CsrfDep, UserDep, parse_id, require_json, settings
from annotation_ui.labels import (
    ACTION_KEYS,
    EXPRESSION_KEYS,
    EXPRESSIONS,
    INTENSITIES,
    INTENSITY_KEYS,
    MEDIA_ROLES,
)
from annotation_ui.models import Claim, Item, ItemMedia, Label, Project, ProjectMember, Skip, utcnow
from annotation_ui.team import is_member

router = APIRouter(prefix="/api")
T = TypeVar("T")


class LabelIn(BaseModel):
    expression: str
    intensity: str | None = None


def _project(s: Session, project_id: int, auth: Auth) -> Project:
    """The project, if the user may work on it (admins: any; annotators: their projects), else 404."""
    project = s.get(Project, project_id)
    if project is None or not (auth.is_admin or is_member(s, project_id, auth.user_id)):
        raise HTTPException(404, "no such project")
    return project


def _item_json(served: assign.Served | None) -> dict | None:
    if served is None:
        return None
    return {
        "id": served.item_id,
        "kind": served.kind,
        "instruction": served.instruction,
        "media": {role: f"api/items/{served.item_id}/media/{role}" for role in served.media},
        "lease_expires": served.lease_expires.isoformat() + "Z",
        "lease_remaining_s": max(0, round((served.lease_expires - utcnow()).total_seconds())),
    }


def _run(request: Request, fn: Callable[[Session], T]) -> T:
    """A write transaction; a unique-constraint race (e.g. two tabs of one annotator) is retried once."""
    db = settings(request).db
    try:
        return db.transact(fn)
    except IntegrityError:
        try:
            return db.transact(fn)
        except IntegrityError as exc:
            raise HTTPException(409, "conflict: this label or claim exists already") from exc


def _progress(request: Request, project_id: int, auth: Auth) -> dict:
    with settings(request).db.read() as s:  # outside the write transaction: SQLite readers run in parallel
        return assign.progress(s, _project(s, project_id, auth), auth.user_id)


def _next_payload(request: Request, project_id: int, auth: Auth) -> dict:
    def work(s: Session) -> dict | None:
        return _item_json(assign.next_item(s, _project(s, project_id, auth), auth.user_id))

    item = _run(request, work)
    return {"item": item, "progress": _progress(request, project_id, auth)}


@router.get("/projects/{project_id}")
def project_info(project_id: str, request: Request, auth: UserDep) -> dict:
    with settings(request).db.read() as s:
        p = _project(s, parse_id(project_id), auth)
        return {
            "id": p.id,
            "name": p.name,
            "guidelines": p.guidelines,
            "raters_per_item": p.raters_per_item,
            "quorum": p.quorum,
            "show_instruction": p.show_instruction,
            "expressions": list(EXPRESSIONS),
            "intensities": list(INTENSITIES),
            "keys": {"expression": EXPRESSION_KEYS, "intensity": INTENSITY_KEYS, "actions": ACTION_KEYS},
            "progress": assign.progress(s, p, auth.user_id),
        }


@router.post("/projects/{project_id}/next")
def next_item(project_id: str, request: Request, auth: CsrfDep) -> dict:
    return _next_payload(request, parse_id(project_id), auth)


@router.post("/projects/{project_id}/items/{item_id}/label", dependencies=[Depends(require_json)])
def label(project_id: str, item_id: str, body: LabelIn, request: Request, auth: CsrfDep) -> dict:
    return _label(parse_id(project_id), parse_id(item_id), body, request, auth)


def _label(project_id: int, item_id: int, body: LabelIn, request: Request, auth: Auth) -> dict:
    def work(s: Session) -> dict:
        lab = assign.submit_label(
            s, _project(s, project_id, auth), auth.user_id, item_id, body.expression, body.intensity
        )
        return {"id": lab.id, "item_id": item_id, "duration_ms": lab.duration_ms}

    saved = _run(request, work)
    return {"saved": saved, **_next_payload(request, project_id, auth)}


@router.post("/projects/{project_id}/items/{item_id}/skip")
def skip(project_id: str, item_id: str, request: Request, auth: CsrfDep) -> dict:
    return _skip(parse_id(project_id), parse_id(item_id), request, auth)


def _skip(project_id: int, item_id: int, request: Request, auth: Auth) -> dict:
    _run(request, lambda s: assign.skip_item(s, _project(s, project_id, auth), auth.user_id, item_id))
    return {"skipped": item_id, **_next_payload(request, project_id, auth)}


@router.post("/projects/{project_id}/items/{item_id}/renew")
def renew(project_id: str, item_id: str, request: Request, auth: CsrfDep) -> dict:
    """Extend the lease on the item on screen (the page calls this while the annotator is active)."""
    pid, iid = parse_id(project_id), parse_id(item_id)
    expires = _run(request, lambda s: assign.renew(s, _project(s, pid, auth), auth.user_id, iid))
    remaining = max(0, round((expires - utcnow()).total_seconds()))
    return {"item_id": iid, "lease_expires": expires.isoformat() + "Z", "lease_remaining_s": remaining}


@router.post("/projects/{project_id}/undo")
def undo(project_id: str, request: Request, auth: CsrfDep) -> dict:
    return _undo(parse_id(project_id), request, auth)


def _undo(project_id: int, request: Request, auth: Auth) -> dict:
    def work(s: Session) -> dict:
        served = assign.undo_last(s, _project(s, project_id, auth), auth.user_id)
        return {"undone": served.item_id, "item": _item_json(served)}

    return {**_run(request, work), "progress": _progress(request, project_id, auth)}


@router.get("/items/{item_id}/media/{role}")
def media(item_id: str, role: str, request: Request, auth: UserDep) -> Response:
    """An item's image by id and role only; annotators get images of items in their own queue only."""
    iid = parse_id(item_id)
    if role not in MEDIA_ROLES:
        raise HTTPException(404)
    with settings(request).db.read() as s:
        if not auth.is_admin:
            member = exists().where(
                Item.id == iid,
                ProjectMember.project_id == Item.project_id,
                ProjectMember.user_id == auth.user_id,
            )
            mine = (
                s.scalar(
                    select(
                        member
                        & (
                            exists().where(Claim.item_id == iid, Claim.annotator_id == auth.user_id)
                            | exists().where(Label.item_id == iid, Label.annotator_id == auth.user_id)
                            | exists().where(Skip.item_id == iid, Skip.annotator_id == auth.user_id)
                        )
                    )
                )
                or False
            )
            if not mine:
                raise HTTPException(404)
        m = s.get(ItemMedia, (iid, role))
        if m is None:
            raise HTTPException(404)
        return Response(m.data, media_type=m.mime, headers={"Cache-Control": "private, max-age=3600"})
