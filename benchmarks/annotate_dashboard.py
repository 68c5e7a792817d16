"""Dashboard load at the paper's scale: 18.6 K items, ~91 K labels from 50 annotators, SQLite and PostgreSQL.

Seeds a database the size of the paper's expression set (LaTo App. B.2: 18.6 K faces, 5 raters each;
~91 K labels: most items complete, some still open), every item carrying a real face (a carphone frame),
then serves it with one uvicorn server on loopback and times what the dashboard page requests, as an admin:
`stats`, `items?limit=100`, `confusion.png`, `users`, `members`, `lockouts`. Three situations:

* cold: the first load after the server starts (nothing cached);
* warm: the next load, nothing changed;
* after a label: one more label was stored since (the cached figures are recomputed once), then again.

    python benchmarks/annotate_dashboard.py                        # SQLite then PostgreSQL
    python benchmarks/annotate_dashboard.py --backend sqlite --items 2000 --labels 9800
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
PASSWORD = "bench-password-1"
ENDPOINTS = ["stats", "items?limit=100", "confusion.png", "users", "members", "lockouts"]


def seed(url: str, n_items: int, n_labels: int, n_annotators: int, raters: int, seed_: int = 0) -> None:
    """Items with a real face each, labels drawn around a per-item true expression (agreement ~0.6)."""
    from datetime import timedelta

    from annotate_latency import real_faces
    from sqlalchemy import insert

    from annotation_ui.db import Database
    from annotation_ui.importer import get_or_create_project
    from annotation_ui.labels import EXPRESSIONS, INTENSITIES
    from annotation_ui.models import Item, ItemMedia, Label, ProjectMember, User, utcnow
    from annotation_ui.security import hash_password

    rng = np.random.default_rng(seed_)
    db = Database(url)
    db.migrate()
    face = real_faces(1)[0]
    pw = hash_password(PASSWORD)
    now = utcnow()

    def work(s):  # type: ignore[no-untyped-def]
        p = get_or_create_project(s, "paper", raters_per_item=raters, gold_every=0)
        s.add(User(username="lead", password_hash=pw, role="admin", active=True))
        users = [
            User(username=f"ann{i:03d}", password_hash=pw, role="annotator", active=True)
            for i in range(n_annotators)
        ]
        s.add_all(users)
        s.flush()
        s.add_all(ProjectMember(project_id=p.id, user_id=u.id, added_at=now) for u in users)
        # labels per item: `raters` for most, fewer for the rest, summing to n_labels
        per_item = np.full(n_items, raters)
        short = n_items * raters - n_labels
        if short > 0:
            idx = rng.choice(n_items, size=short, replace=True)
            np.subtract.at(per_item, idx, 1)
            per_item = np.clip(per_item, 0, raters)
        s.execute(
            insert(Item),
            [
                {"project_id": p.id, "key": f"paper-{i:06d}", "kind": "face", "is_gold": False,
                 "max_labels": raters, "n_labels": int(per_item[i]), "created_at": now}
                for i in range(n_items)
            ],
        )  # fmt: skip
        ids = [r[0] for r in s.execute(Item.__table__.select().with_only_columns(Item.id).order_by(Item.id))]
        s.execute(
            insert(ItemMedia),
            [{"item_id": i, "role": "image", "mime": "image/jpeg", "data": face} for i in ids],
        )
        uids = [u.id for u in users]
        rows = []
        for item_id, k in zip(ids, per_item, strict=True):
            truth = int(rng.integers(0, len(EXPRESSIONS)))
            for uid in rng.choice(uids, size=int(k), replace=False):
                e = truth if rng.random() < 0.65 else int(rng.integers(0, len(EXPRESSIONS)))
                expr = EXPRESSIONS[e]
                t = now - timedelta(seconds=float(rng.uniform(0, 86_400 * 20)))
                rows.append(
                    {"item_id": item_id, "annotator_id": int(uid), "expression": expr,
                     "intensity": None if expr == "neutral" else INTENSITIES[int(rng.integers(0, 3))],
                     "served_at": t, "created_at": t + timedelta(seconds=float(rng.gamma(2.0, 2.5))),
                     "duration_ms": int(rng.gamma(2.0, 2500))}
                )  # fmt: skip
        for i in range(0, len(rows), 20_000):
            s.execute(insert(Label), rows[i : i + 20_000])
        return len(rows)

    n = db.transact(work)
    db.dispose()
    print(f"  seeded {n_items} items, {n} labels, {n_annotators} annotators")


def load(c: httpx.Client) -> dict[str, float]:
    """One dashboard load: every request the page makes, in order; seconds per request."""
    out: dict[str, float] = {}
    for ep in ["me", *ENDPOINTS]:
        path = {
            "me": "/api/me",
            "users": "/api/admin/users",
            "lockouts": "/api/admin/lockouts",
        }.get(ep, f"/api/admin/projects/1/{ep}")
        t = time.perf_counter()
        r = c.get(path)
        out[ep.split("?")[0]] = time.perf_counter() - t
        r.raise_for_status()
    return out


def add_label(url: str) -> None:
    """One more label on an open item, as an annotator would store it."""
    from sqlalchemy import select

    from annotation_ui import assign
    from annotation_ui.db import Database
    from annotation_ui.models import Project, User

    db = Database(url)

    def work(s):  # type: ignore[no-untyped-def]
        p = s.scalar(select(Project))
        for u in s.scalars(select(User).where(User.role == "annotator")):
            served = assign.next_item(s, p, u.id)
            if served is not None:
                assign.submit_label(s, p, u.id, served.item_id, "happy", "normally")
                return
        raise RuntimeError("no open item")

    db.transact(work)
    db.dispose()


def fmt(t: dict[str, float]) -> str:
    return (
        f"total {sum(t.values()) * 1000:7.0f} ms  ("
        + ", ".join(f"{k} {v * 1000:.0f}" for k, v in t.items())
        + ")"
    )


def run(backend: str, args: argparse.Namespace, tmp: Path) -> None:
    from annotate_latency import database, start_server

    from annotation_ui.pgtemp import free_port

    with database(backend, tmp, "dash") as url:
        if url is None:
            return
        print(f"[{backend}]")
        t0 = time.perf_counter()
        seed(url, args.items, args.labels, args.annotators, args.raters)
        print(f"  seeding took {time.perf_counter() - t0:.0f} s")
        port = free_port()
        proc = start_server(url, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
                c.post("/api/login", json={"username": "lead", "password": PASSWORD}).raise_for_status()
                print(f"  cold          {fmt(load(c))}")
                print(f"  warm          {fmt(load(c))}")
                add_label(url)
                print(f"  after a label {fmt(load(c))}")
                print(f"  again         {fmt(load(c))}")
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--items", type=int, default=18_600)
    ap.add_argument("--labels", type=int, default=91_000)
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--raters", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hfl-annotate-dash-"))
    try:
        for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
            run(backend, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
