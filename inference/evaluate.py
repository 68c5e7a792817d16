"""``hfl eval``: rectified IP, Landmark Error, SC/VQ/NA and predictor accuracy over a set of edits.

Input: ``edits.jsonl`` as written by ``hfl edit`` (one object per edit: ``source`` and ``output`` image
paths, ``instruction``, ``source_landmarks`` and ``target_landmarks`` on the 512 canvas). Output:
``DIR/eval.json`` (per-edit rows and means) and ``DIR/eval.md`` (a table). Metrics: ``inference.metrics``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hfl.backends.face import FaceBackendConfig, load_embedder
from hfl.landmarks import head_pose
from inference import metrics
from inference.face import FaceFinder, read_rgb, to_canvas


@dataclass
class EvalConfig:
    """identity: dlib | insightface (``insightface_dir`` = buffalo_l folder); amplitude: landmarks | vlm."""

    identity: str = "dlib"
    insightface_dir: str = ""
    amplitude: str = "landmarks"
    alpha: float = metrics.ALPHA
    eps: float = metrics.EPS


class IdentityScorer:
    """``s_arc`` of two RGB images: the largest face in each (on the 512 canvas) through the embedder."""

    def __init__(self, cfg: EvalConfig, faces: FaceFinder | None = None) -> None:
        fcfg = FaceBackendConfig(embedder=cfg.identity, insightface_dir=cfg.insightface_dir)
        self.kind = cfg.identity
        self.faces = faces or FaceFinder()
        self.embedder = load_embedder(fcfg)

    def vector(self, image: np.ndarray) -> np.ndarray | None:
        canvas = to_canvas(image)
        found = self.faces.find(canvas)
        if found is None:
            return None
        box, lm = found
        if self.kind == "dlib" and hasattr(self.embedder, "descriptor"):
            return np.asarray(self.embedder.descriptor(canvas, box, lm))
        return np.asarray(self.embedder.embed(canvas, box, lm))

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """None when a face is missing in the source; 0 when it is missing in the edit."""
        va = self.vector(a)
        if va is None:
            return None
        vb = self.vector(b)
        if vb is None:
            return 0.0
        return metrics.dlib_similarity(va, vb) if self.kind == "dlib" else metrics.arcface_similarity(va, vb)


def _mean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def evaluate_edits(
    records: list[dict[str, Any]],
    cfg: EvalConfig | None = None,
    judge: Any = None,
    faces: FaceFinder | None = None,
) -> dict[str, Any]:
    """Per-edit rows and their means (see the module docstring)."""
    cfg = cfg or EvalConfig()
    faces = faces or FaceFinder()
    ident = IdentityScorer(cfg, faces)
    rows = []
    srcs, edits, instrs = [], [], []
    for r in records:
        src, out = read_rgb(r["source"]), read_rgb(r["output"])
        if out.shape != src.shape:
            import cv2

            out = cv2.resize(out, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_AREA)
        srcs.append(src)
        edits.append(out)
        instrs.append(r["instruction"])
        tgt = np.asarray(r["target_landmarks"], np.float64) if r.get("target_landmarks") else None
        src_lm = np.asarray(r["source_landmarks"], np.float64) if r.get("source_landmarks") else None
        row: dict[str, Any] = {"id": r.get("id"), "instruction": r["instruction"]}
        row["s_arc"] = ident.similarity(src, out)
        row["phi_real"] = metrics.ssim_change(src, out)
        if cfg.amplitude == "landmarks" and tgt is not None and src_lm is not None:
            row["phi_ins"] = metrics.amplitude_from_landmarks(src_lm, tgt)
        found = faces.find(to_canvas(out))
        row["face_in_edit"] = found is not None
        row["landmark_error"] = metrics.landmark_error(tgt, found[1]) if (found and tgt is not None) else None
        rows.append(row)
    if cfg.amplitude == "vlm":
        if judge is None:
            raise ValueError("amplitude='vlm' needs a VLM judge (--judge-vlm PATH)")
        for row, a in zip(rows, judge.amplitude(srcs, instrs), strict=True):
            row["phi_ins"] = a
    if judge is not None:
        for row, s in zip(rows, judge.scores(srcs, edits, instrs), strict=True):
            row.update(s or {"sc": None, "vq": None, "na": None})
    for row in rows:
        ok = row.get("s_arc") is not None and row.get("phi_ins") is not None
        row["s_rip"] = (
            metrics.rectified_ip(row["s_arc"], row["phi_ins"], row["phi_real"], cfg.alpha, cfg.eps)
            if ok
            else None
        )
    keys = ["s_arc", "phi_ins", "phi_real", "s_rip", "landmark_error", "sc", "vq", "na"]
    summary = {k: _mean([r.get(k) for r in rows]) for k in keys}
    summary["n"] = len(rows)
    summary["faces_in_edits"] = int(sum(r["face_in_edit"] for r in rows))
    return {"config": cfg.__dict__, "summary": summary, "rows": rows}


def predictor_accuracy(requests: Any, predictor: Any, limit: int | None = None) -> dict[str, Any]:
    """Predicted vs ground-truth target landmarks over pair samples (``batch.iter_shards``): NME (IOD),
    mean per-point L1 (canvas px), and the error of the re-estimated yaw/pitch change in degrees."""
    rows = []
    for i, req in enumerate(requests):
        if limit is not None and i >= limit:
            break
        src, gt = req.extra["source_landmarks"], req.extra["gt_target_landmarks"]
        pred = predictor.predict(to_canvas(req.image), src, req.instruction)
        ys, ps, _ = head_pose(src, 512, 512)
        yg, pg, _ = head_pose(gt, 512, 512)
        yp, pp, _ = head_pose(pred, 512, 512)
        rows.append(
            {
                "id": req.id,
                "nme": metrics.nme(pred, gt),
                "l1": metrics.landmark_error(pred, gt),
                "yaw_err": abs((yp - ys) - (yg - ys)),
                "pitch_err": abs((pp - ps) - (pg - ps)),
                "nme_identity": metrics.nme(src, gt),  # baseline: predict "no change"
                # the same after removing the frame-to-frame translation (centroids), which no predictor sees
                "nme_centred": metrics.nme(pred - pred.mean(0) + gt.mean(0), gt),
                "nme_centred_identity": metrics.nme(src - src.mean(0) + gt.mean(0), gt),
            }
        )
    keys = ("nme", "l1", "yaw_err", "pitch_err", "nme_identity", "nme_centred", "nme_centred_identity")
    summary = {k: _mean([r[k] for r in rows]) for k in keys}
    summary["n"] = len(rows)
    summary["predictor"] = getattr(predictor, "name", type(predictor).__name__)
    return {"summary": summary, "rows": rows}


def table(result: dict[str, Any], title: str) -> str:
    """Markdown table of a summary."""
    s = result["summary"]
    lines = [f"### {title}", "", "| metric | value |", "|---|---|"]
    for k, v in s.items():
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, results: dict[str, dict[str, Any]]) -> Path:
    """``eval.json`` and ``eval.md`` in ``out_dir``; returns the markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=1, default=float))
    md = out / "eval.md"
    md.write_text("\n".join(table(v, k) for k, v in results.items()))
    return md
