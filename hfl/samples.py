"""Row -> WebDataset sample encoders, one per row type (frame rows now; pair rows later)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

SCORE_COLUMNS = ("det_score", "centroid_x", "centroid_y", "face_area", "log_blur", "quality")


def _landmarks(flat: list[float] | None) -> list[list[float]] | None:
    if flat is None:
        return None
    return np.round(np.asarray(flat, np.float32).reshape(-1, 2), 2).tolist()


def frame_sample(row: dict[str, Any], config_hash: str, backends: dict[str, str]) -> dict[str, Any]:
    """A kept frame: `jpg` (the frame as mined) and `json` (face geometry, scores, provenance)."""
    meta = {
        "subset": "real",
        "face": {
            "box": [round(float(v), 2) for v in row["box"]],
            "landmarks": _landmarks(row["landmarks"]),
            "track_id": row["track_id"],
            "width": row["width"],
            "height": row["height"],
        },
        "scores": {c: row[c] for c in SCORE_COLUMNS if row.get(c) is not None},
        "provenance": {
            "video": row["video"],
            "frames": [row["frame_index"]],
            "timestamp": row["timestamp"],
            "decoder": row["decoder"],
            "backends": backends,
            "config_hash": config_hash,
        },
    }
    return {"__key__": row["key"], "jpg": row["image"], "json": json.dumps(meta).encode()}


def encode_sample(row: dict[str, Any], config_hash: str, backends: dict[str, str]) -> dict[str, Any]:
    """Pick the encoder by the row's columns."""
    if "image" in row:
        return frame_sample(row, config_hash, backends)
    raise ValueError(f"no sample encoder for a row with columns {sorted(row)}")


def manifest_fields(row: dict[str, Any]) -> dict[str, Any]:
    """Scalar, non-binary fields of a row (what the manifest keeps)."""
    return {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
