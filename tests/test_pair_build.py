"""End to end on embedded Ray: mine -> quality -> pair -> identity -> caption -> split -> shard on the real
talking head; pair shards read by webdataset and Ray; dataset card, report, resume; a clip that cuts from
one real man to another is caught by identity; a corrupt landmark row does not stop the build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from hfl.engine.runner import run_build
from hfl.instructions import matches_template
from hfl.pipeline import load_config, validate
from tests.conftest import write_video

CHAIN = ["mine", "quality", "pair", "identity", "caption", "split", "shard"]


def make_config(tmp: Path, media: Path, **sections) -> Path:
    data = {
        "name": "pairs-test",
        "stages": CHAIN,
        "mine": {"input": str(media), "fps": 10},
        "split": {"test_fraction": 0.2},
        "shard": {"source": "split", "samples_per_shard": 4},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    p = tmp / "pipe.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def rows(stage_dir: Path, columns: list[str] | None = None) -> list[dict]:
    return [
        r
        for p in sorted(stage_dir.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=columns).to_pylist()
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory, carphone, ray_session) -> Path:
    tmp = tmp_path_factory.mktemp("pairs")
    media = tmp / "media"
    media.mkdir()
    shutil.copy(carphone, media / "talk.mp4")
    cfg = load_config(make_config(tmp, media))
    validate(cfg, cfg.stages)
    run_build(cfg, tmp / "out", cfg.stages)
    return tmp / "out"


def test_every_stage_accounts_for_its_rows(built: Path) -> None:
    for st in CHAIN:
        stats = json.loads((built / "stages" / st / "stats.json").read_text())
        assert stats["rows_in"] == stats["kept"] + sum(stats["rejected"].values()), st
    pair = json.loads((built / "stages/pair/stats.json").read_text())
    assert pair["kept"] > 0 and pair["rejected"].get("too_similar", 0) > 0
    kept = [r for r in rows(built / "stages/pair") if r["reject_reason"] is None]
    assert len(kept) <= 16  # max_pairs_per_video
    # pairs stay inside one track of one video, source before target, inside the change-score band
    for r in kept:
        assert r["src_key"].rsplit("_f", 1)[0] == r["tgt_key"].rsplit("_f", 1)[0] == r["video_id"]
        assert r["src_frame"] < r["tgt_frame"] and 23 <= r["change_score"] <= 250
        assert r["semantic_diversity"] >= 0.4
    # the greedy choice spreads over frames: no frame in more than max_uses_per_frame kept pairs
    uses: dict[str, int] = {}
    for r in kept:
        for k in (r["src_key"], r["tgt_key"]):
            uses[k] = uses.get(k, 0) + 1
    assert max(uses.values()) <= 2 and len(uses) >= len(kept)


def test_pair_shards_follow_design_and_read_in_webdataset_and_ray(built: Path, ray_session) -> None:
    import ray
    import webdataset as wds

    tars = sorted(str(p) for p in (built / "shards").glob("*/*.tar"))
    assert tars
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("rgb8"))
    manifest = pq.read_table(built / "manifest.parquet").to_pylist()
    assert sorted(s["__key__"] for s in samples) == sorted(m["key"] for m in manifest)
    for s in samples:
        assert s["src.jpg"].shape == s["tgt.jpg"].shape == (144, 176, 3)
        assert matches_template(s["txt"]), s["txt"]
        meta = s["json"]
        assert meta["subset"] == "real"
        for side in ("src", "tgt"):
            lm = np.asarray(meta[side]["landmarks"])
            assert lm.shape == (68, 2) and (lm[:, 0] < 176).all() and (lm[:, 1] < 144).all()
            assert set(meta[side]["pose"]) == {"yaw", "pitch", "roll"}
            assert meta[side]["expression"] in (
                "neutral",
                "happy",
                "sad",
                "surprised",
                "fearful",
                "disgusted",
                "angry",
            )
        assert set(meta["edit"]) >= {"expression", "intensity", "yaw_deg", "pitch_deg"}
        assert meta["scores"]["change_score"] >= 23 and meta["scores"]["face_identity"] <= 0.6
        assert meta["provenance"]["video"] == "talk.mp4" and len(meta["provenance"]["frames"]) == 2
    ds = ray.data.read_webdataset(tars)
    got = ds.take_all()
    assert sorted(r["__key__"] for r in got) == sorted(m["key"] for m in manifest)
    assert np.asarray(got[0]["src.jpg"]).ndim == 3


def test_dataset_card_and_report(built: Path) -> None:
    card = (built / "README.md").read_text()
    n = len(rows(built / "stages/split", ["key"]))
    assert f"| train | {n} |" in card or "| train |" in card
    for heading in ("## Counts", "## Instructed expressions", "## Head-pose change", "## Thresholds",
                    "## Backends", "## Lineage", "## Known limits"):  # fmt: skip
        assert heading in card
    assert (built / "card/expressions.png").stat().st_size > 1000
    assert (built / "card/pose.png").stat().st_size > 1000
    from hfl.report import write_report

    html = write_report(built).read_text()
    assert "pair/sheet_kept.jpg" in html and "pair/sheet_too_similar.jpg" in html
    assert "pair/hist_change_score.png" in html


def test_rerun_skips_every_stage(built: Path, ray_session) -> None:
    cfg = load_config(built / "config.yaml")
    before = {p.name: p.stat().st_mtime_ns for p in (built / "shards").glob("*/*.tar")}
    assert all(r.skipped for r in run_build(cfg, built, cfg.stages))
    assert {p.name: p.stat().st_mtime_ns for p in (built / "shards").glob("*/*.tar")} == before


def test_cut_between_two_real_men_is_caught_by_identity(tmp_path, two_men, ray_session) -> None:
    """One 'video' that cuts from one man to another at the same spot: the tracker links them, the change
    score is in band, so only identity can reject the cross pairs."""
    a, b = (cv2.resize(im, (232, 328))[96:] for im in two_men)  # crop: centre the faces
    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "cut.mp4", [a] * 15 + [b] * 15)  # 1 s at 30 fps, sampled at 5 fps
    cfg = load_config(
        make_config(
            tmp_path,
            media,
            mine={"fps": 5},
            quality={"min_log_blur": 0.0},
            # the two men's head poses differ by an ambiguous turn: let identity, not the motion prefilter,
            # be the check under test
            pair={"min_semantic_diversity": 0.0, "prefilter_motion": False},
        ),
    )
    cfg.stages = ["mine", "quality", "pair", "identity"]
    run_build(cfg, tmp_path / "out", cfg.stages)
    pairs = [r for r in rows(tmp_path / "out/stages/pair") if r["reject_reason"] is None]
    assert pairs, "the cross pairs should pass the change-score band"
    ident = rows(tmp_path / "out/stages/identity", ["key", "face_distance", "reject_reason"])
    assert ident and all(r["reject_reason"] == "different_identity" for r in ident)
    assert min(r["face_distance"] for r in ident) > 0.6


def test_corrupt_quality_part_becomes_an_error_row(tmp_path, built: Path, ray_session) -> None:
    """A video whose frame rows carry broken landmarks: recorded as `error`, the other video still pairs."""
    out = tmp_path / "out"
    shutil.copytree(built / "stages/quality", out / "stages/quality")
    shutil.copy(built / "config.yaml", out / "config.yaml")
    good = pq.read_table(next((out / "stages/quality").glob("part-*.parquet"))).to_pylist()
    kept = [r for r in good if r["reject_reason"] is None]
    bad = [
        {**r, "video_id": "broken", "key": f"broken_f{i:06d}", "landmarks": [1.0, 2.0]}
        for i, r in enumerate(kept)
    ]
    pq.write_table(pa.Table.from_pylist(bad), out / "stages/quality/part-broken.parquet")
    cfg = load_config(built / "config.yaml")
    results = run_build(cfg, out, ["pair"])
    assert results[0].stats["rejected"].get("error", 0) >= 1
    assert results[0].stats["kept"] > 0
    errors = [
        r
        for r in rows(out / "stages/pair", ["key", "reject_reason", "reject_detail"])
        if r["reject_reason"] == "error"
    ]
    assert any("68 landmarks" in (r["reject_detail"] or "") for r in errors)
