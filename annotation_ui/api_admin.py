"""The admin API: agreement figures, confusion image, item results, users."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import func, select

from annotation_ui import throttle
from annotation_ui.agreement import confusion_png
from annotation_ui.deps import MAX_ID, AdminCsrfDep, AdminDep, parse_bounded, parse_id, require_json, settings
from annotation_ui.importer import check_team, configure_project
from annotation_ui.models import Item, Label, Project, ProjectMember, User, utcnow
from annotation_ui.security import create_user
from annotation_ui.stats import cached, item_results, project_report
from annotation_ui.team import find_user, members, set_active, set_member, team_size

router = APIRouter(prefix="/api/admin")
MAX_PAGE = 500


class UserIn(BaseModel):
    username: str
    password: str
    role: str = "annotator"
    projects: list[int] = []  # project ids the new user is a member of


class ActiveIn(BaseModel):
    active: bool


class SettingsIn(BaseModel):
    raters_per_item: int | None = None
    quorum: int | None = None
    lease_seconds: int | None = None
    show_instruction: bool | None = None
    force: bool = False


class MemberIn(BaseModel):
    username: str
    member: bool = True


class LockoutIn(BaseModel):
    scope: str
    key: str


def _project(s, project_id: int) -> Project:  # type: ignore[no-untyped-def]
    p = s.get(Project, project_id)
    if p is None:
        raise HTTPException(404, "no such project")
    return p


@router.get("/projects")
def projects(request: Request, auth: AdminDep) -> list[dict]:
    with settings(request).db.read() as s:
        rows = s.execute(
            select(Project, func.count(Item.id), func.coalesce(func.sum(Item.n_labels), 0))
            .outerjoin(Item, (Item.project_id == Project.id) & ~Item.is_gold)
            .group_by(Project.id)
            .order_by(Project.id)
        ).all()
        return [
            {
                "id": p.id,
                "name": p.name,
                "items": int(n),
                "labels": int(lab),
                "raters_per_item": p.raters_per_item,
            }
            for p, n, lab in rows
        ]


@router.get("/projects/{project_id}/stats")
def stats(project_id: str, request: Request, auth: AdminDep) -> dict:
    with settings(request).db.read() as s:
        return project_report(s, _project(s, parse_id(project_id)), use_cache=True)


@router.get("/projects/{project_id}/confusion.png")
def confusion(project_id: str, request: Request, auth: AdminDep) -> Response:
    with settings(request).db.read() as s:
        p = _project(s, parse_id(project_id))
        png = cached(
            s, p, "confusion.png", lambda: confusion_png(project_report(s, p, use_cache=True)["confusion"])
        )
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/projects/{project_id}/items")
def items(project_id: str, request: Request, auth: AdminDep, offset: str = "0", limit: str = "100") -> dict:
    """One page of the project's items with their votes; `limit` is clamped to 1..500, `offset` to >= 0."""
    first = parse_bounded(offset, "offset", 0, MAX_ID)
    size = parse_bounded(limit, "limit", 1, MAX_PAGE)
    with settings(request).db.read() as s:
        project = _project(s, parse_id(project_id))
        page = s.scalars(
            select(Item).where(Item.project_id == project.id).order_by(Item.id).offset(first).limit(size)
        ).all()
        results = item_results(s, project, [it.id for it in page if not it.is_gold])
        out = []
        for it in page:
            r = results.get(it.id)
            out.append(
                {
                    "id": it.id,
                    "key": it.key,
                    "kind": it.kind,
                    "gold": it.is_gold,
                    "n_labels": it.n_labels,
                    "votes": r.votes if r else {},
                    "expression": r.expression if r else None,
                    "intensity": r.intensity if r else None,
                    "kept": bool(r and r.kept),
                }
            )
        total = s.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id))
        return {"total": int(total or 0), "items": out}


@router.get("/users")
def users(request: Request, auth: AdminDep) -> list[dict]:
    cfg = settings(request)
    with cfg.db.read() as s:
        member_of: dict[int, list[int]] = {}
        for pid, uid in s.execute(select(ProjectMember.project_id, ProjectMember.user_id)):
            member_of.setdefault(uid, []).append(pid)
        counts = dict(s.execute(select(Label.annotator_id, func.count()).group_by(Label.annotator_id)).all())
        locks = {
            lk["key"]: lk
            for lk in throttle.lockouts(s, cfg.login_policy, utcnow())
            if lk["scope"] == throttle.ACCOUNT
        }
        return [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "active": u.active,
                "labels": counts.get(u.id, 0),
                "projects": sorted(member_of.get(u.id, [])),
                "login_blocked_s": locks.get(throttle.account_key(u.username), {}).get("retry_after_s", 0),
                "login_locked": locks.get(throttle.account_key(u.username), {}).get("locked", False),
            }
            for u in s.scalars(select(User).order_by(User.id))
        ]


@router.get("/lockouts")
def lockouts(request: Request, auth: AdminDep) -> list[dict]:
    """Accounts and client addresses whose logins are locked or delayed right now."""
    cfg = settings(request)
    with cfg.db.read() as s:
        return throttle.lockouts(s, cfg.login_policy, utcnow())


@router.post("/lockouts/clear", dependencies=[Depends(require_json)])
def clear_lockout(body: LockoutIn, request: Request, auth: AdminCsrfDep) -> dict:
    """Lift a lock (and forget the failures) of an account or an address."""
    if body.scope not in (throttle.ACCOUNT, throttle.ADDRESS):
        raise HTTPException(422, "scope: account or address")
    cfg = settings(request)
    n = cfg.db.transact(lambda s: throttle.clear(s, body.scope, body.key[:255]))
    cfg.login_holds.release((body.scope, body.key[:255]))
    return {"cleared": n}


@router.post("/users", dependencies=[Depends(require_json)])
def add_user(body: UserIn, request: Request, auth: AdminCsrfDep) -> dict:
    def work(s):  # type: ignore[no-untyped-def]
        u = create_user(s, body.username, body.password, body.role)
        for pid in body.projects:
            set_member(s, _project(s, pid), u)
        return {"id": u.id, "username": u.username, "role": u.role, "projects": sorted(body.projects)}

    try:
        return settings(request).db.transact(work)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.post("/users/{user_id}/active", dependencies=[Depends(require_json)])
def user_active(user_id: str, body: ActiveIn, request: Request, auth: AdminCsrfDep) -> dict:
    """Disable (ends their sessions and leases) or enable a user."""
    uid = parse_id(user_id)
    if uid == auth.user_id and not body.active:
        raise HTTPException(422, "you cannot disable yourself")

    def work(s):  # type: ignore[no-untyped-def]
        u = s.get(User, uid)
        if u is None:
            raise HTTPException(404, "no such user")
        ended = set_active(s, u, body.active)
        return {"id": u.id, "username": u.username, "active": u.active, "sessions_ended": ended}

    return settings(request).db.transact(work)


@router.get("/projects/{project_id}/members")
def project_members(project_id: str, request: Request, auth: AdminDep) -> dict:
    """Every annotator, whether they are a member, and the team size against the raters per item."""
    with settings(request).db.read() as s:
        p = _project(s, parse_id(project_id))
        inside = {u.id for u in members(s, p)}
        everyone = s.scalars(select(User).where(User.role == "annotator").order_by(User.username)).all()
        return {
            "raters_per_item": p.raters_per_item,
            "team_size": team_size(s, p),
            "annotators": [
                {"id": u.id, "username": u.username, "active": u.active, "member": u.id in inside}
                for u in everyone
            ],
        }


@router.post("/projects/{project_id}/members", dependencies=[Depends(require_json)])
def set_project_member(project_id: str, body: MemberIn, request: Request, auth: AdminCsrfDep) -> dict:
    """Add a user to the project, or remove them (their leases on its items end)."""
    pid = parse_id(project_id)

    def work(s):  # type: ignore[no-untyped-def]
        p = _project(s, pid)
        u = find_user(s, body.username)
        changed = set_member(s, p, u, body.member)
        return {
            "username": u.username,
            "member": body.member,
            "changed": changed,
            "team_size": team_size(s, p),
        }

    try:
        return settings(request).db.transact(work)
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post("/projects/{project_id}/settings", dependencies=[Depends(require_json)])
def project_settings(project_id: str, body: SettingsIn, request: Request, auth: AdminCsrfDep) -> dict:
    """Change raters / quorum (by `importer.configure_project`'s rule), lease, instruction display."""
    pid = parse_id(project_id)

    def work(s):  # type: ignore[no-untyped-def]
        p = _project(s, pid)
        if body.raters_per_item is not None or body.quorum is not None:
            configure_project(s, p, body.raters_per_item, body.quorum, body.force)
            check_team(s, p, body.force)
        if body.lease_seconds is not None:
            if not 1 <= body.lease_seconds <= 86_400:
                raise ValueError("lease_seconds: 1 to 86400")
            p.lease_seconds = body.lease_seconds
        if body.show_instruction is not None:
            p.show_instruction = body.show_instruction
        return {
            "raters_per_item": p.raters_per_item,
            "quorum": p.quorum,
            "lease_seconds": p.lease_seconds,
            "show_instruction": p.show_instruction,
            "team_size": team_size(s, p),
        }

    try:
        return settings(request).db.transact(work)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
