"""Fit the geometric predictor's expression displacement table from HFL pair shards.

For each pair: the source is turned rigidly by the *measured* pose change (tgt.pose - src.pose, yaw and
pitch), the target is similarity-aligned (Procrustes: translation, scale, in-plane rotation) onto that
rigid prediction, and the residual in the rigid face frame is the expression displacement of the pair's
edit cell (edit.expression / edit.intensity). Cells are averaged and shrunk towards the hand-set prior:
``D = (sum of residuals + k * prior) / (n + k)``.

    python -m inference.fit_displacements demo-out/shards/train \
        --out hfl/predictor/expression_displacements.json
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from hfl.face3d import face_frame, fit_face, to_frame
from hfl.predictor.geometric import TABLE_PATH, cell_key, prior_displacement, turn_from_pose


def procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` similarity-aligned onto ``dst`` (both (N, 2))."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, d]) @ vt
    scale = (s * [1, d]).sum() / (a**2).sum()
    return a @ r * scale + md


def pair_residual(meta: dict, width: int, height: int) -> np.ndarray:
    """Face-frame expression residual (68, 2) of one pair sample's json."""
    src = np.asarray(meta["src"]["landmarks"], np.float64)
    tgt = np.asarray(meta["tgt"]["landmarks"], np.float64)
    ps, pt = meta["src"].get("pose") or {}, meta["tgt"].get("pose") or {}
    dyaw = float(pt.get("yaw", 0)) - float(ps.get("yaw", 0))
    dpitch = float(pt.get("pitch", 0)) - float(ps.get("pitch", 0))
    rigid = turn_from_pose(fit_face(src, width, height), src, dyaw, dpitch)
    frame = face_frame(rigid)
    return to_frame(procrustes(tgt, rigid), frame) - to_frame(rigid, frame)


def iter_pairs(shard_dir: str):
    """(meta, width, height) for every pair sample in ``shard_dir/*.tar``."""
    import cv2

    for path in sorted(glob.glob(str(Path(shard_dir) / "*.tar"))):
        with tarfile.open(path) as tar:
            files: dict[str, dict[str, bytes]] = defaultdict(dict)
            for m in tar.getmembers():
                if m.isfile():
                    key, _, ext = m.name.partition(".")
                    files[key][ext] = tar.extractfile(m).read()
            for sample in files.values():
                if "json" not in sample or "src.jpg" not in sample:
                    continue
                img = cv2.imdecode(np.frombuffer(io.BytesIO(sample["src.jpg"]).read(), np.uint8), 0)
                yield json.loads(sample["json"]), img.shape[1], img.shape[0]


def fit_table(shard_dirs: list[str], k: float = 3.0) -> dict:
    """The table dict (cells with displacement, n pairs, source) from pair shards."""
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((68, 2)))
    counts: dict[str, int] = defaultdict(int)
    for d in shard_dirs:
        for meta, w, h in iter_pairs(d):
            edit = meta.get("edit") or {}
            if not edit.get("expression"):
                continue
            key = cell_key(edit["expression"], edit.get("intensity"))
            try:
                sums[key] += pair_residual(meta, w, h)
            except (ValueError, KeyError):
                continue
            counts[key] += 1
    cells = {}
    for key, n in sorted(counts.items()):
        expr, inten = key.split("/")
        prior = prior_displacement(expr, None if inten == "-" else inten)
        cells[key] = {"n": n, "displacement": np.round((sums[key] + k * prior) / (n + k), 5).tolist()}
    return {
        "source": [str(d) for d in shard_dirs],
        "pairs": int(sum(counts.values())),
        "shrinkage_k": k,
        "note": "cells absent here use the hand-set prior of hfl.predictor.geometric.PRIOR",
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", nargs="+", help="folders with pair shards (*.tar)")
    ap.add_argument("--out", default=str(TABLE_PATH))
    ap.add_argument("--k", type=float, default=3.0, help="prior weight in pseudo-pairs")
    a = ap.parse_args(argv)
    table = fit_table(a.shards, a.k)
    Path(a.out).write_text(json.dumps(table))
    print(json.dumps({"pairs": table["pairs"], "cells": {k: v["n"] for k, v in table["cells"].items()}}))


if __name__ == "__main__":
    main()
