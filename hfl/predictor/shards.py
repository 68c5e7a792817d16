"""HFL pair shards (``DIR/*.tar``) read as edit requests: source image, instruction and landmarks mapped to
the 512 canvas (used by ``hfl edit --batch``, ``hfl eval`` and the predictor trainer)."""

from __future__ import annotations

import glob
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np


@dataclass
class EditRequest:
    """One edit: an RGB source, the instruction, optional target landmarks (512 canvas), seed, extras."""

    id: str
    image: np.ndarray
    instruction: str
    landmarks: np.ndarray | None = None  # target, 512 canvas
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def iter_shards(folder: str | Path, use_target_landmarks: bool = False) -> Iterator[EditRequest]:
    """Pair samples of ``folder/*.tar`` as edit requests (target image kept in ``extra['target']``)."""
    for path in sorted(glob.glob(str(Path(folder) / "*.tar"))):
        with tarfile.open(path) as tar:
            groups: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                if m.isfile():
                    key, _, ext = m.name.partition(".")
                    groups.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, s in groups.items():
            if not {"src.jpg", "json"} <= set(s):
                continue
            src = cv2.cvtColor(
                cv2.imdecode(np.frombuffer(s["src.jpg"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            )
            meta = json.loads(s["json"])
            h, w = src.shape[:2]
            scale = np.array([512.0 / w, 512.0 / h])
            tgt = np.asarray(meta["tgt"]["landmarks"], np.float64) * scale
            extra: dict[str, Any] = {
                "source_landmarks": np.asarray(meta["src"]["landmarks"], np.float64) * scale,
                "gt_target_landmarks": tgt,
                "edit": meta.get("edit", {}),
            }
            if "tgt.jpg" in s:
                img = cv2.imdecode(np.frombuffer(s["tgt.jpg"], np.uint8), cv2.IMREAD_COLOR)
                extra["target"] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            txt = s.get("txt", b"").decode("utf-8")
            yield EditRequest(key, src, txt, tgt if use_target_landmarks else None, 0, extra)
