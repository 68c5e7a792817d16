"""Many concurrent annotators on one live server, SQLite and PostgreSQL: no double labels, no overfull
items, no lost labels; and a lease-lapsing hammer straight on the database."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
from annotate_support import PASSWORD, add_users, make_project
from sqlalchemy import func, select

from annotation_ui import assign
from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.models import Item, Label, Project, User, utcnow
from annotation_ui.testing import LiveServer, login

pytest_plugins = ["annotate_fixtures"]
EXPRESSIONS = ["happy", "sad", "angry", "neutral"]


def _check_db(db: Database, raters: int) -> dict[tuple[int, int], int]:
    with db.read() as s:
        rows = s.execute(select(Label.item_id, Label.annotator_id)).all()
        counts = Counter(item for item, _ in rows)
        n_labels = dict(s.execute(select(Item.id, Item.n_labels)).all())
    pairs = Counter((item, who) for item, who in rows)
    assert max(pairs.values()) == 1, "an annotator labelled an item twice"
    assert max(counts.values()) <= raters, "an item holds more labels than configured"
    assert all(n_labels[i] == counts.get(i, 0) for i in n_labels), "the guarded count drifted from the rows"
    return dict(pairs)


def test_concurrent_annotators_over_http(any_db: Database, face_shard: Path) -> None:
    make_project(any_db, face_shard, raters_per_item=5, quorum=3, gold_every=0)
    names = [f"a{i:02d}" for i in range(12)]
    add_users(any_db, names)
    with any_db.read() as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
        n_items = s.scalar(select(func.count()).select_from(Item))
    acked: list[tuple[int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(names))

    with LiveServer(create_app(any_db)) as srv:

        def annotate(name: str) -> int:
            rng = random.Random(name)
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                login(c, name, PASSWORD)
                barrier.wait()
                item = c.post("/api/projects/1/next").json()["item"]
                done = 0
                while item is not None:
                    e = rng.choice(EXPRESSIONS)
                    body = {"expression": e, "intensity": None if e == "neutral" else "normally"}
                    r = c.post(f"/api/projects/1/items/{item['id']}/label", json=body)
                    if r.status_code == 200:
                        with lock:
                            acked.append((item["id"], ids[name]))
                        done += 1
                        item = r.json()["item"]
                    else:
                        assert r.status_code == 409, r.text
                        item = c.post("/api/projects/1/next").json()["item"]
                return done

        with ThreadPoolExecutor(len(names)) as pool:
            per_annotator = list(pool.map(annotate, names))

    stored = _check_db(any_db, 5)
    assert len(acked) == len(set(acked)) == len(stored), "lost or double-acknowledged labels"
    assert set(acked) == set(stored)
    assert sum(per_annotator) == 5 * n_items  # every item reached exactly five labels
    assert max(per_annotator) <= n_items


def test_lapsing_leases_hammer(any_db: Database, face_shard: Path) -> None:
    """Threads claim and submit with clocks jumping past the lease, so slots are re-leased while their
    first holders still submit: the database still never overfills an item or doubles a label."""
    settings = {"raters_per_item": 3, "quorum": 2, "lease_seconds": 5, "gold_every": 0}
    project = make_project(any_db, face_shard, limit=4, **settings)
    ids = list(add_users(any_db, [f"h{i}" for i in range(8)]).values())
    t0 = utcnow()
    acked: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(uid: int) -> None:
        rng = random.Random(uid)
        for step in range(12):
            now = t0 + timedelta(seconds=rng.choice([0, 3, 6, 9]) + step)
            served = any_db.transact(lambda s, t=now: assign.next_item(s, s.get(Project, project.id), uid, t))
            if served is None:
                continue
            later = now + timedelta(seconds=rng.choice([1, 7]))  # 7 s: the lease has lapsed
            try:
                any_db.transact(
                    lambda s, it=served.item_id, t=later: assign.submit_label(
                        s, s.get(Project, project.id), uid, it, "sad", "strongly", t
                    )
                )
                with lock:
                    acked.append((served.item_id, uid))
            except assign.AssignError:
                pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, ids))
    stored = _check_db(any_db, 3)
    assert sorted(acked) == sorted(stored)
    assert len(stored) == 12  # four items, three labels each: the work got done
