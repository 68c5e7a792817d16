"""Shared by tests/test_storage.py and tests/test_cluster.py: the S3 server fixture, a small real-video
input, the reference local build and helpers."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from hfl.engine.runner import run_build
from hfl.pipeline import load_config, validate
from hfl.storage import location, read_table

ROOT = Path(__file__).resolve().parents[1]


def _loopback():
    spec = importlib.util.spec_from_file_location("loopback", ROOT / "scripts" / "loopback.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server (moto) on 127.0.0.1 with bucket hfl-test; its AWS_* variables set here."""
    srv = _loopback().S3Server(max_s=1200)
    saved = {k: os.environ.get(k) for k in srv.env}
    os.environ.update(srv.env)
    yield srv
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    srv.stop()


def make_config(tmp: Path, media: Path | str, **sections) -> Path:
    data = {
        "name": "s3",
        "stages": ["mine", "quality", "shard"],
        "mine": {"input": str(media), "fps": 5},
        "shard": {"samples_per_shard": 8},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    p = tmp / f"pipe-{len(list(tmp.glob('pipe-*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def stage_rows(out, stage: str) -> list[tuple]:
    d = location(out) / "stages" / stage
    return sorted(
        (r["key"], r["reject_reason"])
        for p in sorted(d.glob("part-*.parquet"))
        for r in read_table(p, columns=["key", "reject_reason"]).to_pylist()
    )


def hfl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hfl.cli", *args]


@pytest.fixture(scope="module")
def media(tmp_path_factory, carphone) -> Path:
    d = tmp_path_factory.mktemp("media")
    for i in range(3):
        shutil.copy(carphone, d / f"v{i}.mp4")
    return d


@pytest.fixture(scope="module")
def s3_media(media, s3) -> str:
    """The same videos under s3://hfl-test/videos/ (names relative to the prefix equal the local ones)."""
    from hfl.storage import RemotePath

    videos = RemotePath(f"s3://{s3.bucket}/videos")
    for v in sorted(media.iterdir()):
        (videos / v.name).write_bytes(v.read_bytes())
    return str(videos)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, s3_media, ray_session) -> Path:
    """The reference: a build to a local folder of the videos on S3 (the config of every S3 build here)."""
    tmp = tmp_path_factory.mktemp("local")
    cfg = load_config(make_config(tmp, s3_media))
    validate(cfg, cfg.stages)
    run_build(cfg, tmp / "out", cfg.stages)
    return tmp / "out"
