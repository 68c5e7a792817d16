"""End to end on embedded Ray: the real chain and the synthetic subset merged into one dataset (carphone),
and the synthetic subset alone from an image folder (two real men)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
import yaml

from hfl.engine.runner import run_build
from hfl.instructions import matches_template
from hfl.pipeline import load_config, validate

MERGED = ["mine", "quality", "pair", "identity", "caption", "synth", "validate", "split", "shard"]


def rows(stage_dir: Path, columns: list[str] | None = None) -> list[dict]:
    return [
        r
        for p in sorted(stage_dir.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=columns).to_pylist()
    ]


def build(tmp: Path, data: dict) -> Path:
    p = tmp / "pipe.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p)
    validate(cfg, cfg.stages)
    run_build(cfg, tmp / "out", cfg.stages)
    return tmp / "out"


@pytest.fixture(scope="module")
def merged(tmp_path_factory, carphone, ray_session) -> Path:
    tmp = tmp_path_factory.mktemp("merged")
    media = tmp / "media"
    media.mkdir()
    shutil.copy(carphone, media / "talk.mp4")
    data = {
        "name": "merged-test",
        "stages": MERGED,
        "mine": {"input": str(media), "fps": 10},
        "synth": {"edits_per_video": 30, "edits_per_frame": 2},
        "split": {"test_fraction": 0.2},
        "shard": {"samples_per_shard": 8},
    }
    return build(tmp, data)


def test_synth_and_validate_account_for_every_edit(merged: Path) -> None:
    synth = json.loads((merged / "stages/synth/stats.json").read_text())
    val = json.loads((merged / "stages/validate/stats.json").read_text())
    assert synth["rows_in"] == synth["kept"] + sum(synth["rejected"].values()) > 0
    assert val["rows_in"] == synth["kept"] and val["kept"] > 0
    assert set(val["rejected"]) <= {"pose_mismatch", "expression_mismatch", "error"}
    vrows = rows(merged / "stages/validate")
    for r in vrows:
        assert r["subset"] == "synthetic" and r["generator"] == "geometric"
        assert matches_template(r["instruction"])
        # single-turn: an expression edit instructs no turn, a pose edit no expression
        assert (r["edit_kind"] == "pose") == (r["edit_expression"] is None)
        # every row, rejected or kept, keeps its measured angles and Eq. 1 error
        assert r["yaw_delta"] is not None and r["pose_error_deg"] is not None
        if r["reject_reason"] is None:
            assert r["pose_error_deg"] <= 10
        if r["reject_reason"] == "pose_mismatch":
            assert r["pose_error_deg"] > 10 and "measured yaw" in r["reject_detail"]


def test_merged_split_shards_and_card(merged: Path) -> None:
    split = rows(merged / "stages/split", ["key", "subset", "video_id", "group_id", "split", "stratum"])
    subsets = {r["subset"] for r in split}
    assert subsets == {"real", "synthetic"}
    # a synthetic edit joins its source video's group: one person, one split
    groups: dict[str, set[str]] = {}
    for r in split:
        groups.setdefault(r["group_id"], set()).add(r["split"])
        assert r["stratum"].startswith(r["subset"] + "|")
    assert all(len(s) == 1 for s in groups.values())
    assert len({r["key"] for r in split}) == len(split)
    stats = json.loads((merged / "stages/split/stats.json").read_text())
    assert sum(stats["subsets"].values()) == len(split)
    seen = {"real": 0, "synthetic": 0}
    for tar in sorted((merged / "shards").glob("*/*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    seen[meta["subset"]] += 1
                    if meta["subset"] == "synthetic":
                        assert meta["provenance"]["generator"] == "geometric"
                        assert meta["scores"]["pose_error_deg"] <= 10
                        assert len(meta["tgt"]["landmarks"]) == 68
    assert seen["real"] > 0 and seen["synthetic"] > 0
    assert seen["real"] + seen["synthetic"] == len(split)
    card = (merged / "README.md").read_text()
    assert "| synthetic |" in card and "| real |" in card and "geometric" in card
    assert "pose error d_theta (Eq. 1)" in card
    from hfl.report import write_report

    html = write_report(merged).read_text()
    assert "validate" in html and "synth" in html


def test_synth_from_image_folder(tmp_path, two_men, ray_session) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, img in enumerate(two_men):
        cv2.imwrite(str(folder / f"man{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    data = {
        "name": "folder-test",
        "stages": ["synth", "validate", "shard"],
        "synth": {"input": str(folder), "edits_per_frame": 4, "expression_fraction": 0.0},
        "shard": {"default_split": "train"},
    }
    out = build(tmp_path, data)
    srows = rows(out / "stages/synth")
    assert len(srows) == 8 and {r["video"] for r in srows} == {"man0.png", "man1.png"}
    assert all(r["edit_kind"] == "pose" for r in srows)
    vrows = rows(out / "stages/validate", ["key", "pose_error_deg", "reject_reason"])
    assert len(vrows) == sum(r["reject_reason"] is None for r in srows)
    assert all(r["pose_error_deg"] is not None for r in vrows)
