"""FLUX autoencoder (the VAE of Step1X-Edit and LaTo) on ``diffusers.AutoencoderKL``; BFL's
``ae.safetensors`` / Step1X-Edit's ``vae.safetensors`` names (``encoder.down.0.block.0.norm1.weight`` ...)
are converted by the loader.

Images in [-1, 1] (B, 3, H, W) encode to latents (B, z, H/f, W/f) with f = 2^(len(ch_mult) - 1) (8 at
full size), normalised as ``scale * (z - shift)``; :func:`pack` turns latents into DiT tokens (2 x 2
patches), :func:`unpack` inverts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
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


def diffusers_kwargs(c: VAEConfig) -> dict:
    """``diffusers.AutoencoderKL`` arguments of the FLUX autoencoder geometry ``c`` (no quant convs)."""
    n = len(c.ch_mult)
    return dict(
        in_channels=c.in_channels,
        out_channels=c.in_channels,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=[c.ch * m for m in c.ch_mult],
        layers_per_block=c.num_res_blocks,
        latent_channels=c.z_channels,
        norm_num_groups=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=c.scale_factor,
        shift_factor=c.shift_factor,
    )


class FluxVAE(nn.Module):
    """FLUX autoencoder: ``diffusers.AutoencoderKL`` (``self.ae``) plus the FLUX latent normalisation.

    The reference goldens show diffusers' model equal to Step1X-Edit's ``modules/autoencoder.py`` on the
    same weights (moments 1.4e-6, decode 1.0e-6, posterior sample 8e-7 at output scale ~2.5), so hfl keeps
    no copy of its layers. BFL / Step1X-Edit ``vae.safetensors`` files are converted on load
    (``hfl.lato.loaders.load_flux_vae``).

    Args:
        config: :class:`VAEConfig` (full size by default).
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = config or VAEConfig()
        self.ae = AutoencoderKL(**diffusers_kwargs(self.config))

    def moments(self, x: Tensor) -> Tensor:
        """Encoder output (B, 2 z, h, w): posterior mean and log-variance, concatenated."""
        return self.ae.encoder(x)

    def encode(self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] -> normalised latents: the posterior mean, or a posterior sample when
        ``sample`` (what the release does: ``DiagonalGaussian(sample=True)``), with noise from ``generator``
        (drawn on the CPU) or torch's global RNG."""
        mean, logvar = self.moments(x).chunk(2, dim=1)
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
        """Normalised latents -> images in [-1, 1] (unclamped)."""
        return self.ae.decoder(z / self.config.scale_factor + self.config.shift_factor)


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
