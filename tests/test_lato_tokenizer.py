"""Landmark tokenizer: overfitting real landmarks, dead-code reset, straight-through gradients, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hfl.lato import canvas
from hfl.lato.tokenizer import EMAQuantizer, LandmarkTokenizer, TokenizerConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def real_landmarks(carphone_frames: list[np.ndarray]) -> torch.Tensor:
    """dlib landmarks of the carphone frames and their mirror images, on the face-crop canvas, in [-1, 1]."""
    from hfl.backends.face_dlib import DlibDetector, DlibLandmarker

    det, lmk = DlibDetector(), DlibLandmarker()
    sets = []
    for frame in carphone_frames:
        for img in (frame, np.ascontiguousarray(frame[:, ::-1])):
            boxes = det.detect(img)
            if boxes:
                sets.append(canvas.normalise(canvas.face_crop_canvas(lmk.landmarks(img, boxes[0]))))
    assert len(sets) >= 12, "dlib should find the face in most carphone frames"
    return torch.from_numpy(np.stack(sets))


def test_flip_permutation_is_an_involution() -> None:
    assert sorted(canvas.FLIP_PERMUTATION.tolist()) == list(range(68))
    assert (canvas.FLIP_PERMUTATION[canvas.FLIP_PERMUTATION] == np.arange(68)).all()


def test_tokenizer_overfits_a_real_landmark_batch(real_landmarks: torch.Tensor) -> None:
    """Bound: 4 px on the 512 canvas. The face box spans ~512/1.9 = 270 canvas px for ~45 source px, so one
    source pixel (dlib's integer precision) is ~6 canvas px: a tokenizer that memorised the batch must get
    below that; the mean-shape predictor (no information per sample) is far above it."""
    torch.manual_seed(0)
    x = real_landmarks
    mean_shape_l1 = float((x - x.mean(0, keepdim=True)).abs().mean()) * 256
    model = LandmarkTokenizer(
        TokenizerConfig(channels=(32, 32), code_dim=32, codebook_size=512, num_res_blocks=1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        out = model(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        l1_px = float((model(x).recon - x).abs().mean()) * 256
    assert mean_shape_l1 > 10.0
    assert l1_px < 4.0, (l1_px, mean_shape_l1)


def test_dead_code_reset_revives_unused_codes() -> None:
    torch.manual_seed(0)

    def run(reset_every: int) -> tuple[torch.Tensor, EMAQuantizer]:
        q = EMAQuantizer(16, 4, decay=0.9, reset_every=reset_every, eps=1e-5).train()
        data = torch.randn(8, 32, 4)
        q(data)  # initialise from data
        with torch.no_grad():
            q.codebook[8:] = 1e3  # far away: never the nearest code
            q.ema_sum[8:] = 1e3
            q.window_usage.zero_()  # a fresh reset window starts now
            q.steps.zero_()
        for _ in range(50):
            q(torch.randn(8, 32, 4))
        used = torch.bincount(q(torch.randn(8, 32, 4)).indices.flatten(), minlength=16)
        return used, q

    used, q = run(reset_every=50)
    assert q.codebook[8:].abs().max() < 10, "dead codes must be re-initialised from data"
    assert (used[8:] > 0).any(), "revived codes are picked again"
    assert q.last_reset_count >= 8
    used_off, q_off = run(reset_every=0)
    assert (used_off[8:] == 0).all() and q_off.codebook[8:].min() > 100, "without reset they stay dead"


def test_straight_through_gradient_reaches_the_encoder() -> None:
    model = LandmarkTokenizer(
        TokenizerConfig(channels=(32, 32), code_dim=16, codebook_size=32, num_res_blocks=1)
    )
    x = torch.rand(4, 68, 2) * 2 - 1
    out = model(x)
    out.l1.backward()  # reconstruction term only: reaches the encoder only through the straight-through path
    assert model.encoder.conv_in.weight.grad is not None
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0


def test_full_size_geometry_on_meta() -> None:
    with torch.device("meta"):
        model = LandmarkTokenizer()
    assert tuple(model.vq.codebook.shape) == (8192, 3072)
    z = model.encode(torch.zeros(2, 68, 2, device="meta"))
    assert tuple(z.shape) == (2, 68, 3072)  # 68 points -> 68 tokens of width d
