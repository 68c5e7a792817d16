"""LaTo DiT: Step1X-Edit's MM-DiT with landmark tokens (paper Sec. 3.2.2, Eq. 3-6).

Input sequence (Eq. 5): ``Z = [z_t | z_s | z_f | z_n]``: text tokens from the Qwen2.5-VL connector, packed
VAE tokens of the source image, landmark tokens, and packed noisy target tokens. Positions (Eq. 6): text at
the origin, both images on the packed latent grid (Eq. 3), landmark tokens at their own location on that
grid (Eq. 4, ``rope.landmark_ids``). The denoiser predicts the rectified-flow velocity of the noisy tokens.

Landmark conditioning modes (``LaToConfig.landmark_mode``):

- ``"tokens"`` (LaTo): the tokenizer's 68 quantized tokens pass a trainable linear adapter
  (``landmark_in``, as named in the release's ``landmark_in.pth``); learnable unconditional tokens
  (``landmark_uncond``, 68 x hidden) replace them for samples chosen with probability ``uncond_prob`` in
  training, and form the unconditional branch of landmark-aware CFG at inference.
- ``"image"`` (ablation, Table 3 row "landmark image"): the rasterised landmark image is VAE-encoded and
  packed like the source image, shares ``img_in``, and sits on the image grid.
- ``"none"``: no landmark tokens (the fine-tuned Step1X-Edit baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from hfl.lato.connector import Qwen2Connector
from hfl.lato.layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    SingleStreamBlock,
    maybe_checkpoint,
    timestep_embedding,
)
from hfl.lato.rope import EmbedND, image_ids, landmark_ids, text_ids

LANDMARK_MODES = ("tokens", "image", "none")


@dataclass
class LaToConfig:
    """DiT geometry (defaults: Step1X-Edit / LaTo full size) and landmark settings.

    Args:
        in_channels: packed latent channels (16 VAE channels x 2 x 2).
        vec_in_dim: pooled text vector width (connector output).
        context_in_dim: connector token width.
        hidden_size: transformer width.
        mlp_ratio: MLP expansion.
        num_heads: attention heads (head dim = hidden / heads = sum(axes_dim)).
        depth: double-stream blocks.
        depth_single_blocks: single-stream blocks.
        axes_dim: RoPE head-dim split over the (t, y, x) axes.
        theta: RoPE base.
        qkv_bias: qkv bias in double blocks.
        text_dim: VLM hidden size fed to the connector.
        connector_heads: connector attention heads.
        connector_depth: connector refiner blocks.
        landmark_mode: "tokens" | "image" | "none" (see module docstring).
        landmark_dim: tokenizer code width d.
        num_landmarks: landmark tokens per face.
        uncond_prob: training probability of replacing a sample's landmark tokens by the unconditional ones.
    """

    in_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, int, int] = (16, 56, 56)
    theta: float = 10_000.0
    qkv_bias: bool = True
    text_dim: int = 3584
    connector_heads: int = 32
    connector_depth: int = 2
    landmark_mode: str = "tokens"
    landmark_dim: int = 3072
    num_landmarks: int = 68
    uncond_prob: float = 0.1

    @classmethod
    def tiny(cls, **kw) -> LaToConfig:
        """A CPU-sized config with the same structure (tests, smoke runs)."""
        base = dict(
            vec_in_dim=32,
            context_in_dim=32,
            hidden_size=64,
            num_heads=4,
            depth=2,
            depth_single_blocks=2,
            axes_dim=(4, 6, 6),
            text_dim=32,
            connector_heads=4,
            connector_depth=1,
            landmark_dim=32,
        )
        base.update(kw)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict) -> LaToConfig:
        d = dict(d)
        preset = d.pop("preset", "full")
        if "axes_dim" in d:
            d["axes_dim"] = tuple(d["axes_dim"])
        return cls.tiny(**d) if preset == "tiny" else cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class LaToDiT(nn.Module):
    """The LaTo denoiser (see module docstring).

    Args:
        config: :class:`LaToConfig`.
    """

    def __init__(self, config: LaToConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or LaToConfig()
        if c.hidden_size % c.num_heads or sum(c.axes_dim) != c.hidden_size // c.num_heads:
            raise ValueError(f"axes_dim {c.axes_dim} must sum to head dim {c.hidden_size // c.num_heads}")
        if c.landmark_mode not in LANDMARK_MODES:
            raise ValueError(f"landmark_mode must be one of {LANDMARK_MODES}, got {c.landmark_mode!r}")
        self.pe_embedder = EmbedND(c.theta, c.axes_dim)
        self.img_in = nn.Linear(c.in_channels, c.hidden_size)
        self.time_in = MLPEmbedder(256, c.hidden_size)
        self.vector_in = MLPEmbedder(c.vec_in_dim, c.hidden_size)
        self.txt_in = nn.Linear(c.context_in_dim, c.hidden_size)
        self.double_blocks = nn.ModuleList(
            [DoubleStreamBlock(c.hidden_size, c.num_heads, c.mlp_ratio, c.qkv_bias) for _ in range(c.depth)]
        )
        self.single_blocks = nn.ModuleList(
            [SingleStreamBlock(c.hidden_size, c.num_heads, c.mlp_ratio) for _ in range(c.depth_single_blocks)]
        )
        self.final_layer = LastLayer(c.hidden_size, c.in_channels)
        self.connector = Qwen2Connector(
            c.text_dim, c.context_in_dim, c.connector_heads, c.connector_depth, c.vec_in_dim
        )
        if c.landmark_mode == "tokens":
            self.landmark_in = nn.Linear(c.landmark_dim, c.hidden_size)
            self.landmark_uncond = nn.Parameter(torch.randn(c.num_landmarks, c.hidden_size) * 0.02)
        # False when a loader left landmark_uncond at its random init (the release ships none): sampling
        # then refuses landmark CFG with "learned" tokens (hfl.lato.sampling).
        self.has_learned_uncond = c.landmark_mode == "tokens"
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ landmark stream

    def sample_uncond_mask(
        self, batch: int, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B,) bool: which samples get the unconditional landmark tokens in this training step."""
        return torch.rand(batch, generator=generator, device=device) < self.config.uncond_prob

    def landmark_stream(self, tokens: Tensor, uncond_mask: Tensor | None = None) -> Tensor:
        """Adapter output (B, N, hidden) for tokenizer tokens (B, N, d); rows where ``uncond_mask`` is True
        are the learnable unconditional tokens instead."""
        z = self.landmark_in(tokens)
        if uncond_mask is not None:
            z = torch.where(uncond_mask[:, None, None], self.landmark_uncond.to(z.dtype)[None], z)
        return z

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        noisy: Tensor,
        source: Tensor,
        grid_hw: tuple[int, int],
        timesteps: Tensor,
        text: Tensor,
        text_mask: Tensor,
        landmark_tokens: Tensor | None = None,
        landmark_xy: Tensor | None = None,
        image_hw: tuple[int, int] | None = None,
        landmark_latents: Tensor | None = None,
        uncond_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict the velocity of the noisy tokens.

        Args:
            noisy: packed noisy target latents (B, gh * gw, in_channels).
            source: packed source-image latents (B, gh * gw, in_channels).
            grid_hw: packed grid (gh, gw) of both images.
            timesteps: (B,) flow time in [0, 1] (1 = pure noise).
            text: VLM hidden states (B, Lt, text_dim); text_mask: (B, Lt) 1 for real tokens.
            landmark_tokens: "tokens" mode: tokenizer output (B, 68, landmark_dim).
            landmark_xy: "tokens" mode: landmark pixels (B, 68, 2) as ``(x, y)`` in an image of ``image_hw``.
            image_hw: pixel size (H, W) of the images the landmarks refer to.
            landmark_latents: "image" mode: packed latents of the rendered landmark image (B, gh * gw, C).
            uncond_mask: "tokens" mode: (B,) bool, samples that use the unconditional landmark tokens.

        Returns:
            (B, gh * gw, in_channels) velocity for the noisy tokens.
        """
        c = self.config
        b, n_noisy, _ = noisy.shape
        gh, gw = grid_hw
        txt, pooled = self.connector(text, timesteps, text_mask)
        txt = self.txt_in(txt)
        vec = self.time_in(timestep_embedding(timesteps, 256).to(txt.dtype)) + self.vector_in(pooled)

        grid = image_ids(b, gh, gw, noisy.device)
        parts, ids = [self.img_in(source)], [grid]
        if c.landmark_mode == "tokens":
            if landmark_tokens is None or landmark_xy is None or image_hw is None:
                raise ValueError("landmark_mode='tokens' needs landmark_tokens, landmark_xy and image_hw")
            parts.append(self.landmark_stream(landmark_tokens.to(txt.dtype), uncond_mask))
            ids.append(landmark_ids(landmark_xy, image_hw, grid_hw))
        elif c.landmark_mode == "image":
            if landmark_latents is None:
                raise ValueError("landmark_mode='image' needs landmark_latents")
            parts.append(self.img_in(landmark_latents))
            ids.append(grid)
        parts.append(self.img_in(noisy))
        ids.append(grid)
        img = torch.cat(parts, 1)
        pe = self.pe_embedder(torch.cat([text_ids(b, txt.shape[1], noisy.device)] + ids, 1))

        for block in self.double_blocks:
            img, txt = maybe_checkpoint(block, self.gradient_checkpointing, img, txt, vec, pe)
        x = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            x = maybe_checkpoint(block, self.gradient_checkpointing, x, vec, pe)
        return self.final_layer(x[:, -n_noisy:], vec)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled
