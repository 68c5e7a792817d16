"""Image measurements used by the filters: LoG sharpness, landmark geometry, JPEG coding."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """Any decoded frame (gray, RGB, RGBA) as contiguous RGB uint8."""
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGBA2RGB)
    elif frame.shape[2] == 1:
        frame = cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(frame, dtype=np.uint8)


def landmark_centroid(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Mean of the 68 points, as fractions of the image width and height."""
    c = landmarks.reshape(-1, 2).mean(axis=0)
    return float(c[0] / width), float(c[1] / height)


def face_crop(rgb: np.ndarray, landmarks: np.ndarray, scale: float = 1.3) -> np.ndarray:
    """Square crop `scale` x the landmarks' bounding-box side, centred on it, clipped to the frame."""
    pts = landmarks.reshape(-1, 2)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    side = scale * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = rgb.shape[:2]
    a0, b0 = int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2)))
    a1, b1 = int(min(w, round(cx + side / 2))), int(min(h, round(cy + side / 2)))
    return np.ascontiguousarray(rgb[b0:b1, a0:a1])


CENTER_RULES = ("area", "axis")


def central_half_width(fraction: float, rule: str = "area") -> float:
    """Half-side (as a fraction of W and of H) of the centred box that "the central `fraction` of the image"
    names, by the reading `rule`:

    * ``area`` (default): the centred box with the frame's aspect that covers `fraction` of the image
      *area*: half-side sqrt(fraction) / 2 (0.2 -> 0.2236, i.e. x, y in [0.276, 0.724]);
    * ``axis``: the box spanning `fraction` of W and of H: half-side fraction / 2 (0.2 -> x, y in
      [0.4, 0.6], which covers only 4 % of the area).
    """
    if rule == "area":
        return float(np.sqrt(fraction)) / 2
    if rule == "axis":
        return fraction / 2
    raise ValueError(f"unknown centring rule {rule!r} (one of {', '.join(CENTER_RULES)})")


def in_central_box(cx: float, cy: float, fraction: float, rule: str = "area") -> bool:
    """True when (cx, cy) (fractions of W, H) lies in the central box of `fraction` (central_half_width)."""
    half = central_half_width(fraction, rule)
    return abs(cx - 0.5) <= half + 1e-9 and abs(cy - 0.5) <= half + 1e-9


def hull_area_fraction(landmarks: np.ndarray, width: int, height: int) -> float:
    """Area of the convex hull of the landmarks / image area."""
    hull = cv2.convexHull(landmarks.reshape(-1, 2).astype(np.float32))
    return float(cv2.contourArea(hull)) / float(width * height)


def log_blur(rgb: np.ndarray, landmarks: np.ndarray, size: int = 64, sigma: float = 1.0) -> float:
    """Sharpness of the face: variance of the Laplacian of Gaussian on a canonical face crop.

    Operator, exactly: crop the square around the landmarks' bounding box (side = 1.1 x its longer side,
    centred, clipped to the frame), convert to gray (OpenCV BT.601, values 0..255, float32), resize to
    `size` x `size` (INTER_AREA when shrinking, INTER_CUBIC when enlarging), Gaussian blur with `sigma`,
    3x3 Laplacian (cv2.Laplacian, ksize=1), return the variance of the response. Resizing every face to
    the same side makes the value independent of the video's resolution and of the face's size in it.
    Blurred faces give small values; the paper keeps faces at >= 50.
    """
    pts = landmarks.reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    side = 1.1 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = rgb.shape[:2]
    a0, b0 = int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2)))
    a1, b1 = int(min(w, round(cx + side / 2))), int(min(h, round(cy + side / 2)))
    if a1 - a0 < 4 or b1 - b0 < 4:
        return 0.0
    gray = cv2.cvtColor(rgb[b0:b1, a0:a1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    interp = cv2.INTER_AREA if gray.shape[1] > size else cv2.INTER_CUBIC
    crop = cv2.resize(gray, (size, size), interpolation=interp)
    if sigma > 0:
        crop = cv2.GaussianBlur(crop, (0, 0), sigma)
    return float(cv2.Laplacian(crop, cv2.CV_32F, ksize=1).var())
