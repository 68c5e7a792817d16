# ruff: noqa: F811  (fixtures imported from storage_support are used as test arguments)
"""A real two-node Ray cluster on loopback (head + worker via `ray start`, separate temp dirs, token auth on)
building to an S3 server on 127.0.0.1: the worker node's raylet is killed mid-build and the build completes
with rows identical to a clean local build; a missing or wrong token fails with one error naming the fix.

Slow (two Ray nodes and three builds on a shared 2-core machine): run with
`pytest -m slow tests/test_cluster.py` (`.ci/run` runs it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from storage_support import (  # noqa: F401
    _loopback,
    hfl_cmd,
    local_build,
    make_config,
    media,
    s3,
    s3_media,
    stage_rows,
)

from hfl.storage import RemotePath

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(s3):
    cl = _loopback().RayCluster(workers=1, cpus=1, max_s=1200, extra_env=s3.env)
    yield cl
    cl.stop()


def test_two_node_build_to_s3_survives_losing_the_worker_node(
    tmp_path, s3_media, local_build, s3, cluster
) -> None:
    cfg = make_config(tmp_path, s3_media)  # input and output on S3
    out = RemotePath(f"s3://{s3.bucket}/cluster/out")
    env = {**cluster.env, **s3.env, "HFL_FAULT_SLEEP": "mine:3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        hfl_cmd("build", "-c", str(cfg), "-o", str(out), "--ray-address", cluster.address, "--no-report"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # kill the worker node's raylet once the build is under way (its actors hold units) and before it ends
    mine = out / "stages" / "mine"
    deadline = time.time() + 300
    while time.time() < deadline and not list(mine.glob("part-*.parquet")) and proc.poll() is None:
        time.sleep(0.3)
    raylets = cluster.raylet_pids(cluster.workers[0])
    assert raylets and proc.poll() is None, "the build ended before the worker node could be killed"
    for pid in raylets:
        os.kill(pid, signal.SIGKILL)
    text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, text[-3000:]
    for stage in ("mine", "quality", "shard"):
        got, want = stage_rows(out, stage), stage_rows(local_build, stage)
        assert got == want and len(got) == len(set(got)), stage
    local_tars = sorted(local_build.glob("shards/*/*.tar"))
    for tar in local_tars:
        assert (out / "shards" / tar.parent.name / tar.name).read_bytes() == tar.read_bytes(), tar.name


def test_missing_or_wrong_token_names_the_fix(tmp_path, media, s3, cluster) -> None:
    cfg = make_config(tmp_path, media)
    base = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    for env in ({**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}, base):
        proc = subprocess.run(
            hfl_cmd("build", "-c", str(cfg), "-o", str(tmp_path / "o"), "--ray-address", cluster.address),
            env={**env, "HOME": str(tmp_path)},  # no ~/.ray/auth_token to fall back on
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "RAY_AUTH_MODE=token" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
