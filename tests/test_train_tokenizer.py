"""`hfl train tokenizer`: trains from frame shards, reports metrics, resumes exactly after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

TINY = {"channels": [32, 32], "code_dim": 16, "codebook_size": 64, "num_res_blocks": 1, "reset_every": 4}

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def frame_shards(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    """Frame shards in the demo build's format (jpg + json.face) with real dlib landmarks."""
    import webdataset as wds

    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
    from hfl.imageops import encode_jpeg

    out = tmp_path_factory.mktemp("frames")
    det, lmk = DlibDetector(), DlibLandmarker()
    n = 0
    with wds.TarWriter(str(out / "hfl-all-000000.tar")) as tw:
        for i, frame in enumerate(carphone_frames):
            for flip in (False, True):
                img = np.ascontiguousarray(frame[:, ::-1]) if flip else frame
                boxes = det.detect(img)
                if not boxes:
                    continue
                face = {
                    "box": [boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1],
                    "landmarks": lmk.landmarks(img, boxes[0]).tolist(),
                    "width": 176,
                    "height": 144,
                }
                tw.write(
                    {
                        "__key__": f"f{i:03d}{'m' if flip else 'o'}",
                        "jpg": encode_jpeg(img),
                        "json": json.dumps({"subset": "real", "face": face}).encode(),
                    }
                )
                n += 1
    assert n >= 12
    return out


def _recipe(tmp: Path, shards: Path, out: Path, **train) -> Path:
    cfg = {
        "output_dir": str(out),
        "data": {"train": str(shards), "eval": str(shards)},
        "model": TINY,
        "train": {
            "batch_size": 4,
            "max_steps": 6,
            "lr": 1e-3,
            "log_every": 1,
            "shuffle_buffer": 8,
            "torch_threads": 1,
            **train,
        },
    }
    path = tmp / f"recipe-{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_trains_and_reports_metrics(tmp_path: Path, frame_shards: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    recipe = _recipe(tmp_path, frame_shards, tmp_path / "run")
    res = CliRunner().invoke(app, ["tokenizer", "--config", str(recipe)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ev = metrics["eval"]
    assert metrics["step"] == 6 and ev["samples"] >= 12
    assert 0 < ev["utilisation_pct"] <= 100 and 1 <= ev["perplexity"] <= 64 and ev["l1_px"] > 0
    assert (tmp_path / "run" / "tokenizer.safetensors").exists()


def test_resume_continues_exactly(tmp_path: Path, frame_shards: Path) -> None:
    """3 steps + resume to 6 (crossing an epoch boundary) == 6 uninterrupted steps, bit for bit."""
    from training.common import load_recipe
    from training.tokenizer import train_tokenizer

    train_tokenizer(load_recipe(_recipe(tmp_path, frame_shards, tmp_path / "a")))
    train_tokenizer(load_recipe(_recipe(tmp_path, frame_shards, tmp_path / "b", max_steps=3)))
    train_tokenizer(load_recipe(_recipe(tmp_path, frame_shards, tmp_path / "b")))
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed" and r["step"] == 3 for r in log)
    a, b = (
        load_file(str(tmp_path / "a" / "tokenizer.safetensors")),
        load_file(str(tmp_path / "b" / "tokenizer.safetensors")),
    )
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k


def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path, frame_shards: Path) -> None:
    out = tmp_path / "killed"
    recipe = _recipe(tmp_path, frame_shards, out, max_steps=100000, save_every=2)
    cmd = [
        sys.executable,
        "-c",
        "from hfl.cli import app; app()",
        "train",
        "tokenizer",
        "--config",
        str(recipe),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list((out / "checkpoints").glob("step-*/trainer_state.json")):
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    states = sorted((out / "checkpoints").glob("step-*/trainer_state.json"))
    assert states, "the run wrote no checkpoint before the kill"
    step = max(json.loads(p.read_text())["step"] for p in states)
    from training.common import load_recipe
    from training.tokenizer import train_tokenizer

    metrics = train_tokenizer(load_recipe(recipe, [f"train.max_steps={step + 2}"]))
    assert metrics["step"] == step + 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    resumed = [r for r in log if r.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] == step
