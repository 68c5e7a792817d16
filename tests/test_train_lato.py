"""`hfl train lato`: a tiny config end to end on CPU from a real pair shard, with resume and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    from training.sample_pairs import write_pairs

    out = tmp_path_factory.mktemp("pairs")
    write_pairs(out, carphone_frames, [(0, 3), (4, 7), (2, 9)])
    return out


def _recipe(tmp: Path, pairs: Path, out: Path, mode: str = "tokens", **extra) -> Path:
    base = yaml.safe_load((Path(__file__).parents[1] / "training" / "lato_tiny.yaml").read_text())
    base["output_dir"] = str(out)
    base["data"]["train"] = str(pairs)
    base["dit"]["config"]["landmark_mode"] = mode
    base["train"].update(max_steps=4, save_every=2, log_every=1)
    base["data"].update(extra)
    path = tmp / f"lato-{out.name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_cli_end_to_end_with_resume_and_exports(tmp_path: Path, pair_dir: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    out = tmp_path / "run"
    recipe = _recipe(tmp_path, pair_dir, out)
    res = CliRunner().invoke(app, ["lato", "--config", str(recipe), "--set", "train.max_steps=2"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["lato", "--config", str(recipe)])
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed" and r["step"] == 2 for r in log)
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in steps)
    # checkpoints hold only the trainable tensors: LoRA, adapter, unconditional tokens
    ckpt = load_file(str(next((out / "checkpoints").glob("step-0000004")) / "model.safetensors"))
    assert ckpt and all("lora_" in k or "landmark_in" in k or "landmark_uncond" in k for k in ckpt)
    lora = load_file(str(out / "export" / "lora.safetensors"))
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in lora
    assert set(load_file(str(out / "export" / "landmark_in.safetensors"))) == {"weight", "bias"}


@pytest.mark.parametrize("mode", ["image", "none"])
def test_other_conditioning_modes_train(tmp_path: Path, pair_dir: Path, mode: str) -> None:
    from training.common import load_recipe
    from training.lato import train_lato

    summary = train_lato(
        load_recipe(_recipe(tmp_path, pair_dir, tmp_path / mode, mode), ["train.max_steps=2"])
    )
    assert summary["step"] == 2 and all(np.isfinite(summary["losses"]))


def test_cached_latents_and_text(tmp_path: Path, pair_dir: Path) -> None:
    from training.common import load_recipe
    from training.lato import train_lato

    cache = tmp_path / "cache"
    summary = train_lato(
        load_recipe(_recipe(tmp_path, pair_dir, tmp_path / "c", cache_dir=str(cache)), ["train.max_steps=2"])
    )
    assert summary["step"] == 2
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 3
    assert {"src_lat", "tgt_lat", "text", "text_mask", "orig_hw"} <= set(load_file(str(files[0])))
