"""Batch inputs for ``hfl edit --batch`` and ``hfl eval``.

Edit requests come from a JSONL file, one object per line::

    {"image": "faces/a.jpg", "instruction": "Turn her head 30° left.",
     "landmarks": "a_target.json" | [[x, y] x 68], "seed": 0, "id": "a"}

(``landmarks`` and ``seed``, ``id`` optional; relative paths are relative to the JSONL's folder), from a
build's ``manifest.parquet`` (optionally one split), or from a folder of HFL pair shards
(``DIR/shards/test``): the source image, the instruction and, with
``use_target_landmarks``, the pair's target landmarks mapped to the 512 canvas (the ground-truth target).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hfl.predictor.canvas import read_rgb
from hfl.predictor.landmark_json import parse_landmarks
from hfl.predictor.shards import EditRequest, iter_shards

__all__ = ["EditRequest", "iter_jsonl", "iter_requests", "iter_shards", "read_landmarks"]


def read_landmarks(value: Any, base: Path | None = None) -> np.ndarray:
    """Target landmarks from a list, a JSON text, or a JSON file (grouped, {"landmarks": ...} or a list)."""
    if isinstance(value, list | dict):
        pts = parse_landmarks(json.dumps(value))
    else:
        p = Path(value)
        if base is not None and not p.is_absolute() and not p.exists():
            p = base / p
        text = p.read_text() if p.exists() else str(value)
        pts = parse_landmarks(text)
    if pts is None:
        raise ValueError(f"no 68 landmarks in {str(value)[:80]!r}")
    return pts


def iter_jsonl(path: str | Path) -> Iterator[EditRequest]:
    base = Path(path).parent
    for n, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        img = Path(row["image"])
        img = img if img.is_absolute() or img.exists() else base / img
        lm = read_landmarks(row["landmarks"], base) if row.get("landmarks") is not None else None
        rid, seed = str(row.get("id", f"{n:05d}")), int(row.get("seed", 0))
        yield EditRequest(rid, read_rgb(str(img)), row["instruction"], lm, seed, {"image_path": str(img)})


def iter_manifest(
    path: str | Path, use_target_landmarks: bool = False, split: str | None = None
) -> Iterator[EditRequest]:
    """The pair samples a build's ``manifest.parquet`` lists (optionally one split), read from
    ``<build>/shards/<split>/<shard>``."""
    import pyarrow.parquet as pq

    rows = pq.read_table(str(path), columns=["key", "split", "shard"]).to_pylist()
    if split:
        rows = [r for r in rows if r["split"] == split]
    keys = {r["key"] for r in rows}
    for sp in sorted({r["split"] for r in rows}):
        for req in iter_shards(Path(path).parent / "shards" / sp, use_target_landmarks):
            if req.id in keys:
                yield req


def iter_requests(
    source: str | Path, use_target_landmarks: bool = False, split: str | None = None
) -> Iterator[EditRequest]:
    """JSONL file, a build's manifest.parquet, or a pair-shard folder (see the module docstring)."""
    p = Path(source)
    if p.is_dir():
        return iter_shards(p, use_target_landmarks)
    if p.suffix == ".parquet":
        return iter_manifest(p, use_target_landmarks, split)
    return iter_jsonl(p)
