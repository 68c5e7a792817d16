"""Fixtures of the annotation-server tests; test modules load them with `pytest_plugins`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from annotate_support import write_face_shard, write_pair_shard

from annotation_ui.db import Database
from annotation_ui.pgtemp import TempPostgres, available


@pytest.fixture(scope="session")
def face_shard(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("annotate_shards") / "hfl-all-000000.tar"
    write_face_shard(path, carphone_frames)
    return path


@pytest.fixture(scope="session")
def pair_shard(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("annotate_pairs") / "hfl-pairs-000000.tar"
    write_pair_shard(path, carphone_frames[:5])
    return path


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TempPostgres]:
    reason = available()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must test PostgreSQL (scripts/setup.sh installs it): {reason}")
    if reason:
        pytest.skip(reason)
    with TempPostgres() as pg:
        yield pg


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'annotations.db'}")
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def pg_db(pg_cluster: TempPostgres) -> Iterator[Database]:
    db = Database(pg_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}"), pool_size=30)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest) -> Database:
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")
