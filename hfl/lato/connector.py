"""Step1X-Edit's Qwen2 connector: refines the VLM's last hidden states into DiT text tokens and a pooled
vector (parameter names as in the Step1X-Edit checkpoint: ``connector.S.*``, ``connector.global_proj_out``,
``connector.scale_factor``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hfl.lato.layers import timestep_embedding


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class TokenRefinerBlock(nn.Module):
    """Pre-LN self-attention + MLP block gated by the (timestep + context) vector."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attn_qkv = nn.Linear(hidden, hidden * 3)
        self.self_attn_proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = _MLP(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        nn.init.zeros_(self.adaLN_modulation[1].weight)
        nn.init.zeros_(self.adaLN_modulation[1].bias)

    def forward(self, x: Tensor, c: Tensor, attn_mask: Tensor | None) -> Tensor:
        gate_msa, gate_mlp = self.adaLN_modulation(c).chunk(2, dim=1)
        b, n, _ = x.shape
        q, k, v = self.self_attn_qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(b, n, -1)
        x = x + self.self_attn_proj(a) * gate_msa[:, None]
        return x + self.mlp(self.norm2(x)) * gate_mlp[:, None]


class _TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of ``time_factor * t`` + MLP.

    Step1X-Edit's ``Qwen2Connector.forward`` multiplies the flow time by 1000 before this embedder ("fix the
    times embedding bug"); with t in [0, 1] unscaled the text tokens come out wrong (off by 13.6 at output
    scale 174 on the reference goldens), so the factor is 1000 here.
    """

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.freq_dim, time_factor=1000.0).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class _TextProjection(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TokenRefinerBlock(hidden, heads) for _ in range(depth)])

    def forward(self, x: Tensor, c: Tensor, mask: Tensor | None) -> Tensor:
        attn_mask = None
        if mask is not None:
            m = mask.bool()
            attn_mask = (m[:, None, None, :] & m[:, None, :, None]).clone()
            attn_mask[..., 0] = True  # keep padded rows finite
        for blk in self.blocks:
            x = blk(x, c, attn_mask)
        return x


class SingleTokenRefiner(nn.Module):
    def __init__(self, in_dim: int, hidden: int, heads: int, depth: int) -> None:
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, hidden)
        self.t_embedder = _TimestepEmbedder(hidden)
        self.c_embedder = _TextProjection(in_dim, hidden)
        self.individual_token_refiner = _IndividualTokenRefiner(hidden, heads, depth)

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            pooled = x.mean(1)
        else:
            mf = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * mf).sum(1) / mf.sum(1).clamp_min(1)
        c = self.t_embedder(t) + self.c_embedder(pooled)
        return self.individual_token_refiner(self.input_embedder(x), c, mask)


class Qwen2Connector(nn.Module):
    """VLM hidden states (B, L, in_dim) -> text tokens (B, L, hidden) and pooled vector (B, vec_dim).

    Args:
        in_dim: VLM hidden size (3584 for Qwen2.5-VL-7B).
        hidden: connector output width (DiT ``context_in_dim``, 4096).
        heads: refiner attention heads.
        depth: refiner blocks.
        vec_dim: pooled-vector width (DiT ``vec_in_dim``, 768).
    """

    def __init__(
        self, in_dim: int = 3584, hidden: int = 4096, heads: int = 32, depth: int = 2, vec_dim: int = 768
    ):
        super().__init__()
        self.S = SingleTokenRefiner(in_dim, hidden, heads, depth)
        self.global_proj_out = nn.Linear(in_dim, vec_dim)
        self.scale_factor = nn.Parameter(torch.full((1,), -(1 - 0.09)))

    def forward(self, x: Tensor, t: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        mf = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mf).sum(1) / mf.sum(1).clamp_min(1) * (1 + self.scale_factor.to(x.dtype))
        return self.S(x, t, mask), self.global_proj_out(pooled)
