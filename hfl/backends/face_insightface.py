"""Paper face backends: insightface buffalo_l ONNX models run with onnxruntime from a local folder.

Pre/post-processing follows insightface ``model_zoo`` (scrfd.py, landmark.py, arcface_onnx.py,
utils/face_align.py) but is re-implemented with numpy + OpenCV so the ``insightface`` package (which pins
``opencv-python`` and would clash with ``opencv-python-headless``) is not needed. Images are RGB; insightface
feeds BGR with ``swapRB=True``, i.e. RGB, so no channel swap happens here.

- ScrfdDetector: det_10g.onnx (SCRFD-10G, strides 8/16/32, 2 anchors, 5 keypoints), letterboxed square input.
- Landmark3d68: 1k3d68.onnx, 192x192 crop of 1.5x the box, output 3309 = 1103x3, the last 68 rows are iBUG-68.
- ArcFaceEmbedder: w600k_r50.onnx, 112x112 crop aligned to the arcface 5-point template, 512-d.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import cv2
import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled, FaceBox
from hfl.backends.face import INSIGHTFACE_FILES

# insightface utils/face_align.py: 5-point template of a 112x112 ArcFace crop
# (image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner).
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def five_points_from_68(lmk68: np.ndarray) -> np.ndarray:
    """iBUG-68 -> arcface 5 points: eye centres (36-41, 42-47), nose tip (30), mouth corners (48, 54)."""
    p = np.asarray(lmk68, dtype=np.float32)
    if p.shape == (5, 2):
        return p
    if p.shape[0] != 68 or p.shape[1] < 2:
        raise ValueError(f"expected (68, 2) or (5, 2) landmarks, got shape {p.shape}")
    p = p[:, :2]
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (Umeyama) mapping src points onto dst points."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, d = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    a = dst_d.T @ src_d / n
    sign = np.ones(d)
    if np.linalg.det(a) < 0:
        sign[-1] = -1
    u, s, vt = np.linalg.svd(a)
    rot = u @ np.diag(sign) @ vt
    var = src_d.var(0).sum()
    scale = float(s @ sign) / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    wanted = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        wanted.insert(0, "CUDAExecutionProvider")
    return [p for p in wanted if p in avail] or ["CPUExecutionProvider"]


def _require_file(folder: str, role: str) -> str:
    fname = INSIGHTFACE_FILES[role]
    if not folder:
        raise BackendUnavailable(f"insightface {role}: backends.face.insightface_dir not set (needs {fname})")
    if not os.path.isdir(folder):
        raise BackendUnavailable(f"insightface {role}: folder {folder} does not exist (needs {fname})")
    path = os.path.join(folder, fname)
    if not os.path.isfile(path):
        raise BackendUnavailable(f"insightface {role}: missing {fname} in {folder}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(f"insightface {role}: package 'onnxruntime' is not installed") from e
    return path


def _input_norm(path: str, plain: tuple[float, float], fallback: tuple[float, float]) -> tuple[float, float]:
    """insightface's rule: graphs starting with Sub+Mul (or bn_data) normalise inside -> (0, 1), else plain.

    Without the ``onnx`` package the graph cannot be inspected and ``fallback`` (the buffalo_l value) is used.
    """
    try:
        import onnx
    except ImportError:
        return fallback
    try:
        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # noqa: BLE001 - fall back to the buffalo_l value
        return fallback
    find_sub = find_mul = False
    for nid, node in enumerate(graph.node[:8]):
        if node.name.startswith(("Sub", "_minus")):
            find_sub = True
        if node.name.startswith(("Mul", "_mul")):
            find_mul = True
        if nid < 3 and node.name == "bn_data":
            find_sub = find_mul = True
    return (0.0, 1.0) if find_sub and find_mul else plain


def _blob(img: np.ndarray, mean: float, std: float) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, 3, H, W), (x - mean) / std."""
    x = (img.astype(np.float32) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.uint8)


class _OnnxModel(DropsModelWhenPickled):
    """Lazily created onnxruntime session (once per instance; dropped when pickled)."""

    _model_attr = "_session"
    role = ""
    plain_norm = (127.5, 128.0)  # (mean, std) when the graph does not normalise its input itself
    fallback_norm = (127.5, 128.0)  # buffalo_l's value, used when `onnx` is missing to inspect the graph
    check_norm = True  # SCRFD skips insightface's Sub/Mul inspection and always uses plain_norm

    def __init__(self, folder: str, device: str = "cpu") -> None:
        self.model_path = _require_file(folder, self.role)
        self.device = device
        self._lock = threading.Lock()
        self._session: Any = None
        self.input_mean, self.input_std = self.plain_norm

    def _session_get(self) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import onnxruntime as ort

                    try:
                        sess = ort.InferenceSession(self.model_path, providers=_providers(self.device))
                    except Exception as e:  # noqa: BLE001
                        msg = f"insightface {self.role}: cannot load {self.model_path}: {e}"
                        raise BackendUnavailable(msg) from e
                    if self.check_norm:
                        norm = _input_norm(self.model_path, self.plain_norm, self.fallback_norm)
                        self.input_mean, self.input_std = norm
                    self.input_name = sess.get_inputs()[0].name
                    self.input_shape = list(sess.get_inputs()[0].shape)
                    self.output_names = [o.name for o in sess.get_outputs()]
                    self.output_shapes = [list(o.shape) for o in sess.get_outputs()]
                    self._on_load(sess)
                    self._session = sess
        return self._session

    def load(self) -> None:
        """Load the ONNX session now (workers call this in setup so the first unit does not pay for it)."""
        self._session_get()

    def _on_load(self, sess: Any) -> None:
        pass

    def _static_hw(self) -> tuple[int, int] | None:
        hw = self.input_shape[2:4]
        if len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw):
            return int(hw[0]), int(hw[1])
        return None


def _nms(dets: np.ndarray, thresh: float) -> list[int]:
    """insightface SCRFD.nms (greedy, +1 pixel areas); dets (N, 5) sorted by score desc."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


class ScrfdDetector(_OnnxModel):
    """SCRFD (det_10g.onnx) face detector: letterbox to a square input, decode, NMS; largest first."""

    name = "insightface"
    role = "detector"
    check_norm = False

    def __init__(
        self,
        folder: str,
        det_size: int = 640,
        det_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        device: str = "cpu",
    ) -> None:
        super().__init__(folder, device)
        self.det_size = max(32, (int(det_size) // 32) * 32)
        self.det_threshold = float(det_threshold)
        self.nms_threshold = float(nms_threshold)
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _on_load(self, sess: Any) -> None:
        n = len(self.output_names)
        if n not in (6, 9, 10, 15):
            raise BackendUnavailable(
                f"insightface detector: {self.model_path} has {n} outputs, expected SCRFD's 6/9/10/15"
            )
        self.fmc = 3 if n in (6, 9) else 5
        self.strides = [8, 16, 32] if self.fmc == 3 else [8, 16, 32, 64, 128]
        self.num_anchors = 2 if self.fmc == 3 else 1
        self.use_kps = n in (9, 15)
        self.batched = len(self.output_shapes[0]) == 3

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centers:
            c = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32)
            c = (c * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                c = np.stack([c] * self.num_anchors, axis=1).reshape(-1, 2)
            self._centers[key] = c
        return self._centers[key]

    def detect_with_keypoints(self, image: np.ndarray) -> tuple[list[FaceBox], np.ndarray]:
        """Faces (largest first) and their SCRFD 5-point keypoints (N, 5, 2) in image pixels."""
        sess = self._session_get()
        img = _rgb(image)
        ih, iw = img.shape[:2]
        in_h, in_w = self._static_hw() or (self.det_size, self.det_size)
        if ih / iw > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h * iw / ih))
        else:
            new_w, new_h = in_w, max(1, int(in_w * ih / iw))
        det_scale = new_h / ih
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h))
        outs = sess.run(self.output_names, {self.input_name: _blob(canvas, self.input_mean, self.input_std)})
        all_scores, all_boxes, all_kps = [], [], []
        for i, stride in enumerate(self.strides):
            pick = (lambda a: a[0]) if self.batched else (lambda a: a)  # noqa: E731
            scores = pick(outs[i]).reshape(-1)
            dist = pick(outs[i + self.fmc]).reshape(-1, 4) * stride
            centers = self._anchor_centers(in_h // stride, in_w // stride, stride)
            pos = np.where(scores >= self.det_threshold)[0]
            boxes = np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1)
            all_scores.append(scores[pos])
            all_boxes.append(boxes[pos])
            if self.use_kps:
                kd = pick(outs[i + 2 * self.fmc]).reshape(-1, 5, 2) * stride
                all_kps.append((centers[:, None, :] + kd)[pos])
        scores = np.concatenate(all_scores)
        if scores.size == 0:
            return [], np.zeros((0, 5, 2), np.float32)
        dets = np.hstack([np.concatenate(all_boxes) / det_scale, scores[:, None]]).astype(np.float32)
        kps = np.concatenate(all_kps) / det_scale if self.use_kps else np.zeros((len(dets), 5, 2))
        order = np.argsort(-dets[:, 4], kind="stable")
        dets, kps = dets[order], kps[order]
        keep = _nms(dets, self.nms_threshold)
        dets, kps = dets[keep], kps[keep]
        faces = []
        for x0, y0, x1, y1, s in dets:
            faces.append(
                FaceBox(
                    float(np.clip(x0, 0, iw)),
                    float(np.clip(y0, 0, ih)),
                    float(np.clip(x1, 0, iw)),
                    float(np.clip(y1, 0, ih)),
                    float(s),
                )
            )
        idx = sorted(range(len(faces)), key=lambda j: (faces[j].area, faces[j].score), reverse=True)
        return [faces[j] for j in idx], kps[idx].astype(np.float32)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces in the image, largest first."""
        return self.detect_with_keypoints(image)[0]


class Landmark3d68(_OnnxModel):
    """insightface 1k3d68.onnx: 68 3D landmarks, returned as their (x, y) image projection."""

    name = "insightface"
    role = "landmarker"
    fallback_norm = (0.0, 1.0)  # buffalo_l 1k3d68 normalises inside its graph (insightface logs 0.0 1.0)

    def _on_load(self, sess: Any) -> None:
        hw = self._static_hw()
        self.input_size = hw[1] if hw else 192

    def landmarks3d(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """(68, 3) float32: x, y in image pixels, z in the same pixel scale (insightface convention)."""
        sess = self._session_get()
        size = self.input_size
        w, h = box.x1 - box.x0, box.y1 - box.y0
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        s = size / (max(w, h) * 1.5)
        m = np.array([[s, 0.0, size / 2 - cx * s], [0.0, s, size / 2 - cy * s]])
        crop = cv2.warpAffine(_rgb(image), m, (size, size), borderValue=0.0)
        blob = _blob(crop, self.input_mean, self.input_std)
        pred = sess.run(self.output_names, {self.input_name: blob})[0][0]
        pred = pred.reshape(-1, 3) if pred.size >= 3000 else pred.reshape(-1, 2)
        pred = pred[-68:].astype(np.float64)
        pred[:, :2] = (pred[:, :2] + 1) * (size // 2)
        if pred.shape[1] == 3:
            pred[:, 2] *= size // 2
        im = cv2.invertAffineTransform(m)
        out = np.zeros((68, 3), dtype=np.float32)
        out[:, :2] = pred[:, :2] @ im[:, :2].T + im[:, 2]
        if pred.shape[1] == 3:
            out[:, 2] = pred[:, 2] / s
        return out

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """iBUG-68 landmarks (68, 2) float32 pixel (x, y)."""
        return np.ascontiguousarray(self.landmarks3d(image, box)[:, :2])


class ArcFaceEmbedder(_OnnxModel):
    """ArcFace (w600k_r50.onnx) on a 112x112 crop aligned by the 5 points derived from the 68 landmarks."""

    name = "insightface"
    role = "embedder"
    plain_norm = (127.5, 127.5)
    fallback_norm = (127.5, 127.5)  # insightface logs 127.5 127.5 for w600k_r50
    dim = 512

    def _on_load(self, sess: Any) -> None:
        hw = self._static_hw()
        self.input_size = hw[1] if hw else 112
        last = self.output_shapes[0][-1]
        if isinstance(last, int) and last > 0:
            self.dim = last

    def aligned_crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """insightface norm_crop: similarity-align the 5 points to the arcface template."""
        self._session_get()
        size = self.input_size
        ratio = size / 112.0 if size % 112 == 0 else size / 128.0
        dst = ARCFACE_DST * ratio
        if size % 112 != 0:
            dst[:, 0] += 8.0 * ratio
        m = similarity_transform(five_points_from_68(landmarks), dst)
        return cv2.warpAffine(_rgb(image), m, (size, size), borderValue=0.0)

    def embed(self, image: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> np.ndarray:
        """L2-normalised ArcFace embedding (dim,); compare with cosine similarity."""
        sess = self._session_get()
        crop = self.aligned_crop(image, landmarks)
        feat = sess.run(self.output_names, {self.input_name: _blob(crop, self.input_mean, self.input_std)})[0]
        feat = np.asarray(feat, dtype=np.float32).reshape(-1)
        return (feat / max(float(np.linalg.norm(feat)), 1e-12)).astype(np.float32)
