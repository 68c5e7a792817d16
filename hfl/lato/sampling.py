"""Rectified-flow sampling with landmark-aware classifier-free guidance (paper Sec. 3.2.2, App. C.6).

Schedule (FLUX / Step1X-Edit): ``steps + 1`` flow times from 1 (noise) to 0 (image), optionally shifted
towards noise by ``mu`` (``e^mu / (e^mu + 1/t - 1)``); the resolution-dependent ``mu`` is linear in the
number of packed image tokens (256 tokens -> 0.5, 4096 tokens -> 1.15). diffusers'
``FlowMatchEulerDiscreteScheduler`` computes it (:func:`schedule`).
Euler steps: ``x <- x + (t_next - t) * v``.

Guidance. With text condition ``c_t`` (the instruction), the empty prompt ``0_t``, landmark tokens ``c_f``
and the *learned unconditional landmark tokens* ``u_f`` (``LaToDiT.landmark_uncond``), the velocity is::

    v = v(0_t, u_f) + s_t * [v(c_t, u_f) - v(0_t, u_f)] + s_f * [v(c_t, c_f) - v(c_t, u_f)]

``s_t`` is the text guidance scale and ``s_f`` the landmark guidance scale (default 4). The branches that a
scale of 1 makes redundant are not run: ``s_t = 1`` gives ``v(c_t, u_f) + s_f [v(c_t, c_f) - v(c_t, u_f)]``
(two branches), ``s_f = 1`` gives plain text CFG with the landmark tokens in both branches, ``s_t = s_f = 1``
one conditional pass. ``uncond="zero"`` replaces ``u_f`` by the tokens of an all-zero landmark list at the
canvas origin (the ablation of App. C.6) instead of the learned tokens.

Release mode. The official release (``3_lato_inference.py``) runs plain text CFG with scale 4 and the
landmark tokens in both branches (``s_t = 4, s_f = 1``, :meth:`GuidanceConfig.release`); it ships no
learned unconditional tokens. A DiT without learned ``u_f`` (``LaToDiT.has_learned_uncond`` is False) gets
the release's guidance by default (:func:`default_guidance`), and asking it for landmark CFG with
``uncond="learned"`` is an error rather than a silent use of random tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

UNCOND_MODES = ("learned", "zero")


@dataclass
class GuidanceConfig:
    """Sampling settings.

    Args:
        steps: Euler steps (paper / Step1X-Edit default 28).
        text_scale: text guidance scale ``s_t`` (1 = no text CFG).
        landmark_scale: landmark guidance scale ``s_f`` (1 = no landmark CFG).
        uncond: unconditional landmark branch: "learned" tokens (LaTo) or "zero" landmarks (ablation).
        shift: apply the resolution-dependent time shift.
    """

    steps: int = 28
    text_scale: float = 6.0
    landmark_scale: float = 4.0
    uncond: str = "learned"
    shift: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.uncond not in UNCOND_MODES:
            raise ValueError(f"uncond must be one of {UNCOND_MODES}, got {self.uncond!r}")

    @classmethod
    def release(cls, steps: int = 28) -> GuidanceConfig:
        """The release's sampling: text CFG 4.0, landmark tokens in both branches (``landmark_scale`` 1)."""
        return cls(steps=steps, text_scale=4.0, landmark_scale=1.0, uncond="learned", shift=True)


def default_guidance(dit: torch.nn.Module, steps: int = 28, **overrides: Any) -> GuidanceConfig:
    """The release's guidance for a DiT without learned unconditional landmark tokens, LaTo's otherwise
    (text 6, landmark 4, learned); ``overrides`` (non-None values) replace single fields."""
    learned = getattr(dit, "has_learned_uncond", True)
    base = GuidanceConfig(steps=steps) if learned else GuidanceConfig.release(steps)
    fields = {k: v for k, v in overrides.items() if v is not None}
    return GuidanceConfig(**{**base.__dict__, **fields})


def schedule(
    steps: int, image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15, shift: bool = True
) -> list[float]:
    """``steps + 1`` flow times from 1 to 0: FLUX's ``get_schedule`` (the release's ``sampling.py``), run
    as ``diffusers.FlowMatchEulerDiscreteScheduler`` with dynamic (exponential) shifting and FLUX's sigmas
    ``linspace(1, 1/steps, steps)``; equal to the release's to 1.2e-7 (reference goldens)."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sched = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=shift,
        base_shift=base_shift,
        max_shift=max_shift,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )
    m = (max_shift - base_shift) / (4096 - 256)
    mu = m * image_seq_len + (base_shift - m * 256)
    sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu if shift else None)
    return [float(t) for t in sched.sigmas]


def combine(
    v_cc: Tensor, v_cu: Tensor | None, v_uu: Tensor | None, text_scale: float, landmark_scale: float
) -> Tensor:
    """The guidance formula of the module docstring.

    Args:
        v_cc: v(c_t, c_f).
        v_cu: v(c_t, u_f) (None when ``landmark_scale == 1``).
        v_uu: v(0_t, u_f), or v(0_t, c_f) when ``landmark_scale == 1`` (None when ``text_scale == 1``).
    """
    if v_cu is None:  # no landmark CFG
        return v_cc if v_uu is None else v_uu + text_scale * (v_cc - v_uu)
    base = v_cu if v_uu is None else v_uu + text_scale * (v_cu - v_uu)
    return base + landmark_scale * (v_cc - v_cu)


def _rep(x: Any, n: int) -> Any:
    return torch.cat([x] * n) if isinstance(x, Tensor) else x


@torch.no_grad()
def sample(
    dit: torch.nn.Module,
    noise: Tensor,
    source: Tensor,
    grid_hw: tuple[int, int],
    text: Tensor,
    text_mask: Tensor,
    null_text: Tensor | None,
    null_mask: Tensor | None,
    landmark_tokens: Tensor,
    landmark_xy: Tensor,
    image_hw: tuple[int, int],
    guidance: GuidanceConfig,
    zero_tokens: Tensor | None = None,
    callback: Any = None,
    timesteps: list[float] | None = None,
) -> Tensor:
    """Denoise ``noise`` (B, L, C) into packed target latents with landmark-aware CFG.

    Branches run as one batch per step: [cond, landmark-uncond, fully-uncond] as needed. ``null_text`` /
    ``null_mask`` are the empty prompt's embeddings (needed when ``text_scale != 1``); ``zero_tokens`` are
    the tokenizer tokens of an all-zero landmark list (needed when ``uncond == "zero"``). ``callback(i, t)``
    is called after each step (timing, progress). ``timesteps`` replaces the schedule (tests, partial runs).
    """
    g = guidance
    if g.uncond not in UNCOND_MODES:
        raise ValueError(f"uncond must be one of {UNCOND_MODES}, got {g.uncond!r}")
    b = noise.shape[0]
    use_lmk, use_txt = g.landmark_scale != 1.0, g.text_scale != 1.0
    if use_txt and (null_text is None or null_mask is None):
        raise ValueError("text_scale != 1 needs the empty prompt's embeddings (null_text, null_mask)")
    if use_lmk and g.uncond == "zero" and zero_tokens is None:
        raise ValueError("uncond='zero' needs zero_tokens")
    if use_lmk and g.uncond == "learned" and not getattr(dit, "has_learned_uncond", True):
        raise ValueError(
            f"landmark_scale {g.landmark_scale} with uncond='learned' needs learned unconditional landmark "
            "tokens, but this DiT has no learned unconditional landmark tokens (the release ships none; "
            "they would be random). Use the release's guidance (landmark_scale 1, text_scale 4), "
            "uncond='zero', or load trained tokens (dit.landmark_uncond)."
        )
    dtype = next(dit.parameters()).dtype
    # branch layout: texts, landmark tokens / positions, uncond flags
    txts, masks, toks, xys, flags = [text], [text_mask], [landmark_tokens], [landmark_xy], [False]
    if use_lmk:
        txts.append(text)
        masks.append(text_mask)
    if use_txt:
        txts.append(null_text.expand(b, -1, -1))
        masks.append(null_mask.expand(b, -1))
    n = len(txts)
    uncond_rows = [False] + [use_lmk] * (n - 1)  # every non-cond branch drops landmarks when use_lmk
    if use_lmk and g.uncond == "zero":
        zero_xy = torch.zeros_like(landmark_xy)
        toks = [landmark_tokens] + [zero_tokens.expand_as(landmark_tokens)] * (n - 1)
        xys = [landmark_xy] + [zero_xy] * (n - 1)
        flags = [False] * n
    else:
        toks, xys = [landmark_tokens] * n, [landmark_xy] * n
        flags = uncond_rows
    txt_all = torch.cat([t.to(dtype) for t in txts])
    mask_all = torch.cat(masks)
    tok_all = torch.cat([t.to(dtype) for t in toks])
    xy_all = torch.cat(xys)
    uncond_mask = torch.tensor([f for f in flags for _ in range(b)], device=noise.device)
    src_all = _rep(source.to(dtype), n)
    x = noise.to(dtype)
    ts = list(timesteps) if timesteps is not None else schedule(g.steps, x.shape[1], shift=g.shift)
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
        t = torch.full((b * n,), t_cur, device=x.device, dtype=dtype)
        v = dit(
            noisy=_rep(x, n),
            source=src_all,
            grid_hw=grid_hw,
            timesteps=t,
            text=txt_all,
            text_mask=mask_all,
            landmark_tokens=tok_all,
            landmark_xy=xy_all,
            image_hw=image_hw,
            uncond_mask=uncond_mask if uncond_mask.any() else None,
        ).float()
        parts = list(v.split(b))
        v_cc = parts[0]
        v_cu = parts[1] if use_lmk else None
        v_uu = parts[-1] if use_txt else None
        x = (x.float() + (t_next - t_cur) * combine(v_cc, v_cu, v_uu, g.text_scale, g.landmark_scale)).to(
            dtype
        )
        if callback is not None:
            callback(i, t_cur)
    return x
