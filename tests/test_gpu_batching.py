# ruff: noqa: F811  (fixtures imported from test_vlm_clip_backends are used as test arguments)
"""GPU pools batch across units: a GPU pool's actor takes up to ray.gpu_batch_units units per call and the
caption stage puts rows of several units into one captioner call, while every unit keeps its own part
(resume per unit). GPUs are logical (embedded Ray with num_gpus declared); the stand-in GPU backend is the
offline FER2013 captioner declared as a 1-GPU stage through ray.stage_resources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hfl.engine.runner import attempt_verdict, run_build
from hfl.engine.stage import StageContext
from hfl.pipeline import PipelineConfig, load_config, validate
from tests.conftest import write_video
from tests.test_vlm_clip_backends import fake_vllm, qwen_dir  # noqa: F401

UPSTREAM = ["mine", "quality", "pair", "identity"]
STAGES = [*UPSTREAM, "caption"]
COLUMNS = ["key", "reject_reason", "reject_detail", "src_expression", "tgt_expression", "instruction"]


def write_config(tmp: Path, media: Path, **ray) -> Path:
    data = {
        "name": "gpu-batching",
        "stages": STAGES,
        "mine": {"input": str(media), "fps": 10},
        "ray": {"object_store_mb": 128, **ray},
    }
    p = tmp / f"pipe-{len(list(tmp.glob('pipe-*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def caption_rows(out: Path) -> dict[str, list[tuple]]:
    """unit id -> its caption rows (the columns that carry the captioner's answers and the decision)."""
    return {
        p.stem.removeprefix("part-"): [tuple(r[c] for c in COLUMNS) for r in pq.read_table(p).to_pylist()]
        for p in sorted((out / "stages/caption").glob("part-*.parquet"))
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, carphone, ray_session) -> tuple[Path, Path]:
    """Four real talking-head clips cut from carphone (4 s): forwards, backwards, and two partial ones,
    built up to identity: (media folder, build folder)."""
    import decord

    vr = decord.VideoReader(str(carphone))
    frames = [vr[j].asnumpy() for j in range(len(vr))]
    tmp = tmp_path_factory.mktemp("gpubatch")
    media = tmp / "media"
    media.mkdir()
    for i, clip in enumerate((frames, frames[::-1], frames[20:], frames[:100][::-1])):
        write_video(media / f"clip{i}.mp4", clip)
    cfg = load_config(write_config(tmp, media))
    validate(cfg, UPSTREAM)
    run_build(cfg, tmp / "up", UPSTREAM)
    return media, tmp / "up"


@pytest.fixture(scope="module")
def reference(upstream, tmp_path_factory, ray_session) -> Path:
    """caption run the plain way: CPU pool, one unit per call."""
    media, up = upstream
    out = tmp_path_factory.mktemp("ref") / "out"
    shutil.copytree(up, out)
    cfg = load_config(write_config(out.parent, media))
    run_build(cfg, out, ["caption"])
    return out


class CountingCaptioner:
    """Wraps the real captioner and records how many faces each caption_many call received."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.calls = inner, inner.name, []

    def caption(self, image, box):
        self.calls.append(1)
        return self.inner.caption(image, box)

    def caption_many(self, images, boxes):
        self.calls.append(len(images))
        return self.inner.caption_many(images, boxes)


def test_caption_run_units_batches_across_units_with_the_same_rows(upstream) -> None:
    from hfl.stages.caption import CaptionStage

    _, up = upstream
    stage = CaptionStage(PipelineConfig())
    stage.setup()
    stage.captioner = CountingCaptioner(stage.captioner)
    ctx = StageContext(up)
    units = stage.plan(ctx)
    assert len(units) == 4
    one_by_one = [[r for b in stage.run_unit(u, ctx) for r in b] for u in units]
    per_unit_calls, stage.model_calls = list(stage.captioner.calls), []
    stage.captioner.calls = []
    together = stage.run_units(units, ctx)
    pick = [c for c in COLUMNS if c != "key"]
    assert [[tuple(r.get(c) for c in pick) for r in rows] for rows in together] == [
        [tuple(r.get(c) for c in pick) for r in rows] for rows in one_by_one
    ]
    n_rows = sum(len(rows) for rows in one_by_one)
    size = stage.resources().batch_size
    assert n_rows > size, "too few pairs to fill one model call: the test would not show batching"
    # one caption_many per model call, two faces per row, batch_size rows per call except the last
    assert stage.captioner.calls == [2 * len(c) for c in _chunks(n_rows, size)]
    assert [rows for _, rows in stage.model_calls] == [len(c) for c in _chunks(n_rows, size)]
    assert max(units for units, _ in stage.model_calls) > 1, "no model call took rows of several units"
    assert len(stage.captioner.calls) < len(per_unit_calls)  # fewer engine calls than unit by unit


def test_vllm_engine_gets_rows_of_several_units_per_generate_call(upstream, fake_vllm, qwen_dir) -> None:
    """caption with `engine: vllm` (a stand-in vllm module: no GPU here): each LLM.generate call receives
    the faces of up to batch_size rows taken from several units, and the rows equal unit-by-unit runs."""
    from hfl.stages.caption import CaptionStage

    _, up = upstream
    cfg = PipelineConfig()
    e = cfg.backends.expression
    e.captioner, e.vlm.path, e.vlm.engine = "vlm", str(qwen_dir), "vllm"
    stage = CaptionStage(cfg)
    assert stage.resources().num_gpus == 1  # a GPU pool: it gets several units per call
    stage.setup()
    ctx = StageContext(up)
    units = stage.plan(ctx)
    one_by_one = [[r for b in stage.run_unit(u, ctx) for r in b] for u in units]
    (llm,) = fake_vllm.instances
    llm.calls, stage.model_calls = [], []
    together = stage.run_units(units, ctx)
    pick = ["reject_reason", "reject_detail", "src_expression", "tgt_expression", "caption_backend"]
    assert [[tuple(r.get(c) for c in pick) for r in rows] for rows in together] == [
        [tuple(r.get(c) for c in pick) for r in rows] for rows in one_by_one
    ]
    assert together[0][0]["caption_backend"] == "qwen2.5-vl" and together[0][0]["src_expression"] == "happy"
    n_rows = sum(len(rows) for rows in one_by_one)
    size = stage.resources().batch_size
    assert [len(prompts) for prompts in llm.calls] == [2 * len(c) for c in _chunks(n_rows, size)]
    assert max(units for units, _ in stage.model_calls) > 1


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def hfl_build(cfg: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hfl.cli", "build", "--config", str(cfg), "--output", str(out)]
    cmd += ["--stage", "caption", "--no-report"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ)


def test_gpu_pool_takes_several_units_per_call_and_resumes_per_unit(upstream, reference, tmp_path) -> None:
    media, up = upstream
    out = tmp_path / "out"
    shutil.copytree(up, out)
    cfg = write_config(
        tmp_path,
        media,
        num_cpus=2,
        num_gpus=1,
        gpu_batch_units=4,
        stage_resources={"caption": {"num_gpus": 1}},
    )
    proc = hfl_build(cfg, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((out / "stages/caption/stats.json").read_text())
    (pool,) = stats["pools"]
    assert pool["stages"] == ["caption"] and pool["num_gpus"] == 1 and pool["gpu_ids"] == ["0"]
    assert pool["units_per_call_limit"] == 4 and pool["calls"] == 1 and pool["units_per_call_max"] == 4
    calls = pool["model_calls"]["caption"]
    assert calls["rows"] == stats["rows_in"] and calls["calls_with_several_units"] >= 1
    assert calls["rows_per_call_max"] <= 32  # caption's batch_size: rows per model call
    ref_stats = json.loads((reference / "stages/caption/stats.json").read_text())
    ref_pool = ref_stats["pools"][0]  # a CPU pool: one unit per call, so no model call spans units
    ref_calls = ref_pool["model_calls"]["caption"]
    assert ref_pool["units_per_call_max"] == 1 and ref_calls["units_per_call_max"] == 1
    assert calls["calls"] < ref_calls["calls"]
    got = caption_rows(out)
    assert len(got) == 4 and got == caption_rows(reference)
    assert not list((out / "stages/caption/_attempts").glob("*")), "attempt markers left behind"

    # resume: one part deleted -> only that unit runs again
    parts = sorted((out / "stages/caption").glob("part-*.parquet"))
    kept = {p.name: p.stat().st_mtime_ns for p in parts[1:]}
    parts[0].unlink()
    (out / "stages/caption/stats.json").unlink()
    proc = hfl_build(cfg, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "caption 3 of 4 units already done" in proc.stdout, proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in parts[1:]} == kept
    (pool,) = json.loads((out / "stages/caption/stats.json").read_text())["pools"]
    assert pool["calls"] == 1 and pool["units_per_call_max"] == 1
    assert caption_rows(out) == caption_rows(reference)


def test_attempt_markers_with_several_units_in_flight() -> None:
    """A worker death with one unit in flight records that unit; with several, each is run alone next."""
    assert attempt_verdict("run1 node 1", "run1") == "crash"
    assert attempt_verdict("run1 node", "run1") == "crash"  # a marker written before units were counted
    assert attempt_verdict("run1 node 4", "run1") == "alone"
    assert attempt_verdict("run0 node 4", "run1") == "retry"  # an earlier run: redo
    assert attempt_verdict("run0 node 1", "run1") == "retry"


def test_worker_call_with_several_units_keeps_per_unit_parts_and_crash_records(tmp_path, carphone) -> None:
    """UnitWorker called directly with four units (as a GPU pool's actor is): the two fresh ones run together
    (Stage.run_units), one whose worker died with several units in flight runs alone, one whose worker died
    with it alone is recorded as worker_crash; every unit gets its own part and no marker is left."""
    import dataclasses

    import numpy as np

    from hfl.config import to_dict
    from hfl.engine.runner import UnitWorker
    from hfl.engine.stage import WorkUnit

    cfg = PipelineConfig()
    cfg.mine.max_frames_per_video = 3
    worker = UnitWorker(["mine"], to_dict(cfg), str(tmp_path), run_id="run1")
    seen: list[list[str]] = []
    run_units = worker.stage.run_units
    worker.stage.run_units = lambda units, ctx: seen.append([u.id for u in units]) or run_units(units, ctx)
    attempts = tmp_path / "stages/mine/_attempts"
    attempts.mkdir(parents=True)
    (attempts / "b").write_text("run1  1")  # died with b alone in flight: b caused it
    (attempts / "c").write_text("run1  3")  # died with three in flight: c may be innocent
    units = [WorkUnit(i, {"path": str(carphone), "name": f"{i}.mp4", "video_id": i}) for i in "abcd"]
    out = worker({"unit": np.array([json.dumps(dataclasses.asdict(u)) for u in units])})
    assert out["unit"] == list("abcd") and seen == [["a", "d"]]
    rows = {u: pq.read_table(tmp_path / f"stages/mine/part-{u}.parquet").to_pylist() for u in "abcd"}
    assert [r["reject_reason"] for r in rows["b"]] == ["worker_crash"]
    frames = {u: [(r["frame_index"], r["num_faces"]) for r in rows[u]] for u in "acd"}
    assert frames["a"] == frames["c"] == frames["d"] and len(frames["a"]) == 3
    assert not list(attempts.iterdir())
    calls = {json.loads(x)[5] for x in out["pool0"]}
    assert len(calls) == 1 and json.loads(out["pool0"][0])[6] == 4


def test_fused_gpu_pool_runs_each_stage_over_all_units_of_a_call(upstream, reference, tmp_path) -> None:
    """A later pool with two fused stages (identity+caption, as with both declared 1-GPU) called with four
    pair parts at once: identity runs the four units, then caption gets all four identity parts together;
    the parts equal the one-unit-per-call build."""
    import numpy as np

    from hfl.config import to_dict
    from hfl.engine.runner import UnitWorker

    _, up = upstream
    out = tmp_path / "out"
    shutil.copytree(up, out)
    shutil.rmtree(out / "stages/identity")
    (out / "stages/identity").mkdir()
    (out / "stages/caption").mkdir()  # what prepare_stage does before a run
    worker = UnitWorker(["identity", "caption"], to_dict(PipelineConfig()), str(out), first=False, pool=1)
    pair_parts = sorted((out / "stages/pair").glob("part-*.parquet"))
    ids = [p.stem.removeprefix("part-") for p in pair_parts]
    res = worker({"unit": np.array(ids), "part": np.array([str(p) for p in pair_parts])})
    assert res["part"] == [str(out / f"stages/caption/part-{i}.parquet") for i in ids]
    for i in ids:
        got = pq.read_table(out / f"stages/identity/part-{i}.parquet").to_pylist()
        want = pq.read_table(up / f"stages/identity/part-{i}.parquet").to_pylist()
        assert [(r["key"], r["reject_reason"]) for r in got] == [(r["key"], r["reject_reason"]) for r in want]
    assert caption_rows(out) == caption_rows(reference)
    info = json.loads(res["pool1"][0])
    assert info[6] == 4 and info[7]["caption"] and max(u for u, _ in info[7]["caption"]) > 1
