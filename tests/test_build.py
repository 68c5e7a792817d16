"""End to end on embedded Ray: mine -> quality -> shard on real video, resume, re-run, readers, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hfl.engine.runner import run_build
from hfl.pipeline import load_config, validate


def make_config(tmp: Path, input_path: str, **sections) -> Path:
    data = {
        "name": "test",
        "stages": ["mine", "quality", "shard"],
        "mine": {"input": input_path, "fps": 5},
        "shard": {"samples_per_shard": 8},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    p = tmp / "pipe.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def all_rows(stage_dir: Path, columns: list[str]) -> list[dict]:
    return [
        r
        for p in sorted(stage_dir.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=columns).to_pylist()
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory, carphone, ray_session) -> Path:
    tmp = tmp_path_factory.mktemp("build")
    media = tmp / "media"
    media.mkdir()
    shutil.copy(carphone, media / "talk.mp4")
    cfg = load_config(make_config(tmp, str(media)))
    validate(cfg, cfg.stages)
    run_build(cfg, tmp / "out", cfg.stages)
    return tmp / "out"


def test_outputs_follow_the_contract(built: Path) -> None:
    for st in ("mine", "quality", "shard"):
        stats = json.loads((built / "stages" / st / "stats.json").read_text())
        assert stats["rows_in"] == stats["kept"] + sum(stats["rejected"].values())
        assert stats["config_hash"] and stats["seconds"] >= 0
    mine = json.loads((built / "stages/mine/stats.json").read_text())
    quality = json.loads((built / "stages/quality/stats.json").read_text())
    assert mine["rows_in"] == 20 and quality["rows_in"] == mine["kept"]
    assert quality["kept"] >= 10  # the real talking head mostly survives the paper's thresholds
    manifest = pq.read_table(built / "manifest.parquet").to_pylist()
    assert len(manifest) == quality["kept"]
    assert (built / "config.yaml").is_file()
    tars = sorted((built / "shards/all").glob("hfl-all-*.tar"))
    assert [t.name for t in tars] == [f"hfl-all-{i:06d}.tar" for i in range(len(tars))]
    assert sum(json.loads(t.with_suffix(".stats.json").read_text())["samples"] for t in tars) == len(manifest)


def test_shards_read_by_webdataset_and_ray(built: Path, ray_session) -> None:
    import numpy as np
    import ray
    import webdataset as wds

    tars = sorted(str(p) for p in (built / "shards/all").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("rgb8"))
    manifest = pq.read_table(built / "manifest.parquet").to_pylist()
    assert [s["__key__"] for s in samples] == sorted(m["key"] for m in manifest)
    s = samples[0]
    assert s["jpg"].shape == (144, 176, 3)
    meta = s["json"]
    assert len(meta["face"]["landmarks"]) == 68 and meta["subset"] == "real"
    assert meta["scores"]["log_blur"] >= 50 and meta["provenance"]["video"] == "talk.mp4"
    ds = ray.data.read_webdataset(tars)
    rows = ds.take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(m["key"] for m in manifest)
    assert np.asarray(rows[0]["jpg"]).ndim == 3


def test_rerun_is_noop_and_keys_are_stable(built: Path, ray_session, capsys) -> None:
    cfg = load_config(built / "config.yaml")
    before = {p.name: p.stat().st_mtime_ns for p in (built / "shards/all").glob("*.tar")}
    results = run_build(cfg, built, cfg.stages)
    assert all(r.skipped for r in results)
    assert {p.name: p.stat().st_mtime_ns for p in (built / "shards/all").glob("*.tar")} == before
    keys = [r["key"] for r in pq.read_table(built / "manifest.parquet").to_pylist()]
    # --force redoes the work and yields byte-identical shards with the same keys
    tar0 = (built / "shards/all/hfl-all-000000.tar").read_bytes()
    results = run_build(cfg, built, ["shard"], force=True)
    assert not results[0].skipped
    assert (built / "shards/all/hfl-all-000000.tar").read_bytes() == tar0
    assert [r["key"] for r in pq.read_table(built / "manifest.parquet").to_pylist()] == keys


def test_changed_config_redoes_stage_and_downstream(built: Path, ray_session) -> None:
    cfg = load_config(built / "config.yaml", ["quality.min_log_blur=1000"])
    results = run_build(cfg, built, cfg.stages)
    assert [r.skipped for r in results] == [True, False, False]
    assert results[1].stats["kept"] == 0 and results[1].stats["rejected"]["blurry"] > 0
    assert list((built / "shards").glob("*/*.tar")) == []
    cfg = load_config(built / "config.yaml", ["quality.min_log_blur=50"])
    assert run_build(cfg, built, cfg.stages)[2].stats["kept"] > 0


def test_bad_input_battery_completes_with_reasons(tmp_path, bad_inputs, ray_session) -> None:
    cfg = load_config(make_config(tmp_path, str(bad_inputs)))
    validate(cfg, cfg.stages)
    run_build(cfg, tmp_path / "out", cfg.stages)
    rows = all_rows(tmp_path / "out/stages/mine", ["video", "reject_reason"])
    by_video: dict[str, set] = {}
    for r in rows:
        by_video.setdefault(r["video"], set()).add(r["reject_reason"])
    assert by_video["zero.mp4"] == {"empty_file"}
    assert by_video["text.mp4"] == {"decode_error"}
    assert by_video["truncated.mp4"] == {"decode_error"}
    assert by_video["clip.gif"] == {"unsupported_extension"}
    assert by_video["noface.png"] == {"no_face"}
    assert None in by_video["good.mp4"] and None in by_video["oneframe.mp4"] and None in by_video["gray.avi"]
    assert (tmp_path / "out/stages/shard/stats.json").is_file()


def hfl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hfl.cli", *args]


def test_config_errors_fail_before_any_work(tmp_path, carphone) -> None:
    good = make_config(tmp_path, str(carphone.parent))
    cases = {
        "unknown key": (
            ["--set", "quality.min_aera=0.1"],
            "quality.min_aera: unknown key (did you mean 'min_face_area'?)",
        ),
        "wrong type": (["--set", "mine.fps=fast"], "mine.fps: expected float"),
        "missing input": (["--set", f"mine.input={tmp_path}/nope"], "mine.input: not found"),
        "missing weights": (
            [
                "--set",
                "backends.quality.scorer=dover",
                "--set",
                f"backends.quality.dover_path={tmp_path}/dover.onnx",
            ],
            "dover.onnx",
        ),
        "missing face weights": (["--set", "backends.face.detector=insightface"], "insightface"),
    }
    for name, (extra, needle) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        proc = subprocess.run(
            hfl_cmd("build", "--config", str(good), "--output", str(out), *extra),
            capture_output=True,
            text=True,
        )
        assert proc.returncode != 0, name
        assert needle in proc.stderr, (name, proc.stderr)
        assert not out.exists(), name


def _stage_rows(out: Path, stage: str) -> list[tuple]:
    return sorted(
        (r["key"], r["reject_reason"]) for r in all_rows(out / "stages" / stage, ["key", "reject_reason"])
    )


def test_kill_9_during_mine_then_resume(tmp_path, carphone) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for i in range(8):
        shutil.copy(carphone, media / f"v{i}.mp4")
    cfg = make_config(tmp_path, str(media), mine={"fps": 30}, ray={"num_cpus": 1, "object_store_mb": 128})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        hfl_cmd("build", "--config", str(cfg), "--output", str(out), "--no-report"),
        start_new_session=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mine = out / "stages/mine"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(mine.glob("part-*.parquet"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    proc.wait()
    done_parts = len(list(mine.glob("part-*.parquet")))
    assert 2 <= done_parts < 8 and not (mine / "stats.json").exists()
    resumed = subprocess.run(
        hfl_cmd("build", "--config", str(cfg), "--output", str(out), "--no-report"),
        capture_output=True,
        text=True,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    fresh = tmp_path / "fresh"
    subprocess.run(
        hfl_cmd("build", "--config", str(cfg), "--output", str(fresh), "--no-report"),
        check=True,
        capture_output=True,
        env=env,
    )
    for stage in ("mine", "quality", "shard"):
        got, want = _stage_rows(out, stage), _stage_rows(fresh, stage)
        assert got == want and len(got) == len(set(got)), stage
    assert len(_stage_rows(out, "mine")) == 8 * 64  # max_frames_per_video caps 120 frames at 64


def test_cli_report_and_stages(built: Path) -> None:
    proc = subprocess.run(hfl_cmd("report", str(built)), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    html = (built / "report/index.html").read_text()
    for stage in ("mine", "quality", "shard"):
        assert stage in html
    for stage in ("mine", "quality"):
        for reason in json.loads((built / "stages" / stage / "stats.json").read_text())["rejected"]:
            assert reason in html, reason
    proc = subprocess.run(hfl_cmd("stages"), capture_output=True, text=True)
    assert proc.returncode == 0
    needles = ("mine", "quality", "shard", "log_blur=50.0", "face_area=0.07", "quality=0.5", "resources:")
    for needle in needles:
        assert needle in proc.stdout, needle
    proc = subprocess.run(hfl_cmd("report", str(built / "nope")), capture_output=True, text=True)
    assert proc.returncode == 2 and "no build" in proc.stderr


def test_worker_segfault_is_recorded_and_build_completes(tmp_path, carphone) -> None:
    from hfl.inputs import video_id_for

    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(carphone, media / name)
    cfg = make_config(tmp_path, str(media), ray={"num_cpus": 2, "object_store_mb": 128})
    out = tmp_path / "out"
    env = {**os.environ, "HFL_FAULT_SEGFAULT": f"mine:{video_id_for('b.mp4')}"}
    proc = subprocess.run(
        hfl_cmd("build", "--config", str(cfg), "--output", str(out), "--no-report"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = all_rows(out / "stages/mine", ["video", "reject_reason"])
    assert {r["reject_reason"] for r in rows if r["video"] == "b.mp4"} == {"worker_crash"}
    assert sum(r["reject_reason"] is None for r in rows if r["video"] in ("a.mp4", "c.mp4")) >= 36
    assert json.loads((out / "stages/shard/stats.json").read_text())["kept"] > 0
