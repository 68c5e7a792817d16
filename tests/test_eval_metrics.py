"""Evaluation metrics: rectified IP (Algorithm 1) on hand-computed cases, SSIM change, landmark error, judge
answer parsing, and the identity backend on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from inference import metrics
from inference.evaluate import EvalConfig, IdentityScorer
from inference.judge import parse_amplitude, parse_scores


def test_rectified_ip_hand_computed() -> None:
    # edit realised exactly as expected: no penalty
    assert metrics.rectified_ip(0.8, 0.4, 0.4) == pytest.approx(0.8)
    # half the expected change: p = ((0.4 - 0.2) / (0.4 + 1e-5))^2 = 0.2499875
    assert metrics.rectified_ip(0.8, 0.4, 0.2) == pytest.approx(0.8 - (0.2 / 0.40001) ** 2, abs=1e-9)
    assert metrics.rectified_ip(0.8, 0.4, 0.2) == pytest.approx(0.5500125, abs=1e-6)
    # overshoot is penalised symmetrically: phi_real = 0.6 -> same p
    assert metrics.rectified_ip(0.8, 0.4, 0.6) == pytest.approx(0.5500125, abs=1e-6)
    # far too much change: clipped at 0
    assert metrics.rectified_ip(0.5, 0.2, 0.9) == 0.0
    # nothing asked, nothing done: eps keeps it finite, no penalty
    assert metrics.rectified_ip(0.9, 0.0, 0.0) == pytest.approx(0.9)


def test_unchanged_edit_scores_high_arcface_but_zero_rectified(two_men: tuple) -> None:
    """The App. C.7 failure case: the model returns the source. Identity alone says 'same person' (1.0),
    the rectified score is ~0 because the instruction asked for a change that did not happen."""
    src = two_men[0]
    ident = IdentityScorer(EvalConfig())
    s_arc = ident.similarity(src, src.copy())
    assert s_arc == pytest.approx(1.0, abs=1e-6)
    phi_real = metrics.ssim_change(src, src.copy())
    assert phi_real == pytest.approx(0.0, abs=1e-9)
    s_rip = metrics.rectified_ip(s_arc, 0.35, phi_real)
    assert s_rip == pytest.approx(s_arc - (0.35 / 0.35001) ** 2, abs=1e-9)  # p = 0.99994 by eps
    assert s_rip < 1e-4
    # a different person: identity drops below dlib's same-person point (0.5)
    assert ident.similarity(two_men[0], two_men[1]) < 0.5


def test_ssim_change_grows_with_change(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(astronaut + rng.normal(0, 20, astronaut.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(astronaut, 40, axis=1)
    a, b = metrics.ssim_change(astronaut, noisy), metrics.ssim_change(astronaut, shifted)
    assert 0 < a < 1 and 0 < b < 1 and b > 0.1


def test_landmark_error_and_amplitude() -> None:
    base = np.stack([np.linspace(100, 400, 68), np.linspace(150, 350, 68)], 1)
    moved = base + (3, -4)
    assert metrics.landmark_error(base, moved) == pytest.approx(7.0)
    assert metrics.nme(base, base) == 0
    a, b = metrics.AMPLITUDE_FIT
    assert metrics.amplitude_from_landmarks(base, base) == pytest.approx(a)
    assert metrics.amplitude_from_landmarks(base, moved) > a
    fa, fb = metrics.fit_amplitude([0.0, 1.0, 2.0], [0.1, 0.3, 0.5])
    assert fa == pytest.approx(0.1) and fb == pytest.approx(0.2)


def test_judge_parsing() -> None:
    ans = 'The smile is there. {"sc": 3, "vq": 4} then final: {"sc": 5, "vq": 4, "na": 1}'
    assert parse_scores(ans) == {"sc": 1.0, "vq": 0.75, "na": 0.0}
    assert parse_scores("Semantic Consistency: 4\nVisual Quality: 2\nNatural Appearance: 3") == {
        "sc": 0.75,
        "vq": 0.25,
        "na": 0.5,
    }
    assert parse_scores('{"sc": 7, "vq": 4, "na": 4}') is None
    assert parse_scores("no idea") is None
    assert parse_amplitude('{"regions": ["mouth"], "amplitude": 0.4}') == 0.4
    assert parse_amplitude('{"amplitude": 1.7}') is None


def test_hfl_eval_end_to_end(two_men: tuple, carphone_frames: list, tmp_path) -> None:
    """``hfl eval`` on edits records (a copy, another person) and on pair shards for predictor accuracy."""
    import json

    import cv2
    from typer.testing import CliRunner

    from hfl.cli import app
    from hfl.predictor.geometric import GeometricPredictor
    from inference.face import FaceFinder
    from training.sample_pairs import write_pairs

    src = two_men[0]
    paths = {}
    for name, img in {"src": src, "copy": src, "other": cv2.resize(two_men[1], src.shape[1::-1])}.items():
        paths[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(paths[name]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    ins = "Make his facial expression happy strongly and turn his head 30° left."
    lm = FaceFinder().on_canvas(src).landmarks
    tgt = GeometricPredictor().predict(None, lm, ins)
    recs = [
        {"id": k, "source": str(paths["src"]), "output": str(paths[k]), "instruction": ins,
         "source_landmarks": lm.tolist(), "target_landmarks": tgt.tolist()}
        for k in ("copy", "other")
    ]  # fmt: skip
    edits = tmp_path / "edits.jsonl"
    edits.write_text("".join(json.dumps(r) + "\n" for r in recs))
    pairs = tmp_path / "pairs"
    write_pairs(pairs, carphone_frames, [(0, 4), (2, 7)])
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", str(edits), "-o", str(out), "--predictor-pairs", str(pairs)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "eval.json").read_text())
    rows = {r["id"]: r for r in data["edits"]["rows"]}
    assert (
        rows["copy"]["s_arc"] == pytest.approx(1.0) and rows["copy"]["s_rip"] < 1e-3
    )  # unchanged: rectified ~0
    assert rows["copy"]["landmark_error"] > 5  # the copy does not show the asked landmarks
    assert rows["other"]["s_arc"] < 0.5
    assert data["predictor"]["summary"]["n"] == 2 and data["predictor"]["summary"]["nme"] > 0
    assert "| s_rip |" in (out / "eval.md").read_text()
