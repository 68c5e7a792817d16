"""FLUX autoencoder (the VAE of Step1X-Edit and LaTo), parameter names as in BFL's ``ae.safetensors`` /
Step1X-Edit's ``vae.safetensors`` (``encoder.down.0.block.0.norm1.weight`` ...).

Images in [-1, 1] (B, 3, H, W) encode to latents (B, z, H/f, W/f) with f = 2^(len(ch_mult) - 1) (8 at
full size), normalised as ``scale * (z - shift)``; :func:`pack` turns latents into DiT tokens (2 x 2
patches), :func:`unpack` inverts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class VAEConfig:
    """Args:
    ch: base width. ch_mult: width multipliers per resolution. num_res_blocks: blocks per resolution.
    z_channels: latent channels. scale_factor, shift_factor: latent normalisation (FLUX: 0.3611, 0.1159).
    """

    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    @classmethod
    def tiny(cls, **kw) -> VAEConfig:
        base = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1)
        base.update(kw)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        d = dict(d)
        preset = d.pop("preset", "full")
        if "ch_mult" in d:
            d["ch_mult"] = tuple(d["ch_mult"])
        return cls.tiny(**d) if preset == "tiny" else cls(**d)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v = nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2).unsqueeze(1) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(a)


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(ch, ch), AttnBlock(ch), ResnetBlock(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        mults = (1,) + tuple(c.ch_mult)
        self.down = nn.ModuleList()
        for i, m in enumerate(c.ch_mult):
            level = nn.Module()
            cin, cout = c.ch * mults[i], c.ch * m
            level.block = nn.ModuleList(
                [ResnetBlock(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks)]
            )
            if i != len(c.ch_mult) - 1:
                level.downsample = Downsample(cout)
            self.down.append(level)
        top = c.ch * c.ch_mult[-1]
        self.mid = _Mid(top)
        self.norm_out = _norm(top)
        self.conv_out = nn.Conv2d(top, 2 * c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        top = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, top, 3, padding=1)
        self.mid = _Mid(top)
        self.up = nn.ModuleList()
        cin = top
        for i in reversed(range(len(c.ch_mult))):
            level = nn.Module()
            cout = c.ch * c.ch_mult[i]
            level.block = nn.ModuleList(
                [ResnetBlock(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks + 1)]
            )
            cin = cout
            if i != 0:
                level.upsample = Upsample(cout)
            self.up.insert(0, level)
        self.norm_out = _norm(c.ch * c.ch_mult[0])
        self.conv_out = nn.Conv2d(c.ch * c.ch_mult[0], c.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class FluxVAE(nn.Module):
    """FLUX autoencoder. Args: config: :class:`VAEConfig` (full size by default)."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def moments(self, x: Tensor) -> Tensor:
        """Encoder output (B, 2 z, h, w): posterior mean and log-variance, concatenated."""
        return self.encoder(x)

    def encode(self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] -> normalised latents: the posterior mean, or a posterior sample when
        ``sample`` (what the release does: ``DiagonalGaussian(sample=True)``), with noise from ``generator``
        (drawn on the CPU) or torch's global RNG."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        if not sample:
            z = mean
        else:
            eps = (
                torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
                if generator is not None
                else torch.randn_like(mean)
            )
            z = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps
        return self.config.scale_factor * (z - self.config.shift_factor)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z / self.config.scale_factor + self.config.shift_factor)


def pack(latents: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C * 4): 2 x 2 patches in raster order (FLUX packing)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pack` for a packed grid (gh, gw)."""
    b, _, d = tokens.shape
    gh, gw = grid_hw
    c = d // 4
    x = tokens.view(b, gh, gw, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, gh * 2, gw * 2)
