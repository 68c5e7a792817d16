"""Row -> WebDataset sample encoders, one per row type: frames (`jpg`, `json`) and pairs (DESIGN.md)."""

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


def _face(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {
        "landmarks": _landmarks(row[f"{prefix}_landmarks"]),
        "box": [round(float(v), 2) for v in row[f"{prefix}_box"]],
        "width": row[f"{prefix}_width"],
        "height": row[f"{prefix}_height"],
        "pose": {k: _round(row.get(f"{prefix}_{k}")) for k in ("yaw", "pitch", "roll")},
        "expression": row.get(f"{prefix}_expression"),
        "intensity": row.get(f"{prefix}_intensity"),
        "expression_confidence": _round(row.get(f"{prefix}_expression_conf"), 4),
        "frame": row[f"{prefix}_frame"],
        "timestamp": row[f"{prefix}_timestamp"],
    }


def _round(v: Any, nd: int = 2) -> float | None:
    return None if v is None else round(float(v), nd)


def pair_sample(row: dict[str, Any], config_hash: str, backends: dict[str, str]) -> dict[str, Any]:
    """A kept pair in the DESIGN.md layout: src.jpg, tgt.jpg, txt (the instruction), json."""
    unit = row.get("pose_unit_deg") or 30.0
    scores = {
        "log_src": _round(row.get("src_log_blur")),
        "log_tgt": _round(row.get("tgt_log_blur")),
        "quality_src": _round(row.get("src_quality"), 4),
        "quality_tgt": _round(row.get("tgt_quality"), 4),
        "change_score": _round(row.get("change_score")),
        "inner_diff": _round(row.get("inner_diff")),
        "overall_diff": _round(row.get("overall_diff")),
        "semantic_diversity": _round(row.get("semantic_diversity"), 4),
        "clip_identity": _round(row.get("clip_identity"), 4),
        "face_identity": _round(row.get("face_distance"), 4),
    }
    if backends.get("quality") == "dover":
        scores["dover"] = min(scores["quality_src"] or 0.0, scores["quality_tgt"] or 0.0)
    subset = row.get("subset") or "real"
    if subset == "synthetic":
        scores.update(
            pose_error_deg=_round(row.get("pose_error_deg")),
            expression_score=_round(row.get("expression_score"), 4),
            vlm_score=_round(row.get("vlm_score"), 4),
        )
    scores = {k: v for k, v in scores.items() if v is not None or subset == "real"}
    meta = {
        "subset": subset,
        "src": _face(row, "src"),
        "tgt": _face(row, "tgt"),
        "edit": {
            "expression": row.get("edit_expression"),
            "intensity": row.get("edit_intensity"),
            "kind": row.get("edit_kind"),
            "yaw_deg": (row.get("yaw_units") or 0) * unit,
            "pitch_deg": (row.get("pitch_units") or 0) * unit,
            "yaw_delta_measured": _round(row.get("yaw_delta")),
            "pitch_delta_measured": _round(row.get("pitch_delta")),
            "pronoun": row.get("pronoun"),
        },
        "scores": scores,
        "split": row.get("split"),
        "provenance": {
            "video": row["video"],
            "video_id": row["video_id"],
            "track_id": row["track_id"],
            "frames": [row["src_frame"], row["tgt_frame"]],
            "frame_keys": [row["src_key"], row["tgt_key"]],
            "group_id": row.get("group_id"),
            "generator": row.get("generator"),
            "validator": row.get("validator"),
            "edit_seed": row.get("edit_seed"),
            "backends": backends,
            "config_hash": config_hash,
        },
    }
    return {
        "__key__": row["key"],
        "src.jpg": row["src_image"],
        "tgt.jpg": row["tgt_image"],
        "txt": (row.get("instruction") or "").encode(),
        "json": json.dumps(meta).encode(),
    }


def encode_sample(row: dict[str, Any], config_hash: str, backends: dict[str, str]) -> dict[str, Any]:
    """Pick the encoder by the row's columns."""
    if "src_image" in row:
        return pair_sample(row, config_hash, backends)
    if "image" in row:
        return frame_sample(row, config_hash, backends)
    raise ValueError(f"no sample encoder for a row with columns {sorted(row)}")


def manifest_fields(row: dict[str, Any]) -> dict[str, Any]:
    """Scalar, non-binary fields of a row (what the manifest keeps)."""
    return {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
