"""Raters and quorum that fit the team (issue 14, item 5): editable after import by a documented rule,
refused when no item could complete, quorum a strict majority unless forced; the export keeps only items
with all their labels and a quorum, and its summary counts are right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from annotation_ui import assign
from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.importer import configure_project, get_or_create_project
from annotation_ui.models import Item, Label, Project
from annotation_ui.testing import login

pytest_plugins = ["annotate_fixtures"]


def label_all(db: Database, project_id: int, uid: int, plan: dict[int, str]) -> None:
    """One annotator labels the items in `plan` (item index in id order -> expression)."""
    with db.read() as s:
        ids = list(s.scalars(select(Item.id).where(Item.project_id == project_id).order_by(Item.id)))
    for idx, expr in plan.items():

        def work(s, it=ids[idx], e=expr):  # type: ignore[no-untyped-def]
            p = s.get(Project, project_id)
            assign._take(s, p, s.get(Item, it), uid, assign.utcnow())
            assign.submit_label(s, p, uid, it, e, None if e == "neutral" else "normally")

        db.transact(work)


def test_quorum_must_be_a_strict_majority(sqlite_db: Database, face_shard: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quorum 2 of 5 is not a strict majority"):
        make_project(sqlite_db, face_shard, name="q", raters_per_item=5, quorum=2)
    p = make_project(sqlite_db, face_shard, name="forced", limit=1, raters_per_item=5, quorum=2, force=True)
    assert (p.raters_per_item, p.quorum) == (5, 2)
    with pytest.raises(ValueError, match="between 1 and the raters per item"):
        make_project(sqlite_db, face_shard, name="q6", raters_per_item=5, quorum=6, force=True)
    from annotation_ui.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    for n in ("a1", "a2", "a3", "a4", "a5"):
        run(app, ["adduser", n, "--db", url], env={"HFL_ANNOTATE_PASSWORD": PASSWORD})
    base = ["import", str(face_shard), "--db", url, "--project", "demo", "--members", "all", "--limit", "2"]
    r = run(app, [*base, "--quorum", "2"])
    assert r.exit_code == 2 and "quorum 2 of 5 is not a strict majority" in r.output, r.output
    r = run(app, base)
    assert r.exit_code == 0 and "2 added" in r.output, r.output
    r = run(app, ["settings", "--project", "demo", "--db", url, "--quorum", "2"])
    assert r.exit_code == 2 and "not a strict majority" in r.output
    r = run(app, ["settings", "--project", "demo", "--db", url, "--quorum", "2", "--force"])
    assert r.exit_code == 0 and "5 raters per item, quorum 2" in r.output


def test_import_refuses_raters_above_the_team(tmp_path: Path, face_shard: Path) -> None:
    """The issue's trap: 3 annotators, the default 5 raters per item: nothing could ever complete."""
    from annotation_ui.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    r = run(app, ["import", str(face_shard), "--db", url, "--project", "demo"])
    assert r.exit_code == 2 and "no active annotator among its members" in r.output, r.output
    for n in ("ann1", "ann2", "ann3"):
        run(app, ["adduser", n, "--db", url], env={"HFL_ANNOTATE_PASSWORD": PASSWORD})
    r = run(app, ["import", str(face_shard), "--db", url, "--project", "demo", "--members", "all"])
    assert r.exit_code == 2
    assert (
        "5 raters per item but only 3 active annotator(s)" in r.output and "--raters 3 --quorum 2" in r.output
    )
    args = ["import", str(face_shard), "--db", url, "--project", "demo", "--members", "all", "--raters", "3"]
    r = run(app, [*args, "--limit", "4"])
    assert r.exit_code == 0 and "4 added" in r.output, r.output
    r = run(app, ["settings", "--project", "demo", "--db", url])
    assert "3 raters per item, quorum 2, lease 600 s, instruction hidden, 3 active annotator" in r.output
    # disabling one makes the team too small: raising raters back is refused, lowering is fine
    run(app, ["disable", "ann3", "--db", url])
    r = run(app, ["settings", "--project", "demo", "--db", url, "--raters", "4"])
    assert r.exit_code == 2 and "only 2 active annotator(s)" in r.output
    r = run(app, ["settings", "--project", "demo", "--db", url, "--raters", "2"])
    assert r.exit_code == 0 and "2 raters per item, quorum 2" in r.output, r.output
    r = run(app, ["import", str(face_shard), "--db", url, "--project", "demo", "--force", "--raters", "5"])
    assert r.exit_code == 0, r.output  # forced: the lead expects more annotators to join


def test_raters_editable_after_labels(sqlite_db: Database, face_shard: Path) -> None:
    p = make_project(sqlite_db, face_shard, limit=4, gold_every=0)  # 5 raters, quorum 3
    ids = add_users(sqlite_db, ["a", "b", "c"])
    add_users(sqlite_db, ["boss"], role="admin")
    for name in ("a", "b", "c"):
        label_all(sqlite_db, p.id, ids[name], {0: "happy", 1: "sad", 2: "happy", 3: "angry"})
    boss = TestClient(create_app(sqlite_db))
    login(boss, "boss", PASSWORD)
    st = boss.get("/api/admin/projects/1/stats").json()
    # the dashboard read "10 / 0 / 10": kept can no longer exceed complete
    assert (st["items_total"], st["items_labelled"], st["items_complete"], st["items_kept"]) == (4, 4, 0, 0)
    r = boss.post("/api/admin/projects/1/settings", json={"raters_per_item": 2})
    assert r.status_code == 422 and "can go down to 3, not 2" in r.json()["detail"]
    r = boss.post("/api/admin/projects/1/settings", json={"raters_per_item": 3})
    assert r.json() == {
        "raters_per_item": 3,
        "quorum": 2,
        "lease_seconds": 600,
        "show_instruction": False,
        "team_size": 3,
    }
    st = boss.get("/api/admin/projects/1/stats").json()
    assert (st["items_complete"], st["items_kept"]) == (4, 4)
    with sqlite_db.read() as s:
        assert set(s.scalars(select(Item.max_labels))) == {3}
    # raising the raters opens the items again (a fourth annotator would be served them)
    r = boss.post("/api/admin/projects/1/settings", json={"raters_per_item": 4})
    assert r.status_code == 422 and "only 3 active annotator(s)" in r.json()["detail"]
    r = boss.post("/api/admin/projects/1/settings", json={"raters_per_item": 4, "force": True})
    assert r.json()["quorum"] == 3  # kept a strict majority of 4
    d = add_users(sqlite_db, ["d"])["d"]
    nxt = sqlite_db.transact(lambda s: assign.next_item(s, s.get(Project, p.id), d))
    assert nxt is not None  # a fourth annotator gets the formerly complete items
    st = boss.get("/api/admin/projects/1/stats").json()
    assert (st["items_complete"], st["items_kept"]) == (0, 0)
    r = boss.post("/api/admin/projects/1/settings", json={"quorum": 2})
    assert r.status_code == 422 and "quorum 2 of 4 is not a strict majority" in r.json()["detail"]
    ann = TestClient(create_app(sqlite_db))
    login(ann, "a", PASSWORD)
    assert ann.post("/api/admin/projects/1/settings", json={"raters_per_item": 3}).status_code == 403


def test_export_keeps_complete_items_with_a_quorum(
    sqlite_db: Database, face_shard: Path, tmp_path: Path
) -> None:
    """3 raters, quorum 2: an item with 2 agreeing labels of 3 is not exported (the issue's rows with fewer
    than the configured labels), and the summary line counts each group right."""
    from annotation_ui.cli import app

    p = make_project(sqlite_db, face_shard, name="demo", limit=4, raters_per_item=3, quorum=2, gold_every=0)
    ids = add_users(sqlite_db, ["a", "b", "c"])
    label_all(sqlite_db, p.id, ids["a"], {0: "happy", 1: "happy", 2: "sad"})
    label_all(sqlite_db, p.id, ids["b"], {0: "happy", 1: "sad", 2: "sad"})
    label_all(sqlite_db, p.id, ids["c"], {0: "sad", 1: "angry"})
    # item 0: happy 2 of 3 (kept); item 1: happy/sad/angry (complete, no quorum);
    # item 2: sad 2 of 2 (a quorum, but not complete: not exported); item 3: no labels
    url = f"sqlite:///{sqlite_db.url.database}"
    out = tmp_path / "export"
    r = CliRunner().invoke(
        app, ["export", "--db", url, "--project", "demo", "--out", str(out), "--format", "jsonl"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for f in ("train.jsonl", "eval.jsonl") for x in (out / f).read_text().splitlines()]
    assert [(row["key"], row["expression"], row["n_labels"], row["n_agree"]) for row in rows] == [
        ("carphone_f000000", "happy", 3, 2)
    ]
    assert "exported 1 items" in r.output
    assert (
        "of 4 items: 2 complete (3 labels each), 1 of them kept (>= 2 of 3 agree), 1 without a quorum; "
        "2 not complete yet (not exported)" in r.output
    )
    summary = json.loads((out / "agreement.json").read_text())
    assert (summary["items_total"], summary["items_complete"], summary["items_kept"]) == (4, 2, 1)


def test_configure_rule_on_the_database(any_db: Database, face_shard: Path) -> None:
    """The same rule on PostgreSQL: raters up and down, the CHECK constraint never violated."""
    p = make_project(any_db, face_shard, limit=2, raters_per_item=3, quorum=2, gold_every=0)
    ids = add_users(any_db, ["a", "b"])
    for name in ("a", "b"):
        label_all(any_db, p.id, ids[name], {0: "happy"})
    any_db.transact(lambda s: configure_project(s, s.get(Project, p.id), raters_per_item=2))
    with any_db.read() as s:
        assert dict(s.execute(select(Item.n_labels, Item.max_labels)).all()) == {2: 2, 0: 2}
        assert s.get(Project, p.id).quorum == 2
    with pytest.raises(ValueError, match="can go down to 2"):
        any_db.transact(lambda s: configure_project(s, s.get(Project, p.id), raters_per_item=1))
    any_db.transact(lambda s: get_or_create_project(s, "p", raters_per_item=5))
    with any_db.read() as s:
        assert (s.get(Project, p.id).raters_per_item, s.get(Project, p.id).quorum) == (5, 3)


def test_cached_dashboard_figures_follow_every_change(sqlite_db: Database, face_shard: Path) -> None:
    """The dashboard's cached figures change with every label, undo and relabel (SQLite reuses the id of
    a deleted last row, so the cache key also holds the newest label time) and with the settings."""
    make_project(sqlite_db, face_shard, limit=2, raters_per_item=1, quorum=1, gold_every=0)
    add_users(sqlite_db, ["a"])
    add_users(sqlite_db, ["boss"], role="admin")
    boss, a = TestClient(create_app(sqlite_db)), TestClient(create_app(sqlite_db))
    login(boss, "boss", PASSWORD)
    login(a, "a", PASSWORD)

    def kept() -> dict:
        return boss.get("/api/admin/projects/1/stats").json()["kept_expressions"]

    assert kept() == {}
    item = a.post("/api/projects/1/next").json()["item"]["id"]
    a.post(f"/api/projects/1/items/{item}/label", json={"expression": "sad", "intensity": "normally"})
    assert kept() == {"sad": 1}
    png_sad = boss.get("/api/admin/projects/1/confusion.png").content
    assert boss.get("/api/admin/projects/1/confusion.png").content == png_sad  # cached: same bytes
    assert a.post("/api/projects/1/undo").json()["undone"] == item
    assert kept() == {}
    a.post(f"/api/projects/1/items/{item}/label", json={"expression": "happy", "intensity": "normally"})
    with sqlite_db.read() as s:
        assert s.scalar(select(Label.id)) == 1  # the same id as the undone label
    assert kept() == {"happy": 1}
    assert boss.get("/api/admin/projects/1/confusion.png").content != png_sad
    boss.post("/api/admin/projects/1/settings", json={"raters_per_item": 2, "force": True}).raise_for_status()
    assert kept() == {}  # one label of two: not complete any more
