"""Stages on real frames, run in-process (no Ray): mine on the real talking head, quality reasons."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hfl.engine.parts import write_part
from hfl.engine.stage import StageContext, WorkUnit
from hfl.imageops import decode_jpeg, encode_jpeg
from hfl.pipeline import PipelineConfig
from hfl.stages.mine import MineStage
from hfl.stages.quality import QualityStage


def mine_rows(path: Path, cfg: PipelineConfig | None = None) -> list[dict]:
    cfg = cfg or PipelineConfig()
    st = MineStage(cfg)
    st.setup()
    unit = WorkUnit("u", {"path": str(path), "name": path.name, "video_id": "vid"})
    return [r for b in st.run_unit(unit, StageContext(Path("."))) for r in b]


def test_mine_real_talking_head(carphone) -> None:
    cfg = PipelineConfig()
    cfg.mine.fps = 5.0
    rows = mine_rows(carphone, cfg)
    assert len(rows) == 20  # 4 s at 5 fps
    assert [r["frame_index"] for r in rows] == sorted(r["frame_index"] for r in rows)
    faces = [r for r in rows if r["reject_reason"] is None]
    assert len(faces) >= 18  # the man is visible throughout
    assert len({r["track_id"] for r in faces}) == 1  # one person, one track
    r = faces[0]
    assert decode_jpeg(r["image"]).shape == (144, 176, 3)
    lms = np.asarray(r["landmarks"]).reshape(68, 2)
    x0, y0, x1, y1 = r["box"]
    inside = (lms[:, 0] > x0 - 15) & (lms[:, 0] < x1 + 15) & (lms[:, 1] > y0 - 15) & (lms[:, 1] < y1 + 15)
    assert inside.mean() > 0.9
    assert lms[36:42, 0].mean() < lms[42:48, 0].mean()  # iBUG: 36-41 is on the image left
    assert lms[48:68, 1].mean() > lms[30, 1]  # mouth below the nose tip
    assert len({r["key"] for r in rows}) == len(rows)


def test_mine_records_reasons_for_bad_inputs(bad_inputs) -> None:
    expect = {
        "zero.mp4": "empty_file",
        "text.mp4": "decode_error",
        "truncated.mp4": "decode_error",
        "clip.gif": "unsupported_extension",
        "noface.png": "no_face",
    }
    for name, reason in expect.items():
        rows = mine_rows(bad_inputs / name)
        assert len(rows) == 1 and rows[0]["reject_reason"] == reason, (name, rows[0].get("reject_detail"))
    assert [r["reject_reason"] for r in mine_rows(bad_inputs / "oneframe.mp4")] == [None]
    gray = mine_rows(bad_inputs / "gray.avi")
    assert gray and all(decode_jpeg(r["image"]).shape[2] == 3 for r in gray)
    assert any(r["reject_reason"] is None for r in gray)  # the face is still found in gray frames


def test_quality_reasons_on_real_frames(tmp_path, carphone, astronaut) -> None:
    cfg = PipelineConfig()
    cfg.mine.fps = 2.0
    rows = mine_rows(carphone, cfg)
    kept = [r for r in rows if r["reject_reason"] is None][:4]
    # the same real frame (with its real landmarks), blurred / shifted off-centre / shrunk: each must fail
    # its own check and only that one
    base = kept[0]
    img = decode_jpeg(base["image"])
    lms = np.asarray(base["landmarks"], np.float32).reshape(68, 2)
    pad = cv2.copyMakeBorder(img, 150, 150, 180, 180, cv2.BORDER_CONSTANT)
    variants = {
        "blurry": (cv2.GaussianBlur(img, (0, 0), 2.0), lms),
        "off_center": (np.roll(img, 40, axis=1), lms + [40, 0]),
        "face_too_small": (pad, lms + [180, 150]),
    }
    derived = []
    for name, (im, pts) in variants.items():
        h, w = im.shape[:2]
        derived.append(
            {
                **base,
                "key": name,
                "image": encode_jpeg(im),
                "width": w,
                "height": h,
                "landmarks": pts.reshape(-1).tolist(),
            }
        )
    mined = kept + derived
    part = tmp_path / "part-x.parquet"
    write_part(part, [mined], MineStage.schema)
    q = QualityStage(cfg)
    q.setup()
    out = [r for b in q.run_unit(WorkUnit("x", {"path": str(part)}), StageContext(tmp_path)) for r in b]
    assert [r["reject_reason"] for r in out[:4]] == [None] * 4
    assert all(0.5 <= r["quality"] <= 1 and r["log_blur"] >= 50 for r in out[:4])
    for r, name in zip(out[4:], variants, strict=True):
        assert r["reject_reason"] == name, (name, r["reject_detail"])
        assert r["reject_detail"]


def test_unexpected_failure_is_recorded_not_fatal(tmp_path, carphone) -> None:
    import dataclasses
    import json

    import pyarrow.parquet as pq

    from hfl.config import to_dict
    from hfl.engine.runner import UnitWorker

    cfg = PipelineConfig()
    worker = UnitWorker(["mine"], to_dict(cfg), str(tmp_path))
    (tmp_path / "stages/mine").mkdir(parents=True)

    def boom(image):
        raise RuntimeError("detector exploded")

    worker.stage.detector.detect = boom
    unit = WorkUnit("v", {"path": str(carphone), "name": "v.mp4", "video_id": "v"})
    out = worker({"unit": np.array([json.dumps(dataclasses.asdict(unit))])})
    assert out["unit"] == ["v"]
    rows = pq.read_table(tmp_path / "stages/mine/part-v.parquet").to_pylist()
    assert [r["reject_reason"] for r in rows] == ["error"]
    assert "detector exploded" in rows[0]["reject_detail"]


def test_quality_row_error_is_recorded(carphone) -> None:
    rows = mine_rows(carphone)
    good = next(r for r in rows if r["reject_reason"] is None)
    q = QualityStage(PipelineConfig())
    q.setup()
    broken = {**good, "image": b"not a jpeg"}
    out = q.judge_safely(broken, {})
    assert out["reject_reason"] == "error" and "not a decodable image" in out["reject_detail"]
    assert q.judge_safely(good, {})["reject_reason"] is None
