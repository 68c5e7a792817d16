"""Training-step time of the LaTo DiT by landmark conditioning (paper Table 3 efficiency column).

One run, same DiT (LoRA rank 16 + adapter, AdamW), same token counts as the paper's 512 x 512 setting:
1024 source + 1024 noisy tokens, 256 text tokens; conditions: none (baseline), 68 landmark tokens (LaTo),
and a rendered landmark image (1024 extra VAE tokens, with the VAE encode of the rendering each step, and
with that latent precomputed).
The DiT is narrowed to fit a CPU (hidden 128, 1 double + 2 single blocks); modes are interleaved so load
changes hit all three alike. Prints the median step times and their ratios to the baseline.

Usage: python benchmarks/train_step.py [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from hfl.lato import canvas
from hfl.lato.dit import LaToConfig, LaToDiT
from hfl.lato.vae import FluxVAE, VAEConfig, pack
from training.lato import add_lora, flow_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--text", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (1 avoids oversubscription)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gh = gw = 32  # 512 px / 8 (VAE) / 2 (packing)
    dims = dict(hidden_size=128, num_heads=2, axes_dim=(8, 28, 28), depth=1, depth_single_blocks=2)
    vae = FluxVAE(VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1)).eval().requires_grad_(False)
    models, opts = {}, {}
    for mode in ("none", "tokens", "image"):
        m = add_lora(LaToDiT(LaToConfig.tiny(landmark_mode=mode, **dims)), rank=16)
        models[mode] = m
        opts[mode] = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    b = 1
    base = {
        "x0": torch.randn(b, gh * gw, 64), "source": torch.randn(b, gh * gw, 64), "grid_hw": (gh, gw),
        "text": torch.randn(b, args.text, 32), "text_mask": torch.ones(b, args.text),
    }  # fmt: skip
    pts = np.random.default_rng(0).uniform(150, 360, (68, 2)).astype(np.float32)

    def step(mode: str) -> float:
        t0 = time.perf_counter()
        cond = dict(base)
        if mode == "tokens":
            cond.update(landmark_tokens=torch.randn(b, 68, 32), landmark_xy=torch.from_numpy(pts)[None],
                        image_hw=(512, 512))  # fmt: skip
        elif mode == "image":
            img = canvas.render_landmarks(pts, 512, 512)
            with torch.no_grad():
                x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
                cond["landmark_latents"] = pack(vae.encode(x))
        elif mode == "image_cached":
            cond["landmark_latents"] = cached_latents
        loss = flow_loss(
            models["image" if mode == "image_cached" else mode],
            cond,
            torch.rand(b),
            torch.randn(b, gh * gw, 64),
            None,
        )
        opt = opts["image" if mode == "image_cached" else mode]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    cached_latents = torch.randn(b, gh * gw, 64)
    modes = ("none", "tokens", "image", "image_cached")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(args.steps + 1):
        for mode in modes:
            dt = step(mode)
            if i > 0:  # first round is warm-up
                times[mode].append(dt)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"threads={torch.get_num_threads()} steps={args.steps} text={args.text} src=noisy={gh * gw} tokens")
    for m, label in (
        ("none", "no landmark tokens"),
        ("tokens", "68 landmark tokens"),
        ("image", "rendered image + VAE"),
        ("image_cached", "rendered image cached"),
    ):
        print(f"{label:22s} median step {med[m] * 1000:8.1f} ms   ratio {med[m] / med['none']:.2f}x")
    print("paper Table 3: landmark tokens 1.05x, rendered landmark image 1.69x of the baseline")


if __name__ == "__main__":
    main()
