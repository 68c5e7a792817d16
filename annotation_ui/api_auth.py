"""Login, logout, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, select

from annotation_ui.deps import CsrfDep, UserDep, require_json, settings
from annotation_ui.models import Project, WebSession
from annotation_ui.security import SESSION_COOKIE, authenticate, open_session, token_hash

router = APIRouter(prefix="/api")


class LoginIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


@router.post("/login", dependencies=[Depends(require_json)])
def login(body: LoginIn, request: Request, response: Response) -> dict:
    cfg = settings(request)

    def work(s):  # type: ignore[no-untyped-def]
        user = authenticate(s, body.username, body.password)
        if user is None:
            return None
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
        projects = [{"id": p.id, "name": p.name} for p in s.scalars(select(Project).order_by(Project.id))]
    return {"username": auth.username, "role": auth.role, "csrf": auth.csrf, "projects": projects}
