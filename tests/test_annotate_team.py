"""A team (issue 14, item 4): project membership, disable/enable, passwd and disable end sessions, user
names NFKC-normalised with look-alikes refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.models import Claim, Item, Project, ProjectMember, User
from annotation_ui.security import create_user
from annotation_ui.team import skeleton
from annotation_ui.testing import login

pytest_plugins = ["annotate_fixtures"]


def client(db: Database, name: str, password: str = PASSWORD) -> TestClient:
    c = TestClient(create_app(db))
    login(c, name, password)
    return c


@pytest.fixture
def two_projects(sqlite_db: Database, face_shard: Path, pair_shard: Path) -> Database:
    make_project(sqlite_db, face_shard, name="faces", limit=3, gold_every=0)
    make_project(sqlite_db, pair_shard, name="pairs", limit=3, gold_every=0)
    add_users(sqlite_db, ["ann"], projects=["faces"])
    add_users(sqlite_db, ["bea"], projects=["faces", "pairs"])
    add_users(sqlite_db, ["boss"], role="admin")
    return sqlite_db


def test_annotators_see_and_get_only_their_projects(two_projects: Database) -> None:
    ann, bea, boss = (client(two_projects, n) for n in ("ann", "bea", "boss"))
    assert [p["name"] for p in ann.get("/api/me").json()["projects"]] == ["faces"]
    assert [p["name"] for p in bea.get("/api/me").json()["projects"]] == ["faces", "pairs"]
    assert [p["name"] for p in boss.get("/api/me").json()["projects"]] == ["faces", "pairs"]
    assert ann.get("/api/projects/2").status_code == 404
    assert ann.post("/api/projects/2/next").status_code == 404
    assert ann.post("/api/projects/2/undo").status_code == 404
    pair_item = bea.post("/api/projects/2/next").json()["item"]
    assert pair_item["kind"] == "pair"
    # membership on the dashboard API: add ann to "pairs", then remove her again
    m = boss.get("/api/admin/projects/2/members").json()
    assert {a["username"]: a["member"] for a in m["annotators"]} == {"ann": False, "bea": True}
    r = boss.post("/api/admin/projects/2/members", json={"username": "ann", "member": True})
    assert r.json() == {"username": "ann", "member": True, "changed": True, "team_size": 2}
    mine = ann.post("/api/projects/2/next").json()["item"]
    assert mine is not None and ann.get(f"/api/items/{mine['id']}/media/src").status_code == 200
    boss.post("/api/admin/projects/2/members", json={"username": "ann", "member": False}).raise_for_status()
    assert ann.post("/api/projects/2/next").status_code == 404
    assert ann.get(f"/api/items/{mine['id']}/media/src").status_code == 404  # her lease went with it
    with two_projects.read() as s:
        uid = s.scalar(select(User.id).where(User.username == "ann"))
        assert s.scalar(select(Claim).where(Claim.annotator_id == uid, Claim.item_id == mine["id"])) is None
    assert ann.post("/api/admin/projects/2/members", json={"username": "ann"}).status_code == 403
    assert boss.post("/api/admin/projects/2/members", json={"username": "zed"}).status_code == 404


def test_disable_and_enable_end_sessions(two_projects: Database, tmp_path: Path) -> None:
    ann, boss = client(two_projects, "ann"), client(two_projects, "boss")
    item = ann.post("/api/projects/1/next").json()["item"]
    assert item is not None
    with two_projects.read() as s:
        uid = s.scalar(select(User.id).where(User.username == "ann"))
        boss_id = s.scalar(select(User.id).where(User.username == "boss"))
    r = boss.post(f"/api/admin/users/{uid}/active", json={"active": False})
    assert r.json() == {"id": uid, "username": "ann", "active": False, "sessions_ended": 1}
    assert ann.get("/api/me").status_code == 401  # the open session is gone at once
    assert (
        TestClient(create_app(two_projects))
        .post("/api/login", json={"username": "ann", "password": PASSWORD})
        .status_code
        == 401
    )
    with two_projects.read() as s:  # her lease was released: the slot is free for others
        assert s.scalar(select(Claim).where(Claim.annotator_id == uid)) is None
    users = {u["username"]: u for u in boss.get("/api/admin/users").json()}
    assert users["ann"]["active"] is False and users["ann"]["projects"] == [1]
    assert boss.post(f"/api/admin/users/{boss_id}/active", json={"active": False}).status_code == 422
    assert boss.post(f"/api/admin/users/{'9' * 30}/active", json={"active": True}).status_code == 404
    boss.post(f"/api/admin/users/{uid}/active", json={"active": True}).raise_for_status()
    client(two_projects, "ann")  # logs in again
    assert (
        client(two_projects, "bea").post(f"/api/admin/users/{uid}/active", json={"active": False}).status_code
        == 403
    )


def test_cli_disable_enable_and_passwd_end_sessions(tmp_path: Path, face_shard: Path) -> None:
    from annotation_ui.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    db = Database(url)
    db.migrate()
    make_project(db, face_shard, name="demo", limit=2, gold_every=0)
    env = {"HFL_ANNOTATE_PASSWORD": PASSWORD}
    assert run(app, ["adduser", "ann", "--db", url, "--project", "demo"], env=env).exit_code == 0
    old = client(db, "ann")
    r = run(app, ["passwd", "ann", "--db", url], env={"HFL_ANNOTATE_PASSWORD": "a-new-password-2"})
    assert r.exit_code == 0 and "1 session(s) ended" in r.output, r.output
    assert old.get("/api/me").status_code == 401  # the old session no longer works
    c = client(db, "ann", "a-new-password-2")
    r = run(app, ["disable", "ann", "--db", url])
    assert r.exit_code == 0 and "disabled; 1 session(s) ended" in r.output
    assert c.get("/api/me").status_code == 401
    assert "ann\tannotator\tdisabled" in run(app, ["users", "--db", url]).output
    assert run(app, ["enable", "ann", "--db", url]).exit_code == 0
    client(db, "ann", "a-new-password-2")
    assert run(app, ["disable", "nobody", "--db", url]).exit_code == 2
    r = run(app, ["members", "--project", "demo", "--db", url])
    assert "ann\tannotator\tactive" in r.output and "1 active annotator(s), 5 raters per item" in r.output
    assert "no item can be completed" in r.output  # the warning goes to stderr (mixed in by CliRunner)
    db.dispose()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ａｄｍｉｎ", "user 'admin' exists"),  # full-width: NFKC makes it 'admin'
        ("аdmin", "mixes scripts"),  # Cyrillic а + Latin dmin
        ("Admin", "looks like the existing user 'admin'"),
        ("асе", "looks like the existing user 'ace'"),  # all Cyrillic: а с е
        ("rnary", "looks like the existing user 'mary'"),
        ("ad min", "letters, ASCII digits"),
        ("adm\u200bin", "letters, ASCII digits"),  # zero-width space
        ("adm٣n", "letters, ASCII digits"),  # an Arabic-Indic digit
        ("", "1-64 characters"),
        ("x" * 65, "1-64 characters"),
    ],
)
def test_look_alike_names_are_refused(sqlite_db: Database, name: str, reason: str) -> None:
    add_users(sqlite_db, ["admin", "ace", "mary"])
    with pytest.raises(ValueError, match=reason):
        sqlite_db.transact(lambda s: create_user(s, name, PASSWORD))


def test_names_that_are_fine(sqlite_db: Database) -> None:
    add_users(sqlite_db, ["admin"])
    made = sqlite_db.transact(
        lambda s: [create_user(s, n, PASSWORD).username for n in ("иван", "ｂｏｂ", "anna.k-2", "李明")]
    )
    assert made == ["иван", "bob", "anna.k-2", "李明"]
    assert skeleton("Ａｄｍｉｎ") == skeleton("аdmin") == "admin"
    boss = TestClient(create_app(sqlite_db))
    add_users(sqlite_db, ["lead"], role="admin")
    login(boss, "lead", PASSWORD)
    r = boss.post("/api/admin/users", json={"username": "ａｄｍｉｎ", "password": PASSWORD})
    assert r.status_code == 422 and r.json()["detail"] == "user 'admin' exists"
    r = boss.post("/api/admin/users", json={"username": "аdmin", "password": PASSWORD})
    assert r.status_code == 422 and "mixes scripts" in r.json()["detail"]
    # logging in with the full-width spelling reaches the same (NFKC) account
    assert (
        TestClient(create_app(sqlite_db))
        .post("/api/login", json={"username": "ｂｏｂ", "password": PASSWORD})
        .json()["username"]
        == "bob"
    )


def test_migration_makes_existing_annotators_members(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    db.migrate("0002")
    with db.write_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, role, active, created_at) VALUES "
                "(1, 'a', 'x', 'annotator', 1, '2026-01-01'), (2, 'b', 'x', 'admin', 1, '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO projects (id, name, raters_per_item, quorum, lease_seconds, gold_every, "
                "guidelines, created_at) VALUES (1, 'p', 5, 3, 600, 10, '', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO items (id, project_id, key, kind, is_gold, max_labels, n_labels, created_at) "
                "VALUES (1, 1, 'k', 'face', 0, 5, 0, '2026-01-01')"
            )
        )
    db.migrate()
    with db.read() as s:
        assert s.execute(select(ProjectMember.project_id, ProjectMember.user_id)).all() == [(1, 1)]
        # nothing was lost on the way (a table copy on SQLite would cascade-delete the project's rows)
        assert s.execute(select(Item.key, Item.project_id)).all() == [("k", 1)]
        assert s.get(Project, 1).show_instruction is False
    db.dispose()
