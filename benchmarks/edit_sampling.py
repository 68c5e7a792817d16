"""``hfl edit`` sampling time per step, with and without landmark-aware CFG.

Branches per step (``hfl.lato.sampling``): s_t != 1 and s_f != 1 -> 3 DiT passes (as one batch), one of the
two -> 2, neither -> 1. Default model: a tiny LaTo (``training/lato_tiny.yaml`` geometry, random weights)
on the CPU at 64 x 64 (its tiny VAE downsamples 2x, so 256 packed tokens per image, 612 in the sequence
with text and landmarks); ``--size`` raises the resolution; ``--release CFG --weights DIR
--device cuda`` times the real model (bf16).

    python benchmarks/edit_sampling.py [--steps 8] [--size 128] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = [
    ("text + landmark CFG (s_t=6, s_f=4, learned uncond)", 6.0, 4.0, "learned"),
    ("text + landmark CFG (s_t=6, s_f=4, zero uncond)", 6.0, 4.0, "zero"),
    ("text CFG only (s_t=6, s_f=1)", 6.0, 1.0, "learned"),
    ("landmark CFG only (s_t=1, s_f=4)", 1.0, 4.0, "learned"),
    ("no CFG (s_t=1, s_f=1)", 1.0, 1.0, "learned"),
]


def tiny_bundle(size: int):
    import torch
    import yaml
    from accelerate.utils import set_seed

    from inference.model import LaToBundle
    from training.lato import build_parts

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "training" / "lato_tiny.yaml").read_text())
    set_seed(0)
    p = build_parts(cfg)
    return LaToBundle(
        p.dit, p.vae, p.text_encoder, p.tokenizer, size, size, torch.device("cpu"), torch.float32
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="image side for the tiny model (multiple of 16)")
    ap.add_argument("--release", default="", help="release config (real weights)")
    ap.add_argument("--weights", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    import skimage.data
    import torch

    from hfl.lato.sampling import GuidanceConfig
    from inference.pipeline import LaToEditor

    torch.set_num_threads(a.threads)
    if a.release:
        from inference.model import load_release
        from training.common import load_recipe

        cfg = load_recipe(a.release)
        cfg["root"] = a.weights or cfg.get("root", ".")
        bundle = load_release(cfg, a.device)
    else:
        bundle = tiny_bundle(a.size)
    ed = LaToEditor(bundle)
    img = skimage.data.astronaut()
    steps = 2 if a.quick else a.steps
    ed.edit(img, "Turn her head 30° left.", guidance=GuidanceConfig(steps=1))  # warm up
    base = None
    print(f"model: {'release' if a.release else f'tiny LaTo {a.size}x{a.size}'} on {a.device}, {steps} steps")
    for name, st, sf, unc in SETTINGS:
        g = GuidanceConfig(steps=steps, text_scale=st, landmark_scale=sf, uncond=unc)
        runs = [ed.edit(img, "Turn her head 30° left.", guidance=g).timings["s_per_step"] for _ in range(3)]
        s = min(runs)
        base = base or s
        print(f"{name:55s} {s * 1e3:8.2f} ms/step  ({s / base:.2f}x of the first row)")


if __name__ == "__main__":
    main()
