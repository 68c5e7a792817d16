"""VLM landmark predictor and its SFT on a tiny local Qwen2.5-VL: prompt -> generate -> parse/fallback, the
SFT loop on CoT traces of real pairs (loss falls, adapter + merged folder load back), captioner scoring."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_vlm_clip_backends import _write_tiny_qwen

from hfl.landmarks import head_pose
from hfl.predictor.landmark_json import dumps_grouped
from inference.face import FaceFinder
from training.captioner import answer, hierarchical_score, score_answers

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_qwen(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    from training.sample_pairs import write_pairs

    out = tmp_path_factory.mktemp("pairs")
    write_pairs(out, carphone_frames, [(0, 3), (1, 5)])
    return out


class _Canned:
    """A backend returning fixed answers (the parsing/fallback path without a model)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    def generate(self, requests: list) -> list[str]:
        return self.answers[: len(requests)]


def test_vlm_predictor_accepts_good_answers_and_falls_back(astronaut: np.ndarray) -> None:
    from hfl.predictor.geometric import GeometricPredictor
    from inference.vlm_predictor import VlmPredictor

    cf = FaceFinder().on_canvas(astronaut)
    ins = "Turn her head 30° left."
    good = GeometricPredictor().predict(None, cf.landmarks, ins) + 1.0
    c = cf.landmarks.mean(0)
    exploded = (cf.landmarks - c) * 3 + c
    answers = ["Step 4: " + dumps_grouped(good), "Step 4: " + dumps_grouped(exploded), "I don't know."]
    pred = VlmPredictor(backend=_Canned(answers))
    out = pred.predict_batch([cf.canvas] * 3, [cf.landmarks] * 3, [ins] * 3)
    assert [r.source for r in pred.last_report] == ["vlm", "fallback:sanity", "fallback:parse"]
    assert np.abs(out[0] - good).mean() < 1.0  # accepted and lightly smoothed
    geo = GeometricPredictor().predict(None, cf.landmarks, ins)
    assert np.allclose(out[1], geo) and np.allclose(out[2], geo)
    y0 = head_pose(cf.landmarks, 512, 512)[0]
    assert head_pose(out[2], 512, 512)[0] - y0 == pytest.approx(-30, abs=5)


def test_vlm_predictor_runs_a_real_tiny_checkpoint(qwen: Path, astronaut: np.ndarray) -> None:
    from hfl.backends.vlm import VlmBackendConfig
    from inference.vlm_predictor import VlmPredictor

    cf = FaceFinder().on_canvas(astronaut)
    pred = VlmPredictor(VlmBackendConfig(path=str(qwen), max_pixels=112 * 112))
    pred.backend.cfg.max_new_tokens = 24  # a random model: keep generation short
    out = pred.predict(cf.canvas, cf.landmarks, "Turn her head 30° right.")
    assert out.shape == (68, 2) and pred.last_report[0].source == "fallback:parse"
    assert isinstance(pred.last_report[0].raw, str)


def test_predictor_sft_on_cot_traces(qwen: Path, pairs: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hfl.backends.vlm import VlmBackendConfig, load_vlm
    from training.cli import app

    recipe = Path(__file__).resolve().parents[1] / "training" / "predictor_tiny.yaml"
    out = tmp_path / "run"
    sets = [f"model.path={qwen}", f"data.train=[{pairs}]", "train.max_steps=6", "model.max_pixels=12544"]
    args = ["predictor", "-c", str(recipe), "-o", str(out)] + [x for s in sets for x in ("--set", s)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["examples"] == 2 and len(summary["losses"]) == 6
    assert np.mean(summary["losses"][-2:]) < np.mean(summary["losses"][:2])  # it learns the traces
    ex = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert "Step 4" in ex[0]["response"] and '"MOUTH"' in ex[0]["response"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    vlm = load_vlm(VlmBackendConfig(path=str(out / "merged"), max_new_tokens=4, max_pixels=112 * 112))
    img = cv2.resize(np.zeros((64, 64, 3), np.uint8), (112, 112))
    assert len(vlm.caption_answers([img])) == 1  # the merged folder loads and generates


def test_captioner_hierarchical_metric() -> None:
    assert hierarchical_score("happy", "slightly", "happy", "slightly") == 1.5
    assert hierarchical_score("happy", "strongly", "happy", "slightly") == 1.0
    assert hierarchical_score("sad", "slightly", "happy", "slightly") == 0.0
    assert hierarchical_score("neutral", None, "neutral", None) == 1.5
    rows = [
        {"expression": "happy", "intensity": "slightly"},
        {"expression": "angry", "intensity": "strongly"},
        {"expression": "neutral", "intensity": None, "meta": {"pronoun": "her"}},
    ]
    answers = [answer(rows[0]), '{"expression": "angry", "intensity": "slightly"}', "not json"]
    s = score_answers(answers, rows)
    assert s["points"] == pytest.approx((1.5 + 1.0 + 0.0) / 3)
    assert s["score"] == pytest.approx(2.5 / 4.5) and s["expression_accuracy"] == pytest.approx(2 / 3)
    assert json.loads(answer(rows[2])) == {"expression": "neutral", "intensity": None, "pronoun": "her"}


def test_captioner_sft_on_an_annotation_export(
    qwen: Path, two_men: tuple, astronaut: np.ndarray, tmp_path: Path
) -> None:
    """An export as ``hfl annotate export`` writes it (train/eval JSONL + images/): SFT, merge, eval score."""
    from training.captioner import train_captioner

    exp = tmp_path / "export"
    (exp / "images").mkdir(parents=True)
    faces = {
        "a": (two_men[0], "happy", "slightly"),
        "b": (two_men[1], "neutral", None),
        "c": (astronaut, "happy", "normally"),
    }
    rows = []
    for key, (img, expr, inten) in faces.items():
        cv2.imwrite(
            str(exp / "images" / f"{key}.png"), cv2.cvtColor(cv2.resize(img, (112, 112)), cv2.COLOR_RGB2BGR)
        )
        rows.append(
            {"key": key, "image": f"images/{key}.png", "expression": expr, "intensity": inten, "meta": {}}
        )
    (exp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    (exp / "eval.jsonl").write_text(json.dumps(rows[2]) + "\n")
    cfg = {
        "output_dir": str(tmp_path / "cap"),
        "model": {"path": str(qwen), "max_pixels": 112 * 112},
        "data": {"export": str(exp)},
        "lora": {"rank": 4},
        "max_length": 1024,
        "merge": True,
        "train": {"max_steps": 3, "lr": 1e-3, "log_every": 1},
    }
    s = train_captioner(cfg)
    assert len(s["losses"]) == 3 and s["eval"]["n"] == 1
    assert 0.0 <= s["eval"]["score"] <= 1.0  # a random tiny model: the score is computed, not good


def test_vlm_backend_dispatch_and_generic_engine(qwen: Path, tmp_path: Path) -> None:
    """Qwen2.5-VL folders go to hfl's QwenVL; other model types (Qwen3-VL) to the generic engine, which is
    exercised here on the tiny Qwen2.5-VL folder (AutoModelForImageTextToText loads it too)."""
    from hfl.backends.base import BackendUnavailable
    from hfl.backends.vlm import IMAGE, QwenVL, VlmBackendConfig, VlmRequest
    from inference.vlm_backend import GenericTransformersEngine, load_backend

    assert isinstance(load_backend(VlmBackendConfig(path=str(qwen))), QwenVL)
    eng = GenericTransformersEngine(VlmBackendConfig(path=str(qwen), max_new_tokens=5, max_pixels=112 * 112))
    out = eng.generate([VlmRequest([IMAGE, "Describe the face."], [np.zeros((112, 112, 3), np.uint8)])])
    assert len(out) == 1 and isinstance(out[0], str)
    with pytest.raises(BackendUnavailable, match="config.json"):
        load_backend(VlmBackendConfig(path=str(tmp_path)))
