"""Landmark predictor latency: geometric (offline default) vs VLM (Qwen-VL CoT), per face on this machine.

The VLM figure is for a tiny random Qwen2.5-VL (built in a temp folder, 2 layers, hidden 32) generating
``--tokens`` new tokens, unless ``--vlm PATH`` names a real local checkpoint; a real CoT answer is about
2,000-3,000 tokens (four steps + 68 grouped points). The geometric predictor includes instruction parsing,
the 3-D fit, the closed-loop turn and the expression table.

    python benchmarks/predictor_latency.py [--vlm models/Qwen/Qwen2.5-VL-3B-Instruct --device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

INSTRUCTIONS = [
    "Turn her head 30° left.",
    "Make her facial expression happy strongly and turn her head 30° right and 30° up.",
    "make her look surprised and turn her head 60 degrees to the left",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", default="", help="local Qwen-VL folder (default: a tiny random one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokens", type=int, default=256, help="max new tokens of the VLM answer")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    a = ap.parse_args()
    import skimage.data
    import torch

    from hfl.backends.vlm import VlmBackendConfig
    from hfl.predictor.geometric import GeometricPredictor
    from inference.face import FaceFinder
    from inference.vlm_predictor import VlmPredictor

    torch.set_num_threads(1)
    reps = 5 if a.quick else a.repeats
    tokens = 64 if a.quick else a.tokens
    cf = FaceFinder().on_canvas(skimage.data.astronaut())
    geo = GeometricPredictor()
    geo.predict(None, cf.landmarks, INSTRUCTIONS[0])
    t = time.perf_counter()
    for i in range(reps * 10):
        geo.predict(None, cf.landmarks, INSTRUCTIONS[i % 3])
    geo_s = (time.perf_counter() - t) / (reps * 10)

    with tempfile.TemporaryDirectory() as tmp:
        path = a.vlm
        if not path:
            from test_vlm_clip_backends import _write_tiny_qwen

            path = str(_write_tiny_qwen(Path(tmp)))
        cfg = VlmBackendConfig(path=path, device=a.device, max_pixels=512 * 512 if a.vlm else 112 * 112)
        vlm = VlmPredictor(cfg)
        vlm.backend.cfg.max_new_tokens = tokens
        vlm.predict(cf.canvas, cf.landmarks, INSTRUCTIONS[0])  # load + warm up
        n = max(2, reps // 5)
        t = time.perf_counter()
        for i in range(n):
            vlm.predict(cf.canvas, cf.landmarks, INSTRUCTIONS[i % 3])
        vlm_s = (time.perf_counter() - t) / n
        answer_tokens = len(vlm.backend._get().processor.tokenizer(vlm.last_report[0].raw)["input_ids"])
    which = a.vlm or "tiny random Qwen2.5-VL"
    print(f"geometric predictor: {geo_s * 1e3:.2f} ms per face")
    print(f"VLM predictor ({which}, {a.device}, <= {tokens} new tokens, got {answer_tokens}):", end=" ")
    print(f"{vlm_s * 1e3:.1f} ms per face")
    print(f"ratio VLM / geometric: {vlm_s / geo_s:.0f}x (last answer: {vlm.last_report[0].source})")


if __name__ == "__main__":
    main()
