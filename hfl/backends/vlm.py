"""Qwen2.5-VL backend: facial captions (expression, intensity, pronoun) and pair semantic difference.

Real weights only, from a local folder; engines: transformers (CPU/GPU) or vLLM (GPU)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VlmBackendConfig:
    path: str = ""  # local folder of a Qwen2.5-VL checkpoint (HF format); empty = not used
    engine: str = "transformers"  # transformers | vllm
    device: str = "cpu"  # torch device for the transformers engine
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    max_new_tokens: int = 64  # generation budget per answer
    tensor_parallel_size: int = 1  # vLLM only


def check_vlm_weights(cfg: VlmBackendConfig) -> list[str]:
    """Errors naming what is missing under cfg.path (empty list when usable)."""
    raise NotImplementedError
