"""DOVER (Wu et al., ICCV 2023) video quality scorer, run from the ONNX export of the official repository.

File format: the ONNX graph written by ``convert_to_onnx.py`` of https://github.com/VQAssessment/DOVER
(``onnx_dover.onnx``): two inputs ``aes_view`` (N_a, 3, T, H, W) and ``tech_view`` (N_t, 3, T, H, W), float32,
ImageNet-normalised RGB (the official export fixes N_a=1, N_t=4, T=32, H=W=224), and two outputs in this
order: the pooled aesthetic score (N_a,) and the pooled technical score (N_t,). The shapes are read from
the graph, so an export with other (or dynamic) batch sizes works too; dynamic batches default to the
repository's test setting (1 aesthetic clip, 3 technical clips).

Preprocessing re-implements the repository's ``dover/datasets/fusion_datasets.py`` +
``evaluate_one_video.py`` (dover.yml, val sets):

* aesthetic view: ``UnifiedFrameSampler(1, 32, frame_interval=2)`` picks one frame in each of 32 equal
  temporal segments; frames resized to 224x224 (bilinear, ``align_corners=False``, no antialiasing, rounded
  to uint8 — torchvision ``Resize`` on uint8 tensors as in the torchvision versions DOVER was trained with).
* technical view: ``UnifiedFrameSampler(32, N_t, frame_interval=2)`` picks N_t segments of 32 frames at
  stride 2; ``get_spatial_fragments`` (7x7 grid of 32x32 fragments, offsets per 32-frame chunk, bilinear
  upsampling first — truncated to uint8 — when the short side is < 224; the grid is computed from the
  pre-upsampling size exactly as the repository does).
* both: ``(x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]``; frame indices wrap modulo the
  number of frames, so short clips (even one frame) are valid input.

The repository draws the in-segment offsets at random; here they come from a generator seeded with
``seed`` so a clip always gets the same score.

Score: ``fuse_results`` of evaluate_one_video.py on the clip-mean technical ``t`` and aesthetic ``a`` outputs:
``x = (t - 0.1107) / 0.07355 * 0.6104 + (a - 0.08285) / 0.03774 * 0.3896``, ``q = 1 / (1 + exp(-x))``.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hfl.backends.base import BackendUnavailable

AES_INPUT = "aes_view"
TECH_INPUT = "tech_view"
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# fuse_results() of VQAssessment/DOVER evaluate_one_video.py.
TECH_MEAN, TECH_STD, TECH_WEIGHT = 0.1107, 0.07355, 0.6104
AES_MEAN, AES_STD, AES_WEIGHT = 0.08285, 0.03774, 0.3896

HOW_TO_PRODUCE = (
    "produce it with the official repository: git clone https://github.com/VQAssessment/DOVER, put DOVER.pth "
    "in pretrained_weights/, run `python convert_to_onnx.py`, and set backends.quality.dover_path to the "
    "resulting onnx_dover.onnx"
)


def fuse_dover(technical: float, aesthetic: float) -> float:
    """DOVER's default score-level fusion of the raw technical/aesthetic outputs, in (0, 1)."""
    x = (technical - TECH_MEAN) / TECH_STD * TECH_WEIGHT + (aesthetic - AES_MEAN) / AES_STD * AES_WEIGHT
    return float(1.0 / (1.0 + math.exp(-x)))


def sample_frame_indices(
    num_frames: int, fsize_t: int, fragments_t: int, frame_interval: int, rng: np.random.Generator
) -> np.ndarray:
    """``UnifiedFrameSampler(fsize_t, fragments_t, frame_interval)(num_frames)`` (num_clips=1, no drop)."""
    tgrids = np.array([num_frames // fragments_t * i for i in range(fragments_t)], dtype=np.int64)
    tlength = num_frames // fragments_t
    if tlength > fsize_t * frame_interval:
        rnd_t = rng.integers(0, tlength - fsize_t * frame_interval, size=len(tgrids))
    else:
        rnd_t = np.zeros(len(tgrids), dtype=np.int64)
    ranges = np.arange(fsize_t)[None, :] * frame_interval + rnd_t[:, None] + tgrids[:, None]
    return np.mod(ranges.reshape(-1), num_frames)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is in the venv
        raise BackendUnavailable("DOVER preprocessing needs torch (pip install 'hfl[dover]')") from e
    return torch


def spatial_fragments(
    video, fragments_h: int, fragments_w: int, fsize_h: int, fsize_w: int, aligned: int, generator
):
    """``get_spatial_fragments`` of the DOVER repository (grid mode) on a uint8 [C, T, H, W] tensor."""
    torch = _torch()
    size_h, size_w = fragments_h * fsize_h, fragments_w * fsize_w
    if video.shape[1] == 1:
        aligned = 1
    dur_t, res_h, res_w = video.shape[-3:]
    ratio = min(res_h / size_h, res_w / size_w)
    if ratio < 1:
        up = torch.nn.functional.interpolate(video / 255.0, scale_factor=1 / ratio, mode="bilinear")
        video = (up * 255.0).type_as(video)
    assert dur_t % aligned == 0, "clip length must be a multiple of `aligned`"
    # As in the repository, the grid uses the size before upsampling.
    hgrids = [min(res_h // fragments_h * i, res_h - fsize_h) for i in range(fragments_h)]
    wgrids = [min(res_w // fragments_w * i, res_w - fsize_w) for i in range(fragments_w)]
    hlength, wlength = res_h // fragments_h, res_w // fragments_w
    n_t = dur_t // aligned
    shape = (fragments_h, fragments_w, n_t)
    if hlength > fsize_h:
        rnd_h = torch.randint(hlength - fsize_h, shape, generator=generator)
    else:
        rnd_h = torch.zeros(shape, dtype=torch.int64)
    if wlength > fsize_w:
        rnd_w = torch.randint(wlength - fsize_w, shape, generator=generator)
    else:
        rnd_w = torch.zeros(shape, dtype=torch.int64)
    out = torch.zeros(video.shape[:-2] + (size_h, size_w), dtype=torch.float32)
    for i, hs in enumerate(hgrids):
        for j, ws in enumerate(wgrids):
            for t in range(n_t):
                t_s, t_e = t * aligned, (t + 1) * aligned
                h_so = hs + int(rnd_h[i, j, t])
                w_so = ws + int(rnd_w[i, j, t])
                out[:, t_s:t_e, i * fsize_h : (i + 1) * fsize_h, j * fsize_w : (j + 1) * fsize_w] = video[
                    :, t_s:t_e, h_so : h_so + fsize_h, w_so : w_so + fsize_w
                ]
    return out


def resized_view(video, size_h: int, size_w: int):
    """torchvision ``Resize((size_h, size_w))`` (bilinear, no antialias, rounded) of uint8 [C, T, H, W]."""
    torch = _torch()
    x = video.permute(1, 0, 2, 3).float()  # [T, C, H, W]
    x = torch.nn.functional.interpolate(x, size=(size_h, size_w), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255)
    return x.permute(1, 0, 2, 3)


def _normalise(view, num_clips: int) -> np.ndarray:
    """[C, T, H, W] 0..255 -> ImageNet-normalised float32 [num_clips, C, T / num_clips, H, W]."""
    torch = _torch()
    mean, std = torch.from_numpy(MEAN), torch.from_numpy(STD)
    v = ((view.permute(1, 2, 3, 0).float() - mean) / std).permute(3, 0, 1, 2)
    c, t, h, w = v.shape
    v = v.reshape(c, num_clips, t // num_clips, h, w).transpose(0, 1)
    return np.ascontiguousarray(v.numpy(), dtype=np.float32)


@dataclass(frozen=True)
class DoverViewSpec:
    """Shapes of the two views (from the ONNX inputs) and the repository's sampling constants."""

    aes_clips: int = 1
    tech_clips: int = 3
    clip_len: int = 32
    aes_size: tuple[int, int] = (224, 224)
    tech_size: tuple[int, int] = (224, 224)
    fsize: int = 32
    frame_interval: int = 2


def decompose_views(frames: list[np.ndarray], spec: DoverViewSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """The normalised ``aes_view`` and ``tech_view`` arrays of a clip of RGB uint8 frames."""
    torch = _torch()
    n = len(frames)
    if n == 0:
        raise ValueError("DOVER needs at least one frame")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    # Aesthetic: clip_len // t_frag = 1 frame in each of t_frag = clip_len segments, per clip.
    aes_idx = np.concatenate(
        [sample_frame_indices(n, 1, spec.clip_len, spec.frame_interval, rng) for _ in range(spec.aes_clips)]
    )
    # Technical: clip_len consecutive (stride frame_interval) frames in each of num_clips segments.
    tech_idx = sample_frame_indices(n, spec.clip_len, spec.tech_clips, spec.frame_interval, rng)

    def stack(idx: np.ndarray):
        arr = np.stack([np.asarray(frames[int(i)])[..., :3] for i in idx], 0)  # [T, H, W, C]
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.uint8)).permute(3, 0, 1, 2)  # [C, T, H, W]

    aes = resized_view(stack(aes_idx), *spec.aes_size)
    th, tw = spec.tech_size
    tech = spatial_fragments(
        stack(tech_idx), th // spec.fsize, tw // spec.fsize, spec.fsize, spec.fsize, spec.clip_len, gen
    )
    return {AES_INPUT: _normalise(aes, spec.aes_clips), TECH_INPUT: _normalise(tech, spec.tech_clips)}


def _providers(device: str) -> list:
    if device.startswith("cuda"):
        dev_id = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _dim(d, default: int) -> int:
    return d if isinstance(d, int) and d > 0 else default


class DoverScorer:
    """DOVER fused aesthetic+technical quality in (0, 1) from the official ONNX export (onnxruntime)."""

    name = "dover"

    def __init__(self, path: str | Path, device: str = "cpu", seed: int = 0) -> None:
        """Open the ONNX file at `path`; raises BackendUnavailable if it or onnxruntime is missing."""
        p = Path(path) if path else None
        if p is None or not p.is_file():
            raise BackendUnavailable(
                f"DOVER ONNX file not found: {path or '(dover_path is empty)'}; {HOW_TO_PRODUCE}"
            )
        if p.suffix.lower() in (".pth", ".pt"):
            raise BackendUnavailable(
                f"{p} is a PyTorch checkpoint; the DOVER backend runs the ONNX export — {HOW_TO_PRODUCE}"
            )
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("DOVER backend needs onnxruntime (pip install 'hfl[dover]')") from e
        _torch()
        try:
            self._sess = ort.InferenceSession(str(p), providers=_providers(device))
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendUnavailable(f"cannot load DOVER ONNX model {p}: {e}") from e
        inputs = {i.name: i.shape for i in self._sess.get_inputs()}
        if set(inputs) != {AES_INPUT, TECH_INPUT} or len(self._sess.get_outputs()) != 2:
            raise BackendUnavailable(
                f"{p} is not a DOVER export: expected inputs {AES_INPUT!r}, {TECH_INPUT!r} and 2 outputs, "
                f"got inputs {sorted(inputs)} and {len(self._sess.get_outputs())} outputs"
            )
        a, t = inputs[AES_INPUT], inputs[TECH_INPUT]
        self.spec = DoverViewSpec(
            aes_clips=_dim(a[0], 1),
            tech_clips=_dim(t[0], 3),
            clip_len=_dim(t[2], 32),
            aes_size=(_dim(a[3], 224), _dim(a[4], 224)),
            tech_size=(_dim(t[3], 224), _dim(t[4], 224)),
        )
        if _dim(a[2], self.spec.clip_len) != self.spec.clip_len:
            raise BackendUnavailable(f"{p}: aesthetic and technical clip lengths differ ({a[2]} vs {t[2]})")
        self._outputs = [o.name for o in self._sess.get_outputs()]
        self.seed = seed

    def raw_scores(self, frames: list[np.ndarray]) -> tuple[float, float]:
        """(technical, aesthetic) raw DOVER outputs (means over clips) of a clip."""
        views = decompose_views(list(frames), self.spec, self.seed)
        aes, tech = self._sess.run(self._outputs, views)  # export order: [aesthetic, technical]
        return float(np.mean(tech)), float(np.mean(aes))

    def score(self, frames: list[np.ndarray]) -> float:
        """Fused DOVER score in (0, 1) (``fuse_results`` of the official repository)."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        return fuse_dover(*self.raw_scores(frames))


def check_dover_file(path: str) -> list[str]:
    """Problems with a DOVER ONNX path and DOVER's packages, without loading anything."""
    errors: list[str] = []
    key = "backends.quality.dover_path"
    if not path:
        errors.append(f"{key}: empty (scorer 'dover' needs the DOVER ONNX export); {HOW_TO_PRODUCE}")
    elif not Path(path).is_file():
        errors.append(f"{key}: file not found: {path}")
    elif Path(path).suffix.lower() in (".pth", ".pt"):
        errors.append(
            f"{key}: {path} is a PyTorch checkpoint; DOVER runs from its ONNX export: {HOW_TO_PRODUCE}"
        )
    for mod in ("onnxruntime", "torch"):
        if importlib.util.find_spec(mod) is None:
            errors.append(
                f"backends.quality: scorer 'dover' needs the `{mod}` package (pip install 'hfl[dover]')"
            )
    return errors
