"""The LaTo edit pipeline (paper Sec. 3.2, 3.3; Fig. 4).

image -> 512 canvas -> face + 68 source landmarks -> target landmarks (given, or a predictor) -> landmark
tokenizer (normalised canvas coordinates) -> DiT with location-mapped landmark tokens, sampled with the
rectified-flow schedule and landmark-aware CFG (``hfl.lato.sampling``) -> VAE decode -> the edit, resized
back to the input's size, plus a panel: source with its landmarks | target landmarks | edit with the
target landmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from hfl.lato import canvas as lcanvas
from hfl.lato.sampling import GuidanceConfig, default_guidance, sample
from hfl.lato.vae import pack, unpack
from inference.face import CANVAS, FaceFinder, to_canvas
from inference.model import LaToBundle


@dataclass
class EditResult:
    """One edit: the output image (input size), the canvas-size output, landmarks and timings."""

    image: np.ndarray
    canvas_image: np.ndarray
    source_landmarks: np.ndarray | None
    target_landmarks: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    def panel(self, source_canvas: np.ndarray) -> np.ndarray:
        """Source + its landmarks | rendered target landmarks | edit + target landmarks (512 high)."""
        src = source_canvas.copy()
        if self.source_landmarks is not None:
            draw_points(src, self.source_landmarks, (0, 255, 0))
        rendered = lcanvas.render_landmarks(self.target_landmarks, CANVAS, CANVAS)
        if self.source_landmarks is not None:
            ghost = lcanvas.render_landmarks(self.source_landmarks, CANVAS, CANVAS, thickness=1)
            rendered = np.maximum(rendered, (ghost * np.array([0, 0.6, 0])).astype(np.uint8))
        out = to_canvas(self.canvas_image)
        draw_points(out, self.target_landmarks, (255, 0, 0))
        return np.concatenate([src, rendered, out], axis=1)


def draw_points(img: np.ndarray, pts: np.ndarray, color: tuple[int, int, int], r: int = 2) -> None:
    for x, y in np.asarray(pts).reshape(-1, 2):
        cv2.circle(img, (int(round(x)), int(round(y))), r, color, -1, cv2.LINE_AA)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 -> (1, 3, H, W) in [-1, 1] (the release: ``to_tensor(img) * 2 - 1``)."""
    return torch.from_numpy(np.array(rgb, np.uint8)).permute(2, 0, 1).float()[None].div(255) * 2 - 1


def _source_pixels(image: np.ndarray, canvas_img: np.ndarray, canvas: str, h: int, w: int) -> np.ndarray:
    """The source as the DiT sees it: the release resizes the original with PIL's bicubic filter to its
    aspect-preserving size; the square canvas resizes the 512 canvas to (h, w)."""
    if canvas == "release":
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))
    return cv2.resize(canvas_img, (w, h), interpolation=cv2.INTER_AREA)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class LaToEditor:
    """Edit faces with a loaded :class:`~inference.model.LaToBundle`.

    Args:
        bundle: the model.
        predictor: target-landmark predictor with ``predict(canvas_image, landmarks, instruction)``
            (``GeometricPredictor`` by default).
        faces: face finder (the bundle's ``face`` backends, dlib by default).
    """

    def __init__(self, bundle: LaToBundle, predictor: Any = None, faces: FaceFinder | None = None) -> None:
        from hfl.predictor.geometric import GeometricPredictor

        self.bundle = bundle
        self.predictor = predictor or GeometricPredictor()
        self._faces = faces

    @property
    def faces(self) -> FaceFinder:
        if self._faces is None:
            from hfl.backends.face import FaceBackendConfig

            self._faces = FaceFinder(FaceBackendConfig(**self.bundle.face))
        return self._faces

    def source_landmarks(self, canvas_img: np.ndarray) -> np.ndarray | None:
        """68 landmarks on the 512 canvas. FAN gets the canvas in BGR order, as the release's
        ``1_get_landmarks.py`` hands ``cv2.imread`` output to face_alignment."""
        fan = self.bundle.face.get("landmarker") == "fan"
        found = self.faces.find(np.ascontiguousarray(canvas_img[..., ::-1]) if fan else canvas_img)
        return None if found is None else found[1]

    @torch.no_grad()
    def edit(
        self,
        image: np.ndarray,
        instruction: str,
        target_landmarks: np.ndarray | None = None,
        guidance: GuidanceConfig | None = None,
        seed: int = 0,
        callback: Any = None,
    ) -> EditResult:
        """Edit one RGB image. ``target_landmarks``: (68, 2) on the 512 canvas (skips the predictor)."""
        b = self.bundle
        g = guidance or default_guidance(b.dit)
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        canvas_img = to_canvas(image)
        src_lm = self.source_landmarks(canvas_img)
        times["detect_s"] = time.perf_counter() - t0
        if target_landmarks is None:
            if src_lm is None:
                raise ValueError("no face found: pass target landmarks (--landmarks) for this image")
            t1 = time.perf_counter()
            target_landmarks = self.predictor.predict(canvas_img, src_lm, instruction)
            times["predict_s"] = time.perf_counter() - t1
        tgt = np.asarray(target_landmarks, np.float64).reshape(68, 2)
        if b.canvas == "release":
            w, h = lcanvas.release_image_size(image.shape[1], image.shape[0], b.height)
        else:
            h, w = b.height, b.width
        dev = b.device
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        t2 = time.perf_counter()
        src_u8 = _source_pixels(image, canvas_img, b.canvas, h, w)
        with b.use(b.text_encoder) as te:
            text, mask = te([instruction], [src_u8])
            null, null_mask = te([""], [src_u8])
        with b.use(b.vae) as vae:
            src_lat = vae.encode(_to_tensor(src_u8).to(dev), sample=b.vae_sample, generator=gen)
        with b.use(b.tokenizer) as tok:
            norm = torch.from_numpy(lcanvas.normalise(tgt)).float()[None].to(dev)
            tokens, _ = tok.tokenize(norm)
            zero_norm = torch.from_numpy(lcanvas.normalise(np.zeros((68, 2)))).float()[None].to(dev)
            zero_tokens, _ = tok.tokenize(zero_norm)
        grid_hw = (src_lat.shape[2] // 2, src_lat.shape[3] // 2)
        if b.canvas == "release":  # canvas coordinates, the release's id frame
            xy = torch.from_numpy(tgt).float()[None].to(dev)
            image_hw = lcanvas.release_landmark_frame(grid_hw)
        else:
            xy = torch.from_numpy(tgt * np.array([w / CANVAS, h / CANVAS])).float()[None].to(dev)
            image_hw = (h, w)
        source = pack(src_lat)
        noise = pack(torch.randn(src_lat.shape, generator=gen)).to(dev)  # latent-shaped, as the release
        times["encode_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        with b.use(b.dit) as dit:
            x = sample(
                dit, noise, source, grid_hw, text.to(dev), mask.to(dev), null.to(dev), null_mask.to(dev),
                tokens, xy, image_hw, g, zero_tokens=zero_tokens, callback=callback,
            )  # fmt: skip
        times["sample_s"] = time.perf_counter() - t3
        times["s_per_step"] = times["sample_s"] / max(1, g.steps)
        t4 = time.perf_counter()
        with b.use(b.vae) as vae:
            out = _to_uint8(vae.decode(unpack(x.float(), grid_hw)))
        times["decode_s"] = time.perf_counter() - t4
        full = cv2.resize(out, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)
        return EditResult(full, out, src_lm, tgt, times)
