"""The pair chain's parts on real faces: change score (Eq. 8), head pose, FER expressions, identity,
instructions, split without leakage."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hfl.backends.expression import EXPRESSIONS, FerExpression, js_distance
from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
from hfl.engine.stage import StageContext
from hfl.instructions import build_instruction, matches_template
from hfl.landmarks import change_score, combine, head_pose, mean_face_3d, pairwise_diffs
from hfl.pipeline import PipelineConfig
from hfl.stages.identity import IdentityStage
from hfl.stages.split import SplitStage, link_videos

DET, LMK = DlibDetector(), DlibLandmarker()


def face(image: np.ndarray) -> tuple[list[float], np.ndarray]:
    b = DET.detect(image)[0]
    return [b.x0, b.y0, b.x1, b.y1], LMK.landmarks(image, b).astype(np.float64)


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def project(yaw: float = 0.0, pitch: float = 0.0, size: int = 512) -> np.ndarray:
    """The 3-D mean face turned by yaw (towards image right) and pitch (up), in degrees, seen by a pinhole
    camera (f = size). Camera axes: x right, y down, z away from the viewer."""
    m = mean_face_3d()
    ry = cv2.Rodrigues(np.array([0.0, -math.radians(yaw), 0.0]))[0]
    rx = cv2.Rodrigues(np.array([-math.radians(pitch), 0.0, 0.0]))[0]
    p = m @ (ry @ rx).T  # pitch, then yaw (the order head_pose decomposes)
    p[:, 2] += 6.0
    return p[:, :2] / p[:, 2:] * size + size / 2


# ----------------------------------------------------------------------------- change score


def test_change_score_by_hand_on_a_real_pair(carphone_frames) -> None:
    """Frames 0 and 60 of the real talking head; Eq. 8 recomputed with plain loops."""
    _, a = face(carphone_frames[0])  # the fixture holds every 12th frame
    _, b = face(carphone_frames[5])
    ca = [(x - sum(p[0] for p in a) / 68, y - sum(p[1] for p in a) / 68) for x, y in a]
    cb = [(x - sum(p[0] for p in b) / 68, y - sum(p[1] for p in b) / 68) for x, y in b]
    iod = (math.dist(a[36], a[45]) + math.dist(b[36], b[45])) / 2
    inner_idx = list(range(36, 48)) + list(range(48, 68))
    inner = sum(abs(ca[i][k] - cb[i][k]) for i in inner_idx for k in (0, 1)) / (2 * len(inner_idx))
    overall = sum(abs(ca[i][k] - cb[i][k]) for i in range(68) for k in (0, 1)) / (2 * 68)
    expected = 0.7 * inner / iod * 1000 + 0.3 * overall / iod * 1000
    got = change_score(a, b)
    assert got == pytest.approx(expected, rel=1e-9)
    assert 5 < got < 250  # a real talking-head pair: neither a copy nor another person
    # where the head sits in the frame is not an edit; a copy is 0
    assert change_score(a, b + (13.0, -7.0)) == pytest.approx(got, rel=1e-9)
    assert change_score(a, a) == 0.0


def test_pairwise_matrix_equals_single_scores(carphone_frames) -> None:
    pts = np.stack([face(f)[1] for f in carphone_frames[:8:2]])
    inner, overall = pairwise_diffs(pts)
    score = combine(inner, overall)
    for i in range(len(pts)):
        for j in range(len(pts)):
            assert score[i, j] == pytest.approx(change_score(pts[i], pts[j]), abs=1e-9)


def test_scale_of_23_is_about_half_a_pose_unit() -> None:
    """The documented calibration: a pure head turn of 10/15/30 degrees scores about 17/26/57."""
    front = project()
    s10, s15, s30 = (change_score(front, project(yaw=y)) for y in (10, 15, 30))
    assert 14 < s10 < 20 and 22 < s15 < 30 and 50 < s30 < 65
    assert s10 < 23 < s15  # 23 sits between a 10 and a 15 degree turn


# ----------------------------------------------------------------------------- head pose


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (30, 0), (-30, 0), (0, 20), (0, -20), (25, 15)])
def test_head_pose_recovers_known_rotations(yaw: float, pitch: float) -> None:
    y, p, r = head_pose(project(yaw, pitch), 512, 512)
    assert y == pytest.approx(yaw, abs=1.5) and p == pytest.approx(pitch, abs=1.5) and abs(r) < 1.5


def test_head_pose_on_real_faces(astronaut) -> None:
    """Mirroring a real portrait flips the sign of yaw; rotating it 20 degrees clockwise adds 20 of roll."""
    _, pts = face(astronaut)
    yaw, _, roll = head_pose(pts, 512, 512)
    _, mirrored = face(np.ascontiguousarray(astronaut[:, ::-1]))
    yaw_m, _, roll_m = head_pose(mirrored, 512, 512)
    assert abs(yaw + yaw_m) < 8 and abs(roll + roll_m) < 4
    rot = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), -20, 1.0), (512, 512))
    _, pts_r = face(rot)
    assert head_pose(pts_r, 512, 512)[2] - roll == pytest.approx(20, abs=4)


# ----------------------------------------------------------------------------- expressions


def test_fer_reads_real_smiles(two_men, astronaut) -> None:
    fer = FerExpression()
    for image in (*two_men, astronaut):  # three real, smiling faces
        box, _ = face(image)
        probs = fer.probabilities(image, box)
        assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0, abs=1e-6)
        cap = fer.caption_from_probabilities(probs)
        assert cap.expression == "happy" and cap.intensity in ("normally", "strongly")


def test_intensity_rule_and_js_distance() -> None:
    fer = FerExpression(intensity_bounds=(0.5, 0.75))
    onehot = np.eye(7)
    for p, want in ((0.4, "slightly"), (0.6, "normally"), (0.9, "strongly")):
        probs = np.full(7, (1 - p) / 6)
        probs[EXPRESSIONS.index("sad")] = p
        assert fer.caption_from_probabilities(probs).intensity == want
    assert fer.caption_from_probabilities(onehot[0]).intensity is None  # neutral
    assert js_distance(onehot[1], onehot[1]) == pytest.approx(0.0, abs=1e-9)
    assert js_distance(onehot[1], onehot[2]) == pytest.approx(1.0)
    assert 0 < js_distance(np.full(7, 1 / 7), onehot[3]) < 1


# ----------------------------------------------------------------------------- identity


def pair_row(a: np.ndarray, b: np.ndarray) -> dict:
    (ba, la), (bb, lb) = face(a), face(b)
    return {
        "key": "k",
        "src_image": jpeg(a),
        "tgt_image": jpeg(b),
        "src_box": ba,
        "tgt_box": bb,
        "src_landmarks": la.ravel().tolist(),
        "tgt_landmarks": lb.ravel().tolist(),
    }


def test_identity_rejects_two_different_men_and_keeps_one_man(two_men, carphone_frames) -> None:
    stage = IdentityStage(PipelineConfig())
    stage.setup()
    different = stage.judge(pair_row(*two_men))
    assert different["reject_reason"] == "different_identity"
    assert different["face_distance"] > 0.6 and different["face_backend"] == "dlib"
    same = stage.judge(pair_row(carphone_frames[0], carphone_frames[7]))
    assert same.get("reject_reason") is None and same["face_distance"] < 0.6
    assert len(same["src_embedding"]) == 128


# ----------------------------------------------------------------------------- instructions


def test_instructions_follow_the_template() -> None:
    cases = {
        (
            "happy",
            "slightly",
            -1,
            0,
            "her",
        ): "Make her facial expression happy slightly and turn her head 30° left.",
        ("sad", "strongly", 0, 0, None): "Make their facial expression sad strongly.",
        ("neutral", None, 0, 1, "his"): "Make his facial expression neutral and turn his head 30° up.",
        (None, None, 2, -1, None): "Turn their head 60° right and 30° down.",
    }
    for args, want in cases.items():
        text = build_instruction(*args)
        assert text == want and matches_template(text)
    assert build_instruction(None, None, 0, 0) is None
    assert not matches_template("Make their face nicer.")


# ----------------------------------------------------------------------------- split


def write_caption_parts(out: Path, rng: np.random.Generator) -> list[dict]:
    """Caption-stage parts for 12 people x 2 videos each (embeddings: a person's centre + noise)."""
    rows = []
    for person in range(12):
        centre = rng.normal(size=128)
        centre /= np.linalg.norm(centre)
        for v in range(2):
            vid = f"p{person:02d}v{v}"
            part = []
            for k in range(int(rng.integers(3, 9))):
                emb = centre + rng.normal(scale=0.01, size=128)
                part.append(
                    {
                        "key": f"{vid}_p{k:06d}",
                        "video_id": vid,
                        "src_embedding": emb.astype(np.float32).tolist(),
                        "edit_expression": EXPRESSIONS[int(rng.integers(0, 7))],
                        "yaw_units": int(rng.integers(-1, 2)),
                        "pitch_units": 0,
                        "reject_reason": None,
                    }
                )
            part.append({**part[0], "key": f"{vid}_rejected", "reject_reason": "no_describable_edit"})
            d = out / "stages" / "caption"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(part), d / f"part-{vid}.parquet")
            rows += part[:-1]
    return rows


def test_split_has_no_video_or_identity_leakage(tmp_path) -> None:
    rows = write_caption_parts(tmp_path, np.random.default_rng(0))
    cfg = PipelineConfig()
    cfg.split.test_fraction = 0.25
    units = SplitStage(cfg).plan(StageContext(tmp_path))
    assign = {k: v for u in units for k, v in u.payload["assign"].items()}
    assert set(assign) == {r["key"] for r in rows}  # every kept row, no rejected one
    person = {r["key"]: r["video_id"][:3] for r in rows}
    splits_of: dict[str, set[str]] = {}
    for key, (split, group, _) in assign.items():
        splits_of.setdefault(person[key], set()).add(split)
        assert group.startswith("g-p")
    assert all(len(s) == 1 for s in splits_of.values()), splits_of  # one person, one split
    # both videos of a person land in one identity group
    groups_of = Counter((person[k], g) for k, (_, g, _) in assign.items())
    assert len({p for p, _ in groups_of}) == len(groups_of)
    n_test = sum(1 for s, _, _ in assign.values() if s == "test")
    target = round(0.25 * len(rows))
    assert 0.5 * target <= n_test <= 1.1 * target + 1


def test_link_videos_merges_one_person_only() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=128), rng.normal(size=128)
    emb = np.stack([a, a + 0.001, b]).astype(np.float64)
    groups = link_videos(["v1", "v2", "v3"], emb, 0.5)
    assert groups["v1"] == groups["v2"] != groups["v3"]


# ----------------------------------------------------------------------------- paper backends (plumbing)


def test_identity_records_clip_and_face_when_both_run(tmp_path, two_men) -> None:
    """Tiny random CLIP (plumbing only): both scores recorded; the decider picks which decides."""
    from tests.test_vlm_clip_backends import _write_tiny_clip

    cfg = PipelineConfig()
    cfg.backends.clip.path = str(_write_tiny_clip(tmp_path / "clip"))
    cfg.identity.decider = "clip"
    cfg.identity.min_clip_identity = -1.0  # any similarity passes: only the face check could reject
    stage = IdentityStage(cfg)
    stage.setup()
    row = stage.judge(pair_row(*two_men))
    assert -1 <= row["clip_identity"] <= 1 and row["face_distance"] > 0.6
    assert row.get("reject_reason") is None  # clip decides, and passes
    cfg.identity.decider = "both"
    assert stage.judge(pair_row(*two_men))["reject_reason"] == "different_identity"


def test_vlm_backends_plug_into_pair_and_caption(tmp_path, carphone_frames) -> None:
    """Tiny random Qwen2.5-VL (plumbing only): the stages call it and record an answer or a reason."""
    from hfl.stages.caption import CaptionStage
    from hfl.stages.models import load_captioner, load_semantic
    from tests.test_vlm_clip_backends import _write_tiny_qwen

    cfg = PipelineConfig()
    e = cfg.backends.expression
    e.captioner = e.semantic = "vlm"
    e.vlm.path = str(_write_tiny_qwen(tmp_path / "qwen"))
    e.vlm.max_new_tokens = 8
    sem = load_semantic(e)
    a, b = carphone_frames[0], carphone_frames[5]
    value = sem.difference((a, [0, 0, 1, 1], 0), (b, [0, 0, 1, 1], 1), {})
    assert sem.name == "qwen2.5-vl" and (value is None or 0 <= value <= 1)
    stage = CaptionStage(cfg)
    stage.captioner = load_captioner(e)
    row = {**pair_row(a, b)}
    for side, img in (("src", a), ("tgt", b)):
        row[f"{side}_width"], row[f"{side}_height"] = img.shape[1], img.shape[0]
    out = stage.judge(row)
    assert out["caption_backend"] == "qwen2.5-vl"
    assert out.get("reject_reason") in (None, "caption_failed", "no_describable_edit")
    if out.get("reject_reason") is None:
        assert matches_template(out["instruction"])


def test_pair_chain_config_errors_name_every_key() -> None:
    from hfl.config import ConfigError
    from hfl.pipeline import validate

    cfg = PipelineConfig()
    cfg.stages = ["pair", "identity", "caption", "split", "shard"]
    cfg.pair.min_change_score, cfg.pair.max_change_score = 30.0, 20.0
    cfg.identity.decider = "clip"
    cfg.backends.expression.captioner = "gpt"
    cfg.split.group_by = "face"
    cfg.shard.source = "nowhere"
    with pytest.raises(ConfigError) as err:
        validate(cfg, cfg.stages)
    msg = str(err.value)
    for key in ("pair.min_change_score", "backends.clip.path", "backends.expression.captioner",
                "split.group_by", "shard.source"):  # fmt: skip
        assert key in msg


def test_selection_covers_distinct_targets_not_one_extreme(carphone_frames) -> None:
    """Real carphone landmarks, edited into three shapes: near copies, a moderate jaw drop and a large
    smile. Largest-change-first would send every kept pair to the smile; coverage-first selection also
    points at the jaw drop once a smile target is kept."""
    from hfl.imageops import encode_jpeg
    from hfl.stages.pair import PairStage

    img = carphone_frames[0]
    f = DlibDetector().detect(img)[0]
    base = DlibLandmarker().landmarks(img, f).astype(np.float64)
    rng = np.random.default_rng(0)
    smile, jaw = base.copy(), base.copy()
    smile[[48, 54]] += [[-6.0, -4.0], [6.0, -4.0]]  # mouth corners up and out
    smile[49:54] += [0.0, -2.0]
    jaw[5:12] += [0.0, 3.0]  # the chin and lower lip drop a little
    jaw[55:60] += [0.0, 3.0]
    shapes = [base] * 4 + [jaw] * 4 + [smile] * 4
    jpeg = encode_jpeg(img)
    frames = [
        {"frame_index": i, "image": jpeg, "box": [f.x0, f.y0, f.x1, f.y1],
         "landmarks": (s + rng.normal(0, 0.1, s.shape)).reshape(-1).tolist()}
        for i, s in enumerate(shapes)
    ]  # fmt: skip

    class AlwaysDiverse:
        name = "stub"

        def difference(self, a, b, cache):  # noqa: ANN001, ANN201
            return 1.0

    cfg = PipelineConfig()
    cfg.pair.min_change_score, cfg.pair.max_pairs_per_video = 5.0, 4
    stage = PairStage(cfg)
    stage.semantic = AlwaysDiverse()
    pts = np.stack([np.asarray(fr["landmarks"]).reshape(68, 2) for fr in frames])
    score = combine(*pairwise_diffs(pts))
    assert score[0, 8] > score[0, 4] > cfg.pair.min_change_score  # the smile is the extreme change
    rows = {(i, j): {"key": f"{i}-{j}", "reject_reason": None} for i in range(12) for j in range(i + 1, 12)}
    candidates = [ij for ij in rows if score[ij] >= cfg.pair.min_change_score]
    stage.select(frames, rows, candidates, score, budget=4)
    kept = [ij for ij, r in rows.items() if r["reject_reason"] is None and "src_image" in r]
    assert len(kept) == 4
    clusters = {j // 4 for _, j in kept}
    assert {1, 2} <= clusters, kept  # targets in both the jaw-drop and the smile group


def test_small_build_puts_a_real_group_in_test() -> None:
    """round(0.0067 x n) = 0 on a small build: the smallest group with real pairs goes to test, not a lone
    synthetic edit whose identity could not be linked (the demo's distorted clip)."""
    from collections import Counter

    from hfl.stages.split import assign_groups, at_least_one_test_group

    strata = {
        "g-a": Counter({"real|happy|yaw+0pitch+0": 30}),
        "g-b": Counter({"real|sad|yaw+0pitch+0": 9, "synthetic|happy|yaw+0pitch+0": 3}),
        "g-c": Counter({"synthetic|happy|yaw+1pitch+0": 1}),
    }
    assert assign_groups(strata, round(0.0067 * 43), seed=0) == set()
    assert at_least_one_test_group(strata, set(), seed=0) == {"g-b"}
    assert at_least_one_test_group({"g-a": strata["g-a"]}, set(), seed=0) == set()  # one person: no test
    assert at_least_one_test_group(strata, {"g-a"}, seed=0) == {"g-a"}  # the formula's choice stands
