"""Login, logout, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from annotation_ui import throttle
from annotation_ui.deps import CsrfDep, UserDep, require_json, settings
from annotation_ui.models import Project, ProjectMember, User, WebSession, utcnow
from annotation_ui.security import (
    MAX_PASSWORD,
    SESSION_COOKIE,
    check_password,
    hash_password,
    login_candidate,
    needs_rehash,
    normalize_username,
    open_session,
    token_hash,
)

router = APIRouter(prefix="/api")


class LoginIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=MAX_PASSWORD)


def client_address(request: Request) -> str:
    """The client's address (behind a proxy: from X-Forwarded-For when serve --proxy-headers trusts it)."""
    return request.client.host if request.client else "unknown"


@router.post("/login", dependencies=[Depends(require_json)])
def login(body: LoginIn, request: Request, response: Response) -> dict:
    """Log in. Throttled per account and per address (429 + Retry-After, then a lock; see throttle.py);
    the password is checked outside any write transaction, so logins never hold the database."""
    cfg = settings(request)
    name = normalize_username(body.username)
    keys = [(throttle.ACCOUNT, throttle.account_key(name)), (throttle.ADDRESS, client_address(request))]
    wait = cfg.login_holds.blocked(keys)  # a flood of refused attempts: answered from memory
    candidate = None
    if not wait:
        with cfg.db.read() as s:
            found = throttle.waits(s, cfg.login_policy, keys, utcnow())
            candidate = None if found else login_candidate(s, name)
        wait = max(found.values(), default=0)
        cfg.login_holds.hold(found, cfg.login_policy.local_hold_s)
    if wait or candidate is None:
        raise HTTPException(
            429, f"too many failed logins: try again in {wait} s", headers={"Retry-After": str(wait)}
        )
    if not check_password(candidate, body.password):

        def fail(s):  # type: ignore[no-untyped-def]
            throttle.record_failure(s, cfg.login_policy, keys, utcnow())

        try:
            cfg.db.transact(fail)
        except IntegrityError:  # another worker created the same throttle row at the same instant
            cfg.db.transact(fail)
        raise HTTPException(401, "wrong user name or password")

    def work(s):  # type: ignore[no-untyped-def]
        user = s.get(User, candidate.user_id)
        if user is None or not user.active:
            return None
        throttle.clear(s, throttle.ACCOUNT, keys[0][1])
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(body.password)
        token, ws = open_session(s, user, cfg.session_hours)
        return token, ws.csrf_token, user.username, user.role

    found = cfg.db.transact(work)
    if found is None:
        raise HTTPException(401, "wrong user name or password")
    token, csrf, username, role = found
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(cfg.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=cfg.secure_cookies,
        path="/",
    )
    return {"username": username, "role": role, "csrf": csrf}


@router.post("/logout")
def logout(request: Request, response: Response, auth: CsrfDep) -> dict:
    token = request.cookies.get(SESSION_COOKIE, "")
    settings(request).db.transact(
        lambda s: s.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"ok": True}


@router.get("/me")
def me(request: Request, auth: UserDep) -> dict:
    with settings(request).db.read() as s:
        q = select(Project).order_by(Project.id)
        if not auth.is_admin:  # annotators: the projects they are members of
            q = q.join(ProjectMember, ProjectMember.project_id == Project.id).where(
                ProjectMember.user_id == auth.user_id
            )
        projects = [{"id": p.id, "name": p.name} for p in s.scalars(q)]
    return {"username": auth.username, "role": auth.role, "csrf": auth.csrf, "projects": projects}
