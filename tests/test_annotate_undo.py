"""Undo that always reaches one's own labels, truthful conflict messages, lease renewal (issue 14, item 6)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from annotation_ui import assign
from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.models import Item, Label, Project, utcnow
from annotation_ui.testing import LiveServer, login

pytest_plugins = ["annotate_fixtures"]
HAPPY = {"expression": "happy", "intensity": "slightly"}


def fill(db: Database, project_id: int, uid: int, item_id: int) -> None:
    """Another annotator takes and labels a given item."""

    def work(s):  # type: ignore[no-untyped-def]
        p = s.get(Project, project_id)
        assign._take(s, p, s.get(Item, item_id), uid, utcnow())
        assign.submit_label(s, p, uid, item_id, "sad", "normally")

    db.transact(work)


def test_undo_after_a_skip_that_others_filled(any_db: Database, face_shard: Path) -> None:
    """The issue's case: A labels y, skips x, others fill x; A's undo used to answer 409 forever."""
    p = make_project(any_db, face_shard, limit=3, raters_per_item=2, quorum=2, gold_every=0)
    ids = add_users(any_db, ["a", "b", "c"])
    a = TestClient(create_app(any_db))
    login(a, "a", PASSWORD)
    y = a.post("/api/projects/1/next").json()["item"]["id"]
    x = a.post(f"/api/projects/1/items/{y}/label", json=HAPPY).json()["item"]["id"]
    a.post(f"/api/projects/1/items/{x}/skip").raise_for_status()
    fill(any_db, p.id, ids["b"], x)
    fill(any_db, p.id, ids["c"], x)
    r = a.post("/api/projects/1/undo")
    assert r.status_code == 200, r.text
    assert r.json()["undone"] == y and r.json()["item"]["id"] == y
    with any_db.read() as s:
        assert s.get(Item, y).n_labels == 0 and s.get(Item, x).n_labels == 2
    # label y again, and undo once more: again y (the filled skip of x is passed over every time)
    a.post(f"/api/projects/1/items/{y}/label", json={"expression": "neutral"}).raise_for_status()
    assert a.post("/api/projects/1/undo").json()["undone"] == y
    a.post("/api/projects/1/undo")  # the second undo: y's label is gone; nothing older than the skip


def test_nothing_to_undo_says_why(sqlite_db: Database, face_shard: Path) -> None:
    p = make_project(sqlite_db, face_shard, limit=2, raters_per_item=2, quorum=2, gold_every=0)
    ids = add_users(sqlite_db, ["a", "b", "c"])
    a = TestClient(create_app(sqlite_db))
    login(a, "a", PASSWORD)
    assert a.post("/api/projects/1/undo").json()["detail"] == "nothing to undo"
    x = a.post("/api/projects/1/next").json()["item"]["id"]
    a.post(f"/api/projects/1/items/{x}/skip").raise_for_status()
    fill(sqlite_db, p.id, ids["b"], x)
    fill(sqlite_db, p.id, ids["c"], x)
    r = a.post("/api/projects/1/undo")
    assert r.status_code == 409
    assert r.json()["detail"] == f"nothing to undo: the items you skipped (#{x}) have all their labels now"
    # a skip of an item that still has room is undone as before
    z = a.post("/api/projects/1/next").json()["item"]["id"]
    a.post(f"/api/projects/1/items/{z}/skip").raise_for_status()
    assert a.post("/api/projects/1/undo").json()["undone"] == z


def test_the_loser_of_a_race_is_told_the_truth(any_db: Database, face_shard: Path) -> None:
    """One slot: A's lease lapsed, B holds the slot. A's submit is refused with what really happened (the
    old message claimed "it has all its labels" while the item had none)."""
    p = make_project(any_db, face_shard, limit=1, raters_per_item=1, quorum=1, lease_seconds=60, gold_every=0)
    ids = add_users(any_db, ["a", "b"])
    t0 = utcnow()

    def call(fn):  # type: ignore[no-untyped-def]
        return any_db.transact(lambda s: fn(s, s.get(Project, p.id)))

    item = call(lambda s, pr: assign.next_item(s, pr, ids["a"], t0)).item_id
    call(lambda s, pr: assign.next_item(s, pr, ids["b"], t0 + timedelta(seconds=61)))
    with pytest.raises(assign.ItemFull) as lost:
        call(
            lambda s, pr: assign.submit_label(
                s, pr, ids["a"], item, "sad", "normally", t0 + timedelta(seconds=62)
            )
        )
    msg = str(lost.value)
    assert msg == (
        f"your lease lapsed 2 s ago: item #{item} has 0 of 1 labels and its 1 free slot(s) are reserved "
        "by 1 other annotator(s) now; your label was not stored"
    )
    call(
        lambda s, pr: assign.submit_label(
            s, pr, ids["b"], item, "happy", "normally", t0 + timedelta(seconds=63)
        )
    )
    # the other way to lose: the item got its labels while one's lease had lapsed
    c = add_users(any_db, ["c"])["c"]
    any_db.transact(lambda s: assign._take(s, s.get(Project, p.id), s.get(Item, item), c, t0))
    with pytest.raises(assign.ItemFull, match=rf"item #{item} has all its 1 labels from other annotators"):
        call(lambda s, pr: assign.submit_label(s, pr, c, item, "sad", "normally", t0 + timedelta(seconds=64)))
    with any_db.read() as s:
        assert s.get(Item, item).n_labels == 1


def test_double_submit_from_two_tabs(any_db: Database, face_shard: Path) -> None:
    """Two tabs of one annotator submit the same item at the same instant: one label is stored, the other
    tab hears that its label was not stored because the first one was."""
    make_project(any_db, face_shard, limit=2, raters_per_item=3, quorum=2, gold_every=0)
    add_users(any_db, ["a"])
    with LiveServer(create_app(any_db)) as srv:
        tabs = [httpx.Client(base_url=srv.url, timeout=30) for _ in range(2)]
        login(tabs[0], "a", PASSWORD)
        tabs[1].cookies.update(tabs[0].cookies)
        tabs[1].headers["X-CSRF-Token"] = tabs[0].headers["X-CSRF-Token"]
        item = tabs[0].post("/api/projects/1/next").json()["item"]["id"]
        go = threading.Barrier(2)
        out: list[httpx.Response] = []

        def submit(c: httpx.Client) -> None:
            go.wait()
            out.append(c.post(f"/api/projects/1/items/{item}/label", json=HAPPY))

        threads = [threading.Thread(target=submit, args=(c,)) for c in tabs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in tabs:
            c.close()
    codes = sorted(r.status_code for r in out)
    assert codes == [200, 409], [r.text for r in out]
    loser = next(r for r in out if r.status_code == 409)
    assert (
        loser.json()["detail"] == f"you labelled item #{item} already: that label is stored (this one is not)"
    )
    with any_db.read() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 1


def test_renewing_a_lease(sqlite_db: Database, face_shard: Path) -> None:
    p = make_project(
        sqlite_db, face_shard, limit=1, raters_per_item=1, quorum=1, lease_seconds=60, gold_every=0
    )
    ids = add_users(sqlite_db, ["a", "b"])
    t0 = utcnow()

    def call(fn):  # type: ignore[no-untyped-def]
        return sqlite_db.transact(lambda s: fn(s, s.get(Project, p.id)))

    item = call(lambda s, pr: assign.next_item(s, pr, ids["a"], t0)).item_id
    assert call(
        lambda s, pr: assign.renew(s, pr, ids["a"], item, t0 + timedelta(seconds=50))
    ) == t0 + timedelta(seconds=110)
    assert call(lambda s, pr: assign.next_item(s, pr, ids["b"], t0 + timedelta(seconds=100))) is None
    # lapsed, but nobody took the slot: renewed all the same
    call(lambda s, pr: assign.renew(s, pr, ids["a"], item, t0 + timedelta(seconds=115)))
    # lapsed and taken: refused, with the reason
    call(lambda s, pr: assign.next_item(s, pr, ids["b"], t0 + timedelta(seconds=200)))
    with pytest.raises(assign.ItemFull, match="reserved by 1 other annotator"):
        call(lambda s, pr: assign.renew(s, pr, ids["a"], item, t0 + timedelta(seconds=201)))
    add_users(sqlite_db, ["c"])
    c = TestClient(create_app(sqlite_db))
    login(c, "c", PASSWORD)
    r = c.post(f"/api/projects/1/items/{item}/renew")
    assert r.status_code == 409 and r.json()["detail"] == f"item #{item} is not in your queue any more"
