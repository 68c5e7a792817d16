"""API tests: import, several simulated annotators (overlap, quorum), skip/undo, leases, gold, export."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from annotate_support import PASSWORD, add_users, make_project
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_annotate_agreement import ALPHA_NOMINAL, EXAMPLE, FLEISS
from typer.testing import CliRunner

from annotation_ui import assign
from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.importer import get_or_create_project, import_samples, read_source
from annotation_ui.models import Base, Item, Label, Project, utcnow
from annotation_ui.testing import login

pytest_plugins = ["annotate_fixtures"]


def client(db: Database, name: str) -> TestClient:
    c = TestClient(create_app(db))
    login(c, name, PASSWORD)
    return c


def label_payload(e: str, i: str | None) -> dict:
    return {"expression": e, "intensity": i}


def test_migrations_match_models(any_db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with any_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    any_db.migrate()  # idempotent


def test_import_kinds_and_idempotence(
    sqlite_db: Database, face_shard: Path, pair_shard: Path, tmp_path: Path, carphone_frames: list[np.ndarray]
) -> None:
    folder = tmp_path / "faces" / "sub"
    folder.mkdir(parents=True)
    for i, f in enumerate(carphone_frames[:3]):
        cv2.imwrite(str(folder / f"frame{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    # a build folder: shards/<split>/<shard>.tar + manifest.parquet naming a subset of its keys
    build = tmp_path / "build"
    (build / "shards" / "all").mkdir(parents=True)
    (build / "shards" / "all" / face_shard.name).write_bytes(face_shard.read_bytes())
    manifest_keys = [f"carphone_f{i:06d}" for i in (0, 2, 4)]
    pq.write_table(
        pa.table({"key": manifest_keys, "split": ["all"] * 3, "shard": [face_shard.name] * 3}),
        build / "manifest.parquet",
    )

    def work(s):  # type: ignore[no-untyped-def]
        p = get_or_create_project(s, "kinds")
        return [
            import_samples(s, p, read_source(src))
            for src in (build, face_shard, pair_shard, tmp_path / "faces", face_shard)
        ]

    from_build, faces, pairs, folder_r, again = sqlite_db.transact(work)
    assert from_build.added == 3
    n = len(carphone_frames)
    assert faces.added == n - 3 and faces.existing == 3
    assert pairs.added == 4
    assert folder_r.added == 3
    assert again.added == 0 and again.existing == n
    with sqlite_db.read() as s:
        kinds = dict(s.execute(select(Item.kind, func.count()).group_by(Item.kind)).all())
        pair = s.scalar(select(Item).where(Item.kind == "pair").limit(1))
        assert pair is not None and pair.instruction == "Make the person smile slightly."
        assert json.loads(pair.meta or "{}")["edit"]["expression"] == "happy"
        assert (
            s.scalar(select(Item.key).where(Item.source == str(tmp_path / "faces")).limit(1)) == "sub/frame0"
        )
    assert kinds == {"face": n + 3, "pair": 4}


def test_five_raters_overlap_and_quorum(sqlite_db: Database, face_shard: Path) -> None:
    """Seven annotators on four items: each item gets exactly five labels from five different people;
    the figures match the hand-computed example."""
    make_project(sqlite_db, face_shard, limit=4, gold_every=0)
    names = [f"rater{c}" for c in "abcdefg"]
    add_users(sqlite_db, names)
    add_users(sqlite_db, ["boss"], role="admin")
    with sqlite_db.read() as s:
        keys = {it.id: i + 1 for i, it in enumerate(s.scalars(select(Item).order_by(Item.id)))}
    arrivals: dict[int, int] = {}
    served: dict[str, list[int]] = {}
    for name in names:
        c = client(sqlite_db, name)
        item = c.post("/api/projects/1/next").json()["item"]
        served[name] = []
        while item is not None:
            served[name].append(item["id"])
            e, i = EXAMPLE[keys[item["id"]]][arrivals.get(item["id"], 0)]
            arrivals[item["id"]] = arrivals.get(item["id"], 0) + 1
            r = c.post(f"/api/projects/1/items/{item['id']}/label", json=label_payload(e, i))
            assert r.status_code == 200, r.text
            item = r.json()["item"]
    assert all(len(v) == len(set(v)) for v in served.values())
    assert [len(served[n]) for n in names] == [4, 4, 4, 4, 4, 0, 0]
    with sqlite_db.read() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 20
        assert set(s.scalars(select(Item.n_labels))) == {5}
    admin = client(sqlite_db, "boss")
    st = admin.get("/api/admin/projects/1/stats").json()
    assert st["fleiss_kappa_expression"] == pytest.approx(FLEISS)
    assert st["krippendorff_alpha_expression_nominal"] == pytest.approx(ALPHA_NOMINAL)
    assert (st["items_complete"], st["items_kept"]) == (4, 3)
    assert st["annotators"]["raterd"]["expression_agreement"] == pytest.approx(2 / 3)
    items = {it["id"]: it for it in admin.get("/api/admin/projects/1/items").json()["items"]}
    by_key = {keys[i]: it for i, it in items.items()}
    assert (by_key[2]["expression"], by_key[2]["intensity"], by_key[2]["kept"]) == ("happy", "strongly", True)
    assert by_key[4]["kept"] is False
    png = admin.get("/api/admin/projects/1/confusion.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_skip_undo_progress_and_time(sqlite_db: Database, face_shard: Path) -> None:
    make_project(sqlite_db, face_shard, limit=3, raters_per_item=2, quorum=2, gold_every=0)
    add_users(sqlite_db, ["ann"])
    c = client(sqlite_db, "ann")
    first = c.post("/api/projects/1/next").json()
    assert first["progress"] == {"labelled": 0, "skipped": 0, "available": 3, "items": 3, "complete": 0}
    a = first["item"]["id"]
    assert c.post("/api/projects/1/next").json()["item"]["id"] == a  # the claim is kept until answered
    b = c.post(f"/api/projects/1/items/{a}/skip").json()["item"]["id"]
    assert b != a
    time.sleep(0.25)
    r = c.post(f"/api/projects/1/items/{b}/label", json=label_payload("happy", "slightly")).json()
    assert r["saved"]["duration_ms"] >= 250  # measured by the server, from serving to submit
    assert r["progress"]["labelled"] == 1 and r["progress"]["skipped"] == 1
    nxt = r["item"]["id"]
    assert nxt not in (a, b)
    # undo the label: b is current again and its slot is free again
    u = c.post("/api/projects/1/undo").json()
    assert u["undone"] == b and u["item"]["id"] == b and u["progress"]["labelled"] == 0
    with sqlite_db.read() as s:
        assert s.get(Item, b).n_labels == 0
    c.post(f"/api/projects/1/items/{b}/label", json=label_payload("neutral", None)).raise_for_status()
    # undo twice more: the neutral label, then... the skip of a (older than the undone label? no: the skip)
    assert c.post("/api/projects/1/undo").json()["item"]["id"] == b
    c.post(f"/api/projects/1/items/{b}/label", json=label_payload("sad", "strongly")).raise_for_status()
    with sqlite_db.read() as s:
        lab = s.scalar(select(Label).where(Label.item_id == b))
        assert (lab.expression, lab.intensity) == ("sad", "strongly")
    # a bad label is refused with 422 and stores nothing
    cur = c.post("/api/projects/1/next").json()["item"]["id"]
    assert c.post(f"/api/projects/1/items/{cur}/label", json=label_payload("happy", None)).status_code == 422
    assert (
        c.post(f"/api/projects/1/items/{cur}/label", json=label_payload("bored", "slightly")).status_code
        == 422
    )
    assert (
        c.post(f"/api/projects/1/items/{cur}/label", json=label_payload("neutral", "strongly")).status_code
        == 200
    )
    # the skipped item a comes back only by undo
    assert c.post("/api/projects/1/next").json()["item"] is None
    assert (
        c.post(f"/api/projects/1/items/{a}/label", json=label_payload("happy", "slightly")).status_code == 409
    )


def test_lapsed_leases_never_overfill(any_db: Database, face_shard: Path) -> None:
    """Deterministic lease expiry on one item with two slots (SQLite and PostgreSQL)."""
    project = make_project(any_db, face_shard, limit=1, raters_per_item=2, quorum=2, lease_seconds=60)
    ids = add_users(any_db, ["a", "b", "c", "d", "e"])
    t0 = utcnow()

    def nxt(name: str, t):  # type: ignore[no-untyped-def]
        return any_db.transact(lambda s: assign.next_item(s, s.get(Project, project.id), ids[name], t))

    def submit(name: str, item_id: int, t):  # type: ignore[no-untyped-def]
        return any_db.transact(
            lambda s: assign.submit_label(
                s, s.get(Project, project.id), ids[name], item_id, "happy", "normally", t
            )
        )

    item = nxt("a", t0).item_id
    assert nxt("b", t0).item_id == item
    assert nxt("c", t0) is None  # both slots leased
    later = t0 + timedelta(seconds=61)  # a's and b's leases lapsed
    assert nxt("c", later).item_id == item
    assert nxt("d", later).item_id == item
    assert nxt("e", later) is None
    with pytest.raises(assign.ItemFull):
        submit("a", item, later)  # lapsed, and both slots are held by live leases
    submit("c", item, later + timedelta(seconds=1))
    submit("d", item, later + timedelta(seconds=2))
    with pytest.raises(assign.ItemFull):
        submit("a", item, later + timedelta(seconds=3))
    with pytest.raises(assign.ItemFull):
        submit("b", item, later + timedelta(seconds=3))
    with any_db.read() as s:
        assert s.get(Item, item).n_labels == 2
        assert s.scalar(select(func.count()).select_from(Label)) == 2


def test_gold_items_mixed_in_and_scored(sqlite_db: Database, face_shard: Path, tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        json.dumps({"key": "carphone_f000001", "expression": "happy", "intensity": "slightly"})
        + "\n"
        + json.dumps({"key": "carphone_f000003", "expression": "neutral", "intensity": None})
        + "\n"
    )
    from annotation_ui.importer import load_gold

    def work(s):  # type: ignore[no-untyped-def]
        p = get_or_create_project(s, "g", gold_every=3)
        import_samples(s, p, read_source(face_shard), gold=load_gold(gold), limit=8)

    sqlite_db.transact(work)
    add_users(sqlite_db, ["ann"])
    add_users(sqlite_db, ["boss"], role="admin")
    with sqlite_db.read() as s:
        gold_ids = set(s.scalars(select(Item.id).where(Item.is_gold)))
    assert len(gold_ids) == 2
    c = client(sqlite_db, "ann")
    item = c.post("/api/projects/1/next").json()["item"]
    order = []
    while item is not None:
        order.append(item["id"] in gold_ids)
        e, i = ("happy", "slightly") if item["id"] in gold_ids else ("sad", "normally")
        item = c.post(f"/api/projects/1/items/{item['id']}/label", json=label_payload(e, i)).json()["item"]
    # 6 regular items; gold at the 3rd and 6th label; nothing gold once the regular queue is empty
    assert order == [False, False, True, False, False, True, False, False]
    st = client(sqlite_db, "boss").get("/api/admin/projects/1/stats").json()
    assert st["labels"] == 6  # gold labels stay out of the agreement figures
    assert st["gold"]["ann"] == {
        "gold_labels": 2,
        "expression_correct": 1,
        "exact_correct": 1,
        "expression_accuracy": 0.5,
        "exact_accuracy": 0.5,
    }


def test_pairs_are_served_with_both_images(sqlite_db: Database, pair_shard: Path) -> None:
    make_project(sqlite_db, pair_shard)
    add_users(sqlite_db, ["ann"])
    c = client(sqlite_db, "ann")
    item = c.post("/api/projects/1/next").json()["item"]
    assert item["kind"] == "pair" and set(item["media"]) == {"src", "tgt"}
    assert item["instruction"] == "Make the person smile slightly."
    for url in item["media"].values():
        r = c.get("/" + url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).shape == (144, 176, 3)


def test_cli_import_label_export(tmp_path: Path, face_shard: Path, carphone_frames: list[np.ndarray]) -> None:
    from annotation_ui.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    guide = tmp_path / "guide.txt"
    guide.write_text("Label the face. Be careful.")
    r = run(app, ["adduser", "ann1", "--db", url], env={"HFL_ANNOTATE_PASSWORD": PASSWORD})
    assert r.exit_code == 0, r.output
    assert run(app, ["adduser", "ann1", "--db", url], env={"HFL_ANNOTATE_PASSWORD": PASSWORD}).exit_code == 2
    db = Database(url)
    add_users(db, ["ann2", "ann3"])
    args = ["import", str(face_shard), "--db", url, "--project", "demo", "--members", "ann1,ann2,ann3"]
    # three annotators and the default five raters per item: refused, nothing imported
    r = run(app, [*args, "--gold-every", "0"])
    assert r.exit_code == 2 and "5 raters per item but only 3 active annotator(s)" in r.output, r.output
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 0
    r = run(app, [*args, "--raters", "3", "--quorum", "2", "--guidelines", str(guide), "--gold-every", "0"])
    assert r.exit_code == 0, r.output
    assert f"{len(carphone_frames)} added" in r.output
    with db.read() as s:
        assert s.scalar(select(Project.guidelines)) == "Label the face. Be careful."
        uids = dict(s.execute(select(Label.annotator_id, Label.id)).all())  # none yet
    assert uids == {}
    rng = np.random.default_rng(0)
    for name in ("ann1", "ann2", "ann3"):
        c = client(db, name)
        item = c.post("/api/projects/1/next").json()["item"]
        while item is not None:
            e = "happy" if item["id"] % 4 else str(rng.choice(["sad", "angry"]))
            r2 = c.post(f"/api/projects/1/items/{item['id']}/label", json=label_payload(e, "normally"))
            item = r2.json()["item"]
    out = tmp_path / "export"
    r = run(app, ["export", "--db", url, "--project", "demo", "--out", str(out), "--eval-size", "4"])
    assert r.exit_code == 0, r.output
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    ev = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    summary = json.loads((out / "agreement.json").read_text())
    assert len(ev) == 4 and len(train) + len(ev) == summary["items_kept"] == len(carphone_frames)
    assert {r["key"] for r in train}.isdisjoint({r["key"] for r in ev})
    row = train[0]
    assert row["caption"] == f"{row['intensity']} {row['expression']}" and row["n_agree"] >= 2
    img = cv2.imread(str(out / row["image"]))
    assert img is not None and img.shape == (144, 176, 3)
    assert pq.read_table(out / "train.parquet").num_rows == len(train)
    assert pq.read_table(out / "eval.parquet").column("key").to_pylist() == [r["key"] for r in ev]
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    # the split is deterministic: a second export puts the same keys in eval
    run(
        app,
        ["export", "--db", url, "--project", "demo", "--out", str(tmp_path / "again"), "--eval-size", "4"],
    )
    again = [json.loads(x)["key"] for x in (tmp_path / "again" / "eval.jsonl").read_text().splitlines()]
    assert again == [r["key"] for r in ev]
    db.dispose()
