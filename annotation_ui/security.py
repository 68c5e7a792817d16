"""Passwords (Argon2id), session tokens (stored hashed) and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from annotation_ui.labels import ROLES
from annotation_ui.models import User, WebSession, utcnow

SESSION_COOKIE = "hfl_session"
CSRF_HEADER = "X-CSRF-Token"
_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
# A fixed hash to verify against when the user does not exist, so timing does not reveal user names.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))
# Argon2 is deliberately costly (CPU and 64 MiB each): at most this many verifications run at once per
# process, so a burst of logins cannot starve the annotators' requests of CPU or memory.
_VERIFY_SLOTS = threading.BoundedSemaphore(2)


def normalize_username(name: str) -> str:
    """User names are stored and looked up NFKC-normalised (full-width 'ａｄｍｉｎ' is 'admin')."""
    return unicodedata.normalize("NFKC", name).strip()


@dataclass
class Candidate:
    """What a login needs from the users table, read outside any write transaction."""

    user_id: int | None
    password_hash: str
    active: bool


def login_candidate(s: Session, username: str) -> Candidate:
    """The account to check a password against (a dummy one when the name is unknown)."""
    row = s.execute(
        select(User.id, User.password_hash, User.active).where(User.username == normalize_username(username))
    ).first()
    if row is None:
        return Candidate(None, _DUMMY_HASH, False)
    return Candidate(row[0], row[1], bool(row[2]))


def check_password(candidate: Candidate, password: str) -> bool:
    """Argon2 verification, bounded in concurrency; False for unknown or disabled accounts."""
    with _VERIFY_SLOTS:
        ok = verify_password(candidate.password_hash, password)
    return ok and candidate.user_id is not None and candidate.active


MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # the same bound on every path: login, adduser, passwd, the dashboard


def check_password_length(password: str) -> None:
    """Refuse a password that could never be used to log in (or that is too short)."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"passwords need {MIN_PASSWORD} to {MAX_PASSWORD} characters (got {len(password)})")


def hash_password(password: str) -> str:
    """Argon2id hash of a password within the length bounds."""
    check_password_length(password)
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def create_user(s: Session, username: str, password: str, role: str = "annotator") -> User:
    """A new account; the name is NFKC-normalised and refused when it looks like an existing one."""
    from annotation_ui.team import check_username

    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    name = check_username(s, username)
    user = User(username=name, password_hash=hash_password(password), role=role, active=True)
    s.add(user)
    s.flush()
    return user


def needs_rehash(password_hash: str) -> bool:
    """True when the stored hash uses weaker parameters than the current defaults."""
    return _hasher.check_needs_rehash(password_hash)


def open_session(s: Session, user: User, hours: float) -> tuple[str, WebSession]:
    """A new login session; returns the raw token (for the cookie only) and the row."""
    now = utcnow()
    s.execute(delete(WebSession).where(WebSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    ws = WebSession(
        token_hash=token_hash(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    s.add(ws)
    s.flush()
    return token, ws


def session_user(s: Session, token: str | None) -> tuple[WebSession, User] | None:
    if not token:
        return None
    row = s.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == token_hash(token), WebSession.expires_at > utcnow(), User.active)
    ).first()
    return None if row is None else (row[0], row[1])
