"""3-D rotary position embeddings (paper Eq. 3) and location-mapped landmark positions (Eq. 4).

Every token carries an id triple ``(t, y, x)``. Text tokens use ``(0, 0, 0)`` as in Step1X-Edit; image
tokens (source and noisy) use ``(0, row, col)`` of the packed latent grid (Eq. 3); landmark tokens use
``(0, y_i, x_i)``, the landmark's own position converted to packed-grid units (Eq. 4), so a landmark token
shares its rotary phase with the image tokens covering the same place. Non-square images map each axis by
its own grid size. Ids may be fractional: RoPE is defined for real positions.

The rotary tables are built per axis with head-dim slices ``axes_dim`` (16, 56, 56 for Step1X-Edit) and
frequency base ``theta``; :func:`apply_rope` rotates query/key pairs (FLUX layout).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rope(pos: Tensor, dim: int, theta: float) -> Tensor:
    """Rotation matrices for positions ``pos`` (..., L): (..., L, dim/2, 2, 2), float32."""
    if dim % 2:
        raise ValueError(f"rope axis dim must be even, got {dim}")
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta**scale)
    ang = pos.to(torch.float64)[..., None] * omega
    cos, sin = torch.cos(ang), torch.sin(ang)
    out = torch.stack([cos, -sin, sin, cos], dim=-1)
    return out.view(*out.shape[:-1], 2, 2).float()


class EmbedND(nn.Module):
    """Concatenate per-axis rotary tables: ids (B, L, n_axes) -> (B, 1, L, head_dim/2, 2, 2).

    Args:
        theta: frequency base.
        axes_dim: head-dim slice per axis; must sum to the head dim.
    """

    def __init__(self, theta: float, axes_dim: tuple[int, ...]) -> None:
        super().__init__()
        self.theta, self.axes_dim = theta, tuple(axes_dim)

    def forward(self, ids: Tensor) -> Tensor:
        emb = torch.cat([rope(ids[..., i], d, self.theta) for i, d in enumerate(self.axes_dim)], dim=-3)
        return emb.unsqueeze(1)


def apply_rope(xq: Tensor, xk: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate queries and keys (B, H, L, D) by ``freqs`` (B, 1, L, D/2, 2, 2)."""
    xq_ = xq.float().reshape(*xq.shape[:-1], -1, 1, 2)
    xk_ = xk.float().reshape(*xk.shape[:-1], -1, 1, 2)
    xq_out = freqs[..., 0] * xq_[..., 0] + freqs[..., 1] * xq_[..., 1]
    xk_out = freqs[..., 0] * xk_[..., 0] + freqs[..., 1] * xk_[..., 1]
    return xq_out.reshape(*xq.shape).type_as(xq), xk_out.reshape(*xk.shape).type_as(xk)


def text_ids(batch: int, length: int, device: torch.device | None = None) -> Tensor:
    """(B, L, 3) zeros: text tokens sit at the origin (Step1X-Edit)."""
    return torch.zeros(batch, length, 3, device=device)


def image_ids(batch: int, grid_h: int, grid_w: int, device: torch.device | None = None) -> Tensor:
    """(B, grid_h * grid_w, 3) ids ``(0, row, col)`` in raster order of the packed latent grid (Eq. 3)."""
    ids = torch.zeros(grid_h, grid_w, 3, device=device)
    ids[..., 1] = torch.arange(grid_h, device=device)[:, None]
    ids[..., 2] = torch.arange(grid_w, device=device)[None, :]
    return ids.reshape(1, grid_h * grid_w, 3).expand(batch, -1, -1).clone()


def landmark_ids(landmarks: Tensor, image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> Tensor:
    """Location-mapped ids (Eq. 4): (B, N, 2) pixel ``(x, y)`` in an image of size ``image_hw`` ->
    (B, N, 3) ``(0, y * grid_h / H, x * grid_w / W)``, i.e. the landmark's place on the packed grid.

    A point at pixel ``(x, y)`` lies in packed cell ``(floor(y * grid_h / H), floor(x * grid_w / W))``; the
    id is that cell's coordinate plus the fractional offset inside it.
    """
    (h, w), (gh, gw) = image_hw, grid_hw
    ids = torch.zeros(*landmarks.shape[:-1], 3, device=landmarks.device)
    ids[..., 1] = landmarks[..., 1].float() * (gh / h)
    ids[..., 2] = landmarks[..., 0].float() * (gw / w)
    return ids
