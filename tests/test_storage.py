# ruff: noqa: F811  (fixtures imported from storage_support are used as test arguments)
"""Builds on object storage (a moto S3 server on 127.0.0.1 started by the fixture) and resource pools with
logical GPUs: shards byte-identical to a local build, read back by webdataset and Ray Data, kill -9 of the
driver and resume on S3 (no orphan Ray process), a stand-in GPU stage in its own pool overlapping the CPU
pool."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from storage_support import hfl_cmd, local_build, make_config, media, s3, s3_media, stage_rows  # noqa: F401

from hfl.engine.runner import run_build
from hfl.pipeline import load_config, validate
from hfl.storage import RemotePath, register_webdataset


@pytest.fixture(scope="module")
def s3_build(tmp_path_factory, s3_media, s3, ray_session) -> RemotePath:
    tmp = tmp_path_factory.mktemp("s3")
    cfg = load_config(make_config(tmp, s3_media))  # input and output on the store
    validate(cfg, cfg.stages)
    out = f"s3://{s3.bucket}/e2e/out"
    run_build(cfg, out, cfg.stages)
    return RemotePath(out)


def test_s3_build_equals_local_build(local_build: Path, s3_build: RemotePath) -> None:
    fs = s3_build.fs
    keys = fs.find(s3_build.key)
    assert not [k for k in keys if k.endswith(".tmp")], "no temporary objects on an object store"
    for stage in ("mine", "quality", "shard"):
        assert (s3_build / "stages" / stage / "stats.json").exists(), stage
        assert stage_rows(s3_build, stage) == stage_rows(local_build, stage), stage
    local_tars = sorted(local_build.glob("shards/*/*.tar"))
    assert local_tars
    for tar in local_tars:
        remote = s3_build / "shards" / tar.parent.name / tar.name
        assert remote.read_bytes() == tar.read_bytes(), f"{tar.name}: shards differ between local and S3"
    s3_manifest = pq.read_table(io.BytesIO((s3_build / "manifest.parquet").read_bytes()))
    assert s3_manifest.equals(pq.read_table(local_build / "manifest.parquet"))
    assert (s3_build / "config.yaml").is_file()


def test_s3_shards_read_by_webdataset_and_ray_data(local_build: Path, s3_build: RemotePath, s3) -> None:
    import pyarrow.fs as pafs
    import ray
    import s3fs
    import webdataset as wds

    want = sorted(pq.read_table(local_build / "manifest.parquet", columns=["key"]).column(0).to_pylist())
    register_webdataset()
    urls = sorted(str(p) for p in s3_build.glob("shards/*/*.tar"))
    got = sorted(s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False))
    assert got == want
    # Ray Data reads on its workers: the filesystem carries the endpoint and credentials when pickled
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
    )
    ds = ray.data.read_webdataset(
        [u.removeprefix("s3://") for u in urls], filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    )
    assert sorted(r["__key__"] for r in ds.iter_rows()) == want


def test_report_on_s3(s3_build: RemotePath) -> None:
    proc = subprocess.run(hfl_cmd("report", str(s3_build)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (s3_build / "report" / "index.html").read_text()
    assert "quality" in html and (s3_build / "report" / "funnel.png").is_file()
    assert (s3_build / "stages" / "mine" / "stats.json").is_file()


def _ray_children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_kill_9_driver_on_s3_resumes_and_leaves_no_ray_process(tmp_path, media, local_build, s3) -> None:
    cfg = make_config(tmp_path, media, ray={"num_cpus": 1, "object_store_mb": 128})
    out = RemotePath(f"s3://{s3.bucket}/kill/out")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HFL_FAULT_SLEEP": "mine:2"}
    proc = subprocess.Popen(
        hfl_cmd("build", "--config", str(cfg), "--output", str(out), "--no-report"),
        start_new_session=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mine = out / "stages" / "mine"
    seen: dict[int, float] = {}
    names: set[str] = set()
    deadline = time.time() + 240
    while time.time() < deadline and len(list(mine.glob("part-*.parquet"))) < 1:
        for p in _ray_children(proc.pid):
            try:
                seen.setdefault(p.pid, p.create_time())
                names.add(p.name())
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: what it started must end by itself
    proc.wait()
    assert any(n.startswith("raylet") for n in names), names
    done_parts = len(list(mine.glob("part-*.parquet")))
    assert 1 <= done_parts < 3 and not (mine / "stats.json").exists()
    deadline = time.time() + 30
    alive = list(seen)
    while alive and time.time() < deadline:
        alive = [p for p, t in seen.items() if psutil.pid_exists(p) and _same(p, t) and not _zombie(p)]
        time.sleep(0.5)
    assert not alive, f"Ray processes left after kill -9 of the driver: {[_name(p) for p in alive]}"
    resumed = subprocess.run(
        hfl_cmd("build", "--config", str(cfg), "--output", str(out), "--no-report"),
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    for stage in ("mine", "quality", "shard"):  # the same rows as a clean (local) build, none twice
        got, want = stage_rows(out, stage), stage_rows(local_build, stage)
        assert got == want and len(got) == len(set(got)), stage


def _same(pid: int, created: float) -> bool:
    try:
        return psutil.Process(pid).create_time() == created
    except psutil.NoSuchProcess:
        return False


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _name(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:80]
    except psutil.NoSuchProcess:
        return str(pid)


def test_gpu_stage_runs_in_its_own_pool_alongside_the_cpu_pool(tmp_path, media, local_build) -> None:
    """quality declared as a 1-GPU stage (logical GPUs, no real one): its own pool, fed while mine runs."""
    cfg = make_config(
        tmp_path,
        media,
        ray={
            "num_cpus": 3,
            "num_gpus": 2,
            "object_store_mb": 128,
            "stage_resources": {"quality": {"num_gpus": 1}},
        },
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        hfl_cmd("build", "--config", str(cfg), "--output", str(out), "--no-report"),
        capture_output=True,
        text=True,
        env={**os.environ, "HFL_FAULT_SLEEP": "mine:1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pools = json.loads((out / "stages/quality/stats.json").read_text())["pools"]
    assert [p["stages"] for p in pools] == [["mine"], ["quality"]]
    assert pools[0]["num_gpus"] == 0 and pools[0]["gpu_ids"] == [], "a CPU-stage actor held a GPU"
    assert pools[1]["num_gpus"] == 1 and set(pools[1]["gpu_ids"]) <= {"0", "1"} and pools[1]["gpu_ids"]
    # overlap, from the parts' timestamps: quality finished a unit before mine finished its last one
    mine_t = sorted(p.stat().st_mtime for p in (out / "stages/mine").glob("part-*.parquet"))
    qual_t = sorted(p.stat().st_mtime for p in (out / "stages/quality").glob("part-*.parquet"))
    assert len(mine_t) == len(qual_t) == 3
    assert qual_t[0] < mine_t[-1], "the GPU pool did not run while the CPU pool was running"
    # 3 units over 2 GPU actors: calls of up to 2 units (ray.gpu_batch_units 8, capped at an even share)
    assert pools[1]["units_per_call_limit"] == 2 and pools[1]["units_per_call_max"] == 2
    assert pools[0]["units_per_call_max"] == 1  # a CPU pool: one unit per call
    for stage in ("mine", "quality", "shard"):
        assert stage_rows(out, stage) == stage_rows(local_build, stage), stage
    shown = subprocess.run(hfl_cmd("stages", "-c", str(cfg)), capture_output=True, text=True)
    assert "pool 2 of 2: quality (cpus=1 gpus=1" in shown.stdout, shown.stdout
    assert "pool 1 of 2: mine (cpus=1 gpus=0" in shown.stdout


def test_pools_split_by_resource_shape_and_size_by_cluster() -> None:
    from hfl.engine.runner import pool_sizes, pools, stage_resources, units_per_call
    from hfl.pipeline import PipelineConfig
    from hfl.stages import STAGES

    cfg = PipelineConfig()
    cfg.ray.stage_resources = {"caption": {"num_gpus": 1}}
    chain = [STAGES[n](cfg) for n in ("pair", "identity", "caption")]
    groups = pools(chain, cfg)
    assert [[s.name for s in g] for g in groups] == [["pair", "identity"], ["caption"]]
    # 8 CPUs, 2 GPUs: 2 GPU actors (1 CPU each), the CPU pool takes the 6 CPUs left
    assert pool_sizes(groups, cfg, {"CPU": 8.0, "GPU": 2.0}, 100) == [6, 2]
    # never more actors than units; a GPU pool never starves the CPU pool of its one actor
    assert pool_sizes(groups, cfg, {"CPU": 8.0, "GPU": 2.0}, 1) == [1, 1]
    assert pool_sizes(groups, cfg, {"CPU": 2.0, "GPU": 4.0}, 100) == [1, 1]
    with pytest.raises(RuntimeError, match="need 1 GPU"):
        pool_sizes(groups, cfg, {"CPU": 8.0}, 100)
    gpu, cpu = (stage_resources(cfg, g[0]) for g in reversed(groups))
    assert units_per_call(cfg, gpu, 100, 2) == 8 and units_per_call(cfg, gpu, 3, 2) == 2
    assert units_per_call(cfg, cpu, 100, 6) == 1
    cfg.ray.stage_resources = {}
    assert len(pools([STAGES[n](cfg) for n in ("pair", "identity", "caption")], cfg)) == 1
