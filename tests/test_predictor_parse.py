"""Landmark predictor plumbing: instruction parsing, answer parsing, sanity checks, smoothing, CoT traces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hfl.predictor.cot import build_prompt, generate_trace
from hfl.predictor.edit_spec import parse_instruction
from hfl.predictor.geometric import GeometricPredictor
from hfl.predictor.landmark_json import dumps_grouped, parse_landmarks, to_grouped
from inference.face import FaceFinder
from inference.sanity import check, smooth


@pytest.fixture(scope="module")
def face(astronaut: np.ndarray) -> np.ndarray:
    return FaceFinder().on_canvas(astronaut).landmarks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Make his facial expression happy strongly and turn his head 30° left and 30° up.",
            ("happy", "strongly", -30, 30),
        ),
        ("Turn her head 60° right.", (None, None, 60, 0)),
        ("Make their facial expression neutral.", ("neutral", None, 0, 0)),
        ("make her smile a little and look up", ("happy", "slightly", 0, 30)),
        ("turn the head 45 degrees to the left and frown", ("angry", "normally", -45, 0)),
        ("Please keep everything as it is", (None, None, 0, 0)),
    ],
)
def test_parse_instruction(text: str, expected: tuple) -> None:
    s = parse_instruction(text)
    assert (s.expression, s.intensity, s.yaw_deg, s.pitch_deg) == expected


def test_parse_well_formed_last_answer(face: np.ndarray) -> None:
    first, last = face + 3, face - 2
    text = (
        "Step 1 ...\n"
        + json.dumps(to_grouped(first))
        + "\nStep 4: Final\n```json\n"
        + dumps_grouped(last)
        + "\n```"
    )
    got = parse_landmarks(text)
    assert got is not None and np.abs(got - np.round(last)).max() == 0  # the last answer, not the first


def test_parse_lenient_formats(face: np.ndarray) -> None:
    pts = np.round(face)
    grouped = {k.lower(): v for k, v in to_grouped(pts).items()}
    single_quotes = str(grouped)  # python repr: single quotes
    assert np.array_equal(parse_landmarks(single_quotes), pts)
    flat = json.dumps({"landmarks": pts.ravel().tolist()})
    assert np.array_equal(parse_landmarks(flat), pts)
    trailing = dumps_grouped(pts).replace("]]\n}", "]],\n}")
    assert np.array_equal(parse_landmarks(trailing), pts)
    prose = "Step 4: Final Landmark Coordinates. " + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in pts)
    assert np.array_equal(parse_landmarks(prose), pts)


def test_parse_truncated_and_malformed(face: np.ndarray) -> None:
    full = dumps_grouped(face)
    cut = full[: full.index('"MOUTH"') + 40]  # generation stopped inside the mouth group
    assert parse_landmarks(cut) is None
    only_closing_missing = full[:-3]  # all 68 points present, closing brackets lost
    got = parse_landmarks(only_closing_missing)
    assert got is not None and got.shape == (68, 2)
    assert parse_landmarks("") is None
    assert parse_landmarks("I cannot help with that.") is None
    wrong_count = json.dumps({"landmarks": face[:60].tolist()})
    assert parse_landmarks(wrong_count) is None
    bad_group = to_grouped(face)
    bad_group["NOSE"] = bad_group["NOSE"][:5]
    assert parse_landmarks(json.dumps(bad_group)) is None
    assert parse_landmarks('{"JAW": [[1, "a"]]}') is None


def test_sanity_rejects_exploded_face_and_accepts_turn(face: np.ndarray) -> None:
    geo = GeometricPredictor()
    turned = geo.predict(None, face, "Make her facial expression happy strongly and turn her head 30° left.")
    ref = geo.predict(None, face, "Turn her head 30° left.")
    assert check(turned, ref) == []
    c = face.mean(0)
    exploded = (face - c) * 3 + c
    fails = check(exploded, face)
    assert any("inter-ocular" in f for f in fails) and any("face size" in f for f in fails)
    shrunk = (face - c) * 0.5 + c
    assert check(shrunk, face)
    one_off = face.copy()
    one_off[8] += (0, 200)  # chin flung away
    assert any("moved" in f for f in check(one_off, face))
    assert check(np.full((68, 2), np.nan), face) == ["non-finite coordinates"]
    assert check(face[:40], face)


def test_smoothing_restores_rigid_distances(face: np.ndarray) -> None:
    noisy = face.copy()
    noisy[27] += (0, -6)  # stretched nose bridge
    d = lambda p: np.linalg.norm(p[27] - p[30])  # noqa: E731
    sm = smooth(noisy, face)
    assert abs(d(sm) - d(face)) < abs(d(noisy) - d(face))
    assert np.abs(sm[48:68] - noisy[48:68]).max() == 0  # deformable mouth untouched


def test_cot_trace_has_four_steps_and_parses_back(face: np.ndarray) -> None:
    ins = "Make her facial expression surprised strongly and turn her head 30° right."
    tgt = GeometricPredictor().predict(None, face, ins)
    trace = generate_trace(face, ins, tgt)
    pos = [trace.index(f"Step {i}") for i in (1, 2, 3, 4)]
    assert pos == sorted(pos)
    assert "30° towards image right" in trace and "surprised (strongly)" in trace
    assert np.abs(parse_landmarks(trace) - tgt).max() <= 0.5
    prompt = build_prompt(face, ins)
    assert ins in prompt and np.abs(parse_landmarks(prompt) - face).max() <= 0.5
