"""Request context and auth dependencies: session cookie -> user; CSRF header on state changes; roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from annotation_ui.db import Database
from annotation_ui.security import CSRF_HEADER, SESSION_COOKIE, session_user, tokens_equal
from annotation_ui.throttle import LocalHolds, LoginPolicy


@dataclass
class Settings:
    db: Database
    secure_cookies: bool = False
    session_hours: float = 12.0
    login_policy: LoginPolicy = field(default_factory=LoginPolicy)
    login_holds: LocalHolds = field(default_factory=LocalHolds)


@dataclass
class Auth:
    user_id: int
    username: str
    role: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def settings(request: Request) -> Settings:
    return request.app.state.settings


def optional_user(request: Request) -> Auth | None:
    db = settings(request).db
    with db.read() as s:
        found = session_user(s, request.cookies.get(SESSION_COOKIE))
    if found is None:
        return None
    ws, user = found
    return Auth(user_id=user.id, username=user.username, role=user.role, csrf=ws.csrf_token)


def current_user(request: Request) -> Auth:
    auth = optional_user(request)
    if auth is None:
        raise HTTPException(401, "log in first")
    return auth


def csrf_user(request: Request, auth: Annotated[Auth, Depends(current_user)]) -> Auth:
    """State-changing requests carry the session's CSRF token in a header (a cross-site form cannot)."""
    if not tokens_equal(request.headers.get(CSRF_HEADER), auth.csrf):
        raise HTTPException(403, "missing or wrong CSRF token")
    return auth


def admin_user(auth: Annotated[Auth, Depends(current_user)]) -> Auth:
    if not auth.is_admin:
        raise HTTPException(403, "admins only")
    return auth


def admin_csrf_user(auth: Annotated[Auth, Depends(csrf_user)]) -> Auth:
    if not auth.is_admin:
        raise HTTPException(403, "admins only")
    return auth


def require_json(request: Request) -> None:
    """JSON bodies only: a cross-site page can only send one after a CORS preflight, which we never grant."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "send application/json")


UserDep = Annotated[Auth, Depends(current_user)]
CsrfDep = Annotated[Auth, Depends(csrf_user)]
AdminDep = Annotated[Auth, Depends(admin_user)]
AdminCsrfDep = Annotated[Auth, Depends(admin_csrf_user)]


MAX_ID = 2**31 - 1  # ids are 32-bit integers in both databases


def parse_id(raw: str) -> int:
    """A path id: ASCII digits only (no '²', Arabic-Indic or full-width digits), 1..2^31-1; else 404."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise HTTPException(404, "no such id")
    return int(raw)


def parse_bounded(raw: str, name: str, lo: int, hi: int) -> int:
    """A query integer: ASCII digits with an optional '-', clamped to [lo, hi]; anything else is 422."""
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 64:
        raise HTTPException(422, f"{name}: an integer")
    if len(digits) > 18:  # far outside any bound: clamp without building a huge int
        return lo if raw.startswith("-") else hi
    return min(hi, max(lo, int(raw)))
