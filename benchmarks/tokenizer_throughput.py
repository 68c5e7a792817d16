"""Landmark-tokenizer training throughput (samples/s) on this machine, one run.

Times full training steps (encode, EMA quantize with dead-code reset, decode, Eq. 2 loss, backward, AdamW)
on real landmark batches shaped like the trainer's, for the CPU recipe (training/tokenizer_cpu.yaml) and a
half-width variant; prints samples/s and the ratio between them. Full size (3072-d, 8192 codes) is a GPU
configuration and is not timed here.

Usage: python benchmarks/tokenizer_throughput.py [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from hfl.lato.tokenizer import LandmarkTokenizer, TokenizerConfig

CONFIGS = {
    "cpu recipe (64/128 ch, d=128, m=8192)": TokenizerConfig(
        channels=(64, 128), code_dim=128, codebook_size=8192
    ),
    "half width (32/64 ch, d=64, m=8192)": TokenizerConfig(
        channels=(32, 64), code_dim=64, codebook_size=8192
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (1 avoids oversubscription)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rates = {}
    for name, cfg in CONFIGS.items():
        model = LandmarkTokenizer(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.rand(args.batch, 68, 2) * 1.2 - 0.6
        for i in range(args.steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            out = model(x + 0.01 * torch.randn_like(x))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        rates[name] = args.steps * args.batch / (time.perf_counter() - t0)
        print(
            f"{name:40s} {rates[name]:8.1f} samples/s (batch {args.batch}, threads {torch.get_num_threads()})"
        )
    a, b = rates.values()
    print(f"ratio half-width / cpu recipe: {b / a:.2f}x")


if __name__ == "__main__":
    main()
