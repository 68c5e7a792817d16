"""Login throttling per account and per client address, kept in the database (every worker sees it).

Each failed login adds one to the failure count of the account (its case-folded name, whether or not
the account exists, so the answer does not reveal which names exist) and of the client address. Within
a rule's window:

* the first `free` failures cost nothing;
* after that every further attempt must wait `2 ** (failures - free)` seconds (at most `max_delay_s`)
  after the last failure, else it is answered 429 with `Retry-After`, without checking the password;
* at `lock_after` failures the key is locked for `lock_s` seconds (429 with `Retry-After`; admins see
  the lock on the dashboard and in `hfl annotate users`, and can lift it: `hfl annotate unlock`).

A successful login clears its account's count (not the address's: one valid account must not reset an
address that guesses other accounts). A refused (throttled) attempt is not counted again.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from annotation_ui.models import LoginThrottle

ACCOUNT = "account"
ADDRESS = "address"


@dataclass(frozen=True)
class Rule:
    """Thresholds of one scope (account or address)."""

    free: int  # failures in the window that cost nothing
    lock_after: int  # failures in the window that lock the key
    window_s: int = 900  # failures older than this (counted from the first) are forgotten
    lock_s: int = 900  # how long a lock lasts
    max_delay_s: int = 60  # cap of the exponential wait between free and lock

    def delay_s(self, failures: int) -> float:
        """The wait after the last failure before another attempt is checked."""
        if failures < self.free:
            return 0.0
        return float(min(2 ** (failures - self.free), self.max_delay_s))


@dataclass(frozen=True)
class LoginPolicy:
    """The account rule is tight (one person); the address rule is looser (a team behind one NAT)."""

    account: Rule = field(default_factory=lambda: Rule(free=3, lock_after=10))
    address: Rule = field(default_factory=lambda: Rule(free=10, lock_after=50))
    local_hold_s: float = 5.0  # see LocalHolds

    def rule(self, scope: str) -> Rule:
        return self.account if scope == ACCOUNT else self.address


def account_key(username: str) -> str:
    return username.casefold()[:255]


def _rows(s: Session, keys: list[tuple[str, str]], lock: bool = False) -> list[LoginThrottle]:
    out = []
    for scope, key in keys:
        q = select(LoginThrottle).where(LoginThrottle.scope == scope, LoginThrottle.key == key)
        if lock and s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update()
        row = s.scalar(q)
        if row is not None:
            out.append(row)
    return out


def _wait(row: LoginThrottle, rule: Rule, now: datetime) -> float:
    if row.locked_until is not None and row.locked_until > now:
        return (row.locked_until - now).total_seconds()
    if row.first_failure_at + timedelta(seconds=rule.window_s) <= now:
        return 0.0  # the window has passed: forgotten
    return max(0.0, (row.last_failure_at - now).total_seconds() + rule.delay_s(row.failures))


def waits(s: Session, policy: LoginPolicy, keys: list[tuple[str, str]], now: datetime) -> dict:
    """Seconds each throttled key must still wait (keys that may go ahead are left out)."""
    out = {}
    for r in _rows(s, keys):
        w = _wait(r, policy.rule(r.scope), now)
        if w > 0:
            out[(r.scope, r.key)] = math.ceil(w)
    return out


def retry_after(s: Session, policy: LoginPolicy, keys: list[tuple[str, str]], now: datetime) -> int:
    """Seconds the caller must wait before a login attempt is checked (0: go ahead)."""
    return max(waits(s, policy, keys, now).values(), default=0)


class LocalHolds:
    """Keys this process has seen throttled, held for at most `hold_s`: a flood of refused attempts is
    answered from memory, without a database read. The database stays the authority (every worker
    records failures there); a lock lifted by an admin on another worker reaches this one within
    `hold_s` (at once on the worker that lifted it)."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def blocked(self, keys: list[tuple[str, str]]) -> int:
        now = time.monotonic()
        with self._lock:
            left = max((self._until.get(k, 0.0) - now for k in keys), default=0.0)
        return math.ceil(left) if left > 0 else 0

    def hold(self, found: dict[tuple[str, str], int], hold_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._until) > 10_000:  # never grows without bound
                self._until.clear()
            for k, w in found.items():
                self._until[k] = max(self._until.get(k, 0.0), now + min(w, hold_s))

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._until.pop(key, None)


def record_failure(s: Session, policy: LoginPolicy, keys: list[tuple[str, str]], now: datetime) -> None:
    """Count one failed login against every key (a unique-key race raises IntegrityError: retry)."""
    found = {(r.scope, r.key): r for r in _rows(s, keys, lock=True)}
    for scope, key in keys:
        rule = policy.rule(scope)
        row = found.get((scope, key))
        if row is None:
            row = LoginThrottle(scope=scope, key=key, failures=0, first_failure_at=now, last_failure_at=now)
            s.add(row)
        elif row.first_failure_at + timedelta(seconds=rule.window_s) <= now and not (
            row.locked_until is not None and row.locked_until > now
        ):
            row.failures, row.first_failure_at, row.locked_until = 0, now, None
        row.failures += 1
        row.last_failure_at = now
        if row.failures >= rule.lock_after:
            row.locked_until = now + timedelta(seconds=rule.lock_s)
    s.flush()


def clear(s: Session, scope: str, key: str) -> int:
    """Forget the failures (and lift the lock) of one key; returns the rows removed."""
    q = delete(LoginThrottle).where(LoginThrottle.scope == scope, LoginThrottle.key == key)
    return s.execute(q).rowcount


def lockouts(s: Session, policy: LoginPolicy, now: datetime) -> list[dict]:
    """Keys that are locked or must wait right now (for admins)."""
    out = []
    for r in s.scalars(select(LoginThrottle).order_by(LoginThrottle.scope, LoginThrottle.key)):
        wait = _wait(r, policy.rule(r.scope), now)
        if wait > 0:
            out.append(
                {
                    "scope": r.scope,
                    "key": r.key,
                    "failures": r.failures,
                    "locked": r.locked_until is not None and r.locked_until > now,
                    "retry_after_s": math.ceil(wait),
                    "last_failure_at": r.last_failure_at.isoformat() + "Z",
                }
            )
    return out
