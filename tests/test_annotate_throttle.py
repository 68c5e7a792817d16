"""Login throttling (issue 14, item 1): 429 + Retry-After, then a lock, kept in the database so that every
worker sees it (SQLite and PostgreSQL); lock-outs visible to admins and liftable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from annotation_ui import throttle
from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.models import LoginThrottle, utcnow
from annotation_ui.testing import login
from annotation_ui.throttle import LoginPolicy, Rule

pytest_plugins = ["annotate_fixtures"]


@pytest.fixture
def team(any_db: Database, face_shard: Path) -> Database:
    make_project(any_db, face_shard, limit=2, gold_every=0)
    add_users(any_db, ["ann", "other"])
    add_users(any_db, ["boss"], role="admin")
    return any_db


def _try(c: TestClient, name: str, password: str):  # type: ignore[no-untyped-def]
    return c.post("/api/login", json={"username": name, "password": password})


def test_181_wrong_passwords_are_throttled_across_workers(team: Database) -> None:
    """The issue's attack: 181 wrong passwords in a row. The first three are checked (401); then every
    attempt within 1, 2, 4, ... s of the last failure is refused with 429 + Retry-After without running
    Argon2, also on a second worker. On a fast machine the whole loop fits in the first 1 s wait."""
    import math
    import time

    worker_a, worker_b = TestClient(create_app(team)), TestClient(create_app(team))
    codes = []
    t0 = time.monotonic()
    for n in range(181):
        r = _try(worker_a if n % 2 else worker_b, "ann", f"guess-{n:04d}")
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-frame-options"] == "DENY"
    elapsed = time.monotonic() - t0
    checked = codes.count(401)
    assert codes[:4] == [401, 401, 401, 429] and set(codes) == {401, 429}
    # waits of 1, 2, 4 ... s after the 3 free failures: k extra checks need 2^k - 1 s
    assert checked <= 3 + math.floor(math.log2(elapsed + 1)), (checked, elapsed)
    # the right password is not even checked while the account must wait
    assert _try(worker_b, "ann", PASSWORD).status_code == 429
    with team.read() as s:
        row = s.scalar(select(LoginThrottle).where(LoginThrottle.scope == "account"))
        assert (row.key, row.failures) == ("ann", checked)  # refused attempts are not counted again
    # another account is not affected (the address rule is looser)
    assert _try(worker_a, "other", PASSWORD).status_code == 200


def test_lock_visible_to_admins_and_lifted(team: Database) -> None:
    policy = LoginPolicy(
        account=Rule(free=100, lock_after=5, lock_s=600),
        address=Rule(free=100, lock_after=100),
        local_hold_s=0,  # every attempt asks the database: the unlock below must show at once
    )
    c = TestClient(create_app(team, login_policy=policy))
    assert [_try(c, "ann", "wrong-password").status_code for _ in range(5)] == [401] * 5
    r = _try(c, "ann", PASSWORD)
    assert r.status_code == 429 and 590 <= int(r.headers["retry-after"]) <= 600
    # the lock also holds for a differently spelt name (case, full-width): one account, one counter
    assert _try(c, "ＡＮＮ", PASSWORD).status_code == 429
    boss = TestClient(create_app(team, login_policy=policy))
    login(boss, "boss", PASSWORD)
    users = {u["username"]: u for u in boss.get("/api/admin/users").json()}
    assert users["ann"]["login_locked"] is True and users["ann"]["login_blocked_s"] > 500
    assert users["other"]["login_locked"] is False
    locks = boss.get("/api/admin/lockouts").json()
    assert [(lk["scope"], lk["key"], lk["failures"], lk["locked"]) for lk in locks] == [
        ("account", "ann", 5, True)
    ]
    ann_view = TestClient(create_app(team, login_policy=policy))
    login(ann_view, "other", PASSWORD)
    assert ann_view.get("/api/admin/lockouts").status_code == 403
    assert boss.post("/api/admin/lockouts/clear", json={"scope": "account", "key": "ann"}).json() == {
        "cleared": 1
    }
    assert _try(c, "ann", PASSWORD).status_code == 200


def test_address_rule_and_unknown_names(team: Database) -> None:
    """One client guessing many names (known or not) is throttled by its address; unknown names answer
    exactly like known ones."""
    c = TestClient(create_app(team))
    codes = [_try(c, f"nobody{i}", "wrong-password").status_code for i in range(10)]
    assert codes == [401] * 10
    r = _try(c, "ann", "wrong-password")
    assert r.status_code == 429 and r.json()["detail"].startswith("too many failed logins")
    with team.read() as s:
        row = s.scalar(select(LoginThrottle).where(LoginThrottle.scope == "address"))
        assert (row.key, row.failures) == ("testclient", 10)


def test_delays_grow_then_lock_and_expire(sqlite_db: Database) -> None:
    """The schedule, with a controlled clock: free, then 1 s, 2 s, 4 s... waits, then the lock."""
    policy = LoginPolicy(account=Rule(free=3, lock_after=6, window_s=900, lock_s=900), address=Rule(100, 100))
    keys = [("account", "x"), ("address", "1.2.3.4")]
    t = utcnow()

    def fail(at):  # type: ignore[no-untyped-def]
        sqlite_db.transact(lambda s: throttle.record_failure(s, policy, keys, at))

    def wait(at) -> int:  # type: ignore[no-untyped-def]
        with sqlite_db.read() as s:
            return throttle.retry_after(s, policy, keys, at)

    for _ in range(3):
        fail(t)
    assert wait(t) == 1 and wait(t + timedelta(seconds=1)) == 0
    fail(t + timedelta(seconds=1))
    assert wait(t + timedelta(seconds=1)) == 2
    fail(t + timedelta(seconds=3))
    assert wait(t + timedelta(seconds=3)) == 4
    fail(t + timedelta(seconds=7))  # the sixth: locked for 900 s
    assert wait(t + timedelta(seconds=7)) == 900
    assert wait(t + timedelta(seconds=906)) == 1
    assert wait(t + timedelta(seconds=907)) == 0
    fail(t + timedelta(seconds=1000))  # after the window: counted from one again
    assert wait(t + timedelta(seconds=1000)) == 0


def test_cli_shows_and_lifts_a_lock(tmp_path: Path) -> None:
    from annotation_ui.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    assert run(app, ["adduser", "ann", "--db", url], env={"HFL_ANNOTATE_PASSWORD": PASSWORD}).exit_code == 0
    db = Database(url)
    c = TestClient(create_app(db))
    for _ in range(3):
        _try(c, "ann", "wrong-password")
    r = run(app, ["users", "--db", url])
    assert "ann\tannotator\tactive\tlogin delayed" in r.output, r.output
    assert "[address] testclient\t3 failed logins" not in r.output  # the address is not delayed yet
    r = run(app, ["unlock", "ann", "--db", url])
    assert r.exit_code == 0 and "unlocked" in r.output
    assert _try(c, "ann", PASSWORD).status_code == 200
    db.dispose()


def test_a_flood_of_refused_attempts_is_answered_from_memory(sqlite_db: Database, face_shard: Path) -> None:
    """Once the database said "wait", the same worker refuses further attempts without reading it (up to
    local_hold_s); an unlock on that worker takes effect at once."""
    from sqlalchemy import delete

    make_project(sqlite_db, face_shard, limit=1, gold_every=0)
    add_users(sqlite_db, ["ann"])
    add_users(sqlite_db, ["boss"], role="admin")
    app = create_app(sqlite_db)
    c = TestClient(app)
    assert [_try(c, "ann", "wrong-password").status_code for _ in range(4)] == [401, 401, 401, 429]
    sqlite_db.transact(lambda s: s.execute(delete(LoginThrottle)))  # the database forgets...
    assert _try(c, "ann", PASSWORD).status_code == 429  # ...this worker still holds the key
    assert _try(TestClient(create_app(sqlite_db)), "ann", PASSWORD).status_code == 200  # another does not
    assert _try(c, "boss", PASSWORD).status_code == 200  # the address was not held: only the account
    boss = TestClient(app)
    login(boss, "boss", PASSWORD)
    boss.post("/api/admin/lockouts/clear", json={"scope": "account", "key": "ann"}).raise_for_status()
    assert _try(c, "ann", PASSWORD).status_code == 200
