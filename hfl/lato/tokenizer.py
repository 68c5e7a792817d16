"""Landmark tokenizer: a VQ-VAE over the 68 iBUG points (paper Sec. 3.2.1, Eq. 2; App. D.1, Fig. 17).

The encoder maps a normalised landmark sequence ``F`` (B, 68, 2) in [-1, 1] to continuous latents
``E`` (B, 68, d) with 1-D residual convolutions (points are the sequence axis, so 68 points -> 68 tokens).
A quantizer replaces each latent by its nearest codebook entry (codebook ``C``: m x d) with straight-through
gradients; the decoder mirrors the encoder and reconstructs the points. Training loss (Eq. 2):

    L = |F - F_hat|_1 + beta * |E - sg[C]|_2^2

The codebook itself is not trained by gradients: it is an exponential moving average of the latents
assigned to each code (VQ-VAE-2 style), and codes that no latent used for ``reset_every`` steps are
re-initialised from random latents of the current batch (dead-code reset; the paper resets every 50 steps).

Module and buffer names follow the released LaTo tokenizer (``Po_VQVAE/model.safetensors``: ``encoder.*``,
``decoder.*``, ``vq.codebook``), so ``loaders.load_lato_tokenizer`` maps it with no renaming beyond the
EMA state it lacks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TokenizerConfig:
    """Landmark tokenizer hyper-parameters.

    Args:
        num_points: landmarks per face (68, iBUG order).
        channels: encoder widths (first stage, second stage); the decoder mirrors them.
        code_dim: d, the token width; 3072 matches the Step1X-Edit hidden size.
        codebook_size: m, the number of codes (8192 in the paper).
        num_res_blocks: residual blocks per stage.
        groups: GroupNorm groups (every width must be divisible by it).
        beta: commitment-loss weight (Eq. 2).
        ema_decay: decay of the EMA codebook statistics.
        reset_every: dead-code reset period in training steps (0 disables it).
        eps: Laplace smoothing of the EMA counts.
    """

    num_points: int = 68
    channels: tuple[int, int] = (128, 512)
    code_dim: int = 3072
    codebook_size: int = 8192
    num_res_blocks: int = 3
    groups: int = 32
    beta: float = 0.1
    ema_decay: float = 0.99
    reset_every: int = 50
    eps: float = 1e-5

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerConfig:
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# The release's ResBlock: ``skip = max(1, max_channels // out_channels - 1)`` with ``max_channels = 512``
# fixed, whatever the widths (so a narrow test tokenizer dilates as the release's code would).
DILATION_BASE = 512


class ResBlock1d(nn.Module):
    """GroupNorm-SiLU-dilated conv3-GroupNorm-SiLU-conv1 with a residual (1x1 conv when widths differ).

    Args:
        in_ch: input width.
        out_ch: output width.
        groups: GroupNorm groups.
        dilation: dilation (and padding) of the 3-tap conv; wider receptive field for narrow blocks.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, in_ch, eps=1e-6),
            nn.SiLU(),
            nn.Conv1d(in_ch, out_ch, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(groups, out_ch, eps=1e-6),
            nn.SiLU(),
            nn.Conv1d(out_ch, out_ch, 1),
        )
        self.conv_short = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_short(x) + self.block(x)


class AttnBlock1d(nn.Module):
    """Single-head self-attention over the point axis (1x1-conv q, k, v, out) with a residual."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.q = nn.Conv1d(ch, ch, 1)
        self.k = nn.Conv1d(ch, ch, 1)
        self.v = nn.Conv1d(ch, ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = (m(h).transpose(1, 2).unsqueeze(1) for m in (self.q, self.k, self.v))  # B 1 N C
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        return x + self.proj_out(h)


class ConvStack1d(nn.Module):
    """conv_in -> res x n -> attn -> res (width change) -> res x n -> attn -> conv_out (encoder or decoder).

    Args:
        in_ch: input channels (2 for the encoder, d for the decoder).
        widths: the two stage widths, in order of use.
        out_ch: output channels (d for the encoder, 2 for the decoder).
        num_res_blocks: residual blocks per stage.
        groups: GroupNorm groups.
    """

    def __init__(self, in_ch: int, widths: tuple[int, int], out_ch: int, num_res_blocks: int, groups: int):
        super().__init__()
        a, b = widths

        def res(i: int, o: int) -> ResBlock1d:
            return ResBlock1d(i, o, groups, dilation=max(1, DILATION_BASE // o - 1))

        self.conv_in = nn.Conv1d(in_ch, a, 3, padding=1)
        self.resnet1 = nn.ModuleList([res(a, a) for _ in range(num_res_blocks)])
        self.attn1 = AttnBlock1d(a, groups)
        self.resnet2 = res(a, b)
        self.resnet3 = nn.ModuleList([res(b, b) for _ in range(num_res_blocks)])
        self.attn2 = AttnBlock1d(b, groups)
        self.conv_out = nn.Conv1d(b, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for blk in self.resnet1:
            x = blk(x)
        x = self.resnet2(self.attn1(x))
        for blk in self.resnet3:
            x = blk(x)
        return self.conv_out(self.attn2(x))


class QuantizerOutput(NamedTuple):
    quantized: Tensor  # (B, N, d), straight-through: forward = code, backward = identity to latents
    indices: Tensor  # (B, N) int64
    commit_loss: Tensor  # scalar, |E - sg[C]|^2 (mean)
    perplexity: Tensor  # scalar, exp(entropy) of the code histogram of this batch


class EMAQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer with an EMA codebook and periodic dead-code reset.

    Args:
        codebook_size: m.
        code_dim: d.
        decay: EMA decay of code counts and sums.
        reset_every: every this many training steps, codes unused since the last reset are re-initialised
            from random latents of the current batch (0: never).
        eps: Laplace smoothing of counts.
    """

    def __init__(self, codebook_size: int, code_dim: int, decay: float, reset_every: int, eps: float) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.decay, self.reset_every, self.eps = decay, reset_every, eps
        self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, code_dim))
        self.register_buffer("window_usage", torch.zeros(codebook_size))  # assignments since last reset
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.last_reset_count = 0

    @torch.no_grad()
    def nearest(self, flat: Tensor, chunk: int = 8192) -> Tensor:
        """Index of the nearest code (squared L2) for each row of ``flat`` (M, d), in chunks of rows."""
        cb = self.codebook.float()
        cb_sq = (cb * cb).sum(1)
        out = []
        for part in flat.float().split(chunk):
            dist_ = cb_sq[None, :] - 2.0 * part @ cb.t()  # |x|^2 is constant per row
            out.append(dist_.argmin(1))
        return torch.cat(out)

    def _random_rows(self, flat: Tensor, n: int) -> Tensor:
        idx = torch.randint(0, flat.shape[0], (n,), device=flat.device)
        rows = flat[idx].float()
        return rows + torch.randn_like(rows) * (0.01 / math.sqrt(self.code_dim))

    @torch.no_grad()
    def _init_from(self, flat: Tensor) -> None:
        rows = self._random_rows(flat, self.codebook_size)
        _broadcast(rows)
        self.codebook.copy_(rows)
        self.ema_sum.copy_(rows)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat.float())
        _all_reduce(counts)
        _all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.window_usage.add_(counts)
        self.steps.add_(1)
        if self.reset_every and int(self.steps) % self.reset_every == 0:
            dead = self.window_usage == 0
            n_dead = int(dead.sum())
            if n_dead:
                rows = self._random_rows(flat, n_dead)
                _broadcast(rows)
                self.codebook[dead] = rows
                self.ema_sum[dead] = rows
                self.ema_count[dead] = 1.0
            self.last_reset_count = n_dead
            self.window_usage.zero_()

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """Quantize (B, N, d) latents; in training mode also update the codebook (EMA + dead-code reset)."""
        b, n, d = latents.shape
        flat = latents.reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach())
        indices = self.nearest(flat.detach())
        if self.training:
            self._ema_update(flat.detach(), indices)
        codes = F.embedding(indices, self.codebook).to(latents.dtype).view(b, n, d)
        commit = F.mse_loss(latents, codes.detach())
        quantized = latents + (codes - latents).detach()
        return QuantizerOutput(quantized, indices.view(b, n), commit, perplexity(indices, self.codebook_size))


def perplexity(indices: Tensor, codebook_size: int) -> Tensor:
    """exp(entropy) of the code histogram (1 = one code used, m = all codes equally used)."""
    p = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = p / p.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p + 1e-10)).sum())


def _all_reduce(t: Tensor) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)


def _broadcast(t: Tensor) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(t, src=0)


class TokenizerOutput(NamedTuple):
    recon: Tensor  # (B, N, 2) normalised coordinates
    indices: Tensor  # (B, N)
    loss: Tensor  # Eq. 2
    l1: Tensor  # reconstruction term (normalised units)
    commit_loss: Tensor
    perplexity: Tensor


class LandmarkTokenizer(nn.Module):
    """VQ-VAE landmark tokenizer (see module docstring).

    Args:
        config: :class:`TokenizerConfig` (full size by default).
    """

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TokenizerConfig()
        a, b = c.channels
        self.encoder = ConvStack1d(2, (a, b), c.code_dim, c.num_res_blocks, c.groups)
        self.decoder = ConvStack1d(c.code_dim, (b, a), 2, c.num_res_blocks, c.groups)
        self.vq = EMAQuantizer(c.codebook_size, c.code_dim, c.ema_decay, c.reset_every, c.eps)

    def encode(self, points: Tensor) -> Tensor:
        """(B, N, 2) in [-1, 1] -> continuous latents E (B, N, d)."""
        return self.encoder(points.transpose(1, 2)).transpose(1, 2)

    def decode(self, tokens: Tensor) -> Tensor:
        """(B, N, d) tokens -> (B, N, 2) reconstructed points in [-1, 1] units."""
        return self.decoder(tokens.transpose(1, 2)).transpose(1, 2)

    def tokenize(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Quantized facial tokens (B, N, d) and their code indices (B, N) for the DiT."""
        q = self.vq(self.encode(points))
        return q.quantized, q.indices

    def forward(self, points: Tensor) -> TokenizerOutput:
        q = self.vq(self.encode(points))
        recon = self.decode(q.quantized)
        l1 = (recon - points).abs().mean()
        loss = l1 + self.config.beta * q.commit_loss
        return TokenizerOutput(recon, q.indices, loss, l1, q.commit_loss, q.perplexity)
