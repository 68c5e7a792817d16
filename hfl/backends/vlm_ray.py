"""Ray Data batch path for the Qwen2.5-VL captioner / difference scorer on GPU clusters (``ray.data.llm``).

The in-process backend (``hfl.backends.vlm.QwenVL``) runs one engine per Ray worker. On a GPU cluster, Ray
Data LLM instead runs a pool of vLLM engine actors and streams a dataset through them: rows are turned into
OpenAI-style chat messages (images as PNG data URLs), a CPU stage resolves the images for the model, vLLM
generates, and the answers are parsed with the same parsers as the in-process backend.

How a cluster user runs it (needs ``pip install 'ray[data,llm]==2.60.0' 'hfl[vllm]'`` on the GPU nodes and
the checkpoint folder at the same local path on every node, or on shared storage)::

    import ray
    from hfl.backends.vlm import VlmBackendConfig
    from hfl.backends.vlm_ray import build_caption_processor

    ray.init(address="auto")
    cfg = VlmBackendConfig(path="/models/Qwen2.5-VL-7B-Instruct", engine="vllm", tensor_parallel_size=1)
    ds = ray.data.read_parquet("faces.parquet")  # columns: key, image (RGB uint8 H x W x 3 tensors)
    processor = build_caption_processor(cfg, image_column="image", keep_columns=("key",), concurrency=4)
    processor(ds).write_parquet("captions/")  # columns: key, expression, intensity, pronoun, caption_text

``concurrency`` is the number of vLLM replicas (each takes ``tensor_parallel_size`` GPUs); ``batch_size`` the
rows per engine call. ``build_difference_processor`` does the same for pairs (two image columns) and writes
``difference`` (float in [0, 1] or None) and ``difference_text``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from hfl.backends.base import BackendUnavailable
from hfl.backends.clip import rgb_u8
from hfl.backends.vlm import (
    VlmBackendConfig,
    caption_parts,
    chat_messages,
    check_vlm_weights,
    difference_parts,
    load_prompt,
    parse_caption,
    parse_difference,
)


def import_ray_llm() -> Any:
    """The ``ray.data.llm`` module, or BackendUnavailable when it (or vLLM, which it drives) is missing."""
    try:
        import ray.data.llm as ray_llm
    except ImportError as e:
        raise BackendUnavailable(
            f"vlm Ray Data path needs 'ray[data,llm]' ({e}); on the cluster: pip install 'ray[llm]'"
        ) from e
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(
            "vlm Ray Data path needs package 'vllm' (GPU only: pip install 'hfl[vllm]')"
        ) from e
    return ray_llm


def image_data_url(image: np.ndarray) -> str:
    """An RGB uint8 image as a lossless PNG ``data:`` URL (the image format vLLM's chat parser accepts)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb_u8(np.asarray(image))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_url_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _sampling_params(cfg: VlmBackendConfig) -> dict[str, Any]:
    return {"temperature": 0.0, "max_tokens": int(cfg.max_new_tokens)}


class CaptionRequest:
    """Ray Data preprocess: a row with an image column -> the caption chat request (plus kept columns)."""

    def __init__(self, cfg: VlmBackendConfig, image_column: str = "image", keep_columns: Sequence[str] = ()):
        self.prompt = load_prompt("caption")
        self.sampling = _sampling_params(cfg)
        self.image_column = image_column
        self.keep_columns = tuple(keep_columns)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        url = image_data_url(row[self.image_column])
        messages = chat_messages(caption_parts(self.prompt), lambda _i: _image_url_part(url))
        return {**_kept(row, self.keep_columns), "messages": messages, "sampling_params": self.sampling}


class DifferenceRequest:
    """Ray Data preprocess: a row with two image columns -> the difference chat request (+ kept columns)."""

    def __init__(
        self,
        cfg: VlmBackendConfig,
        image_columns: tuple[str, str] = ("src_image", "tgt_image"),
        keep_columns: Sequence[str] = (),
    ):
        self.prompt = load_prompt("difference")
        self.sampling = _sampling_params(cfg)
        self.image_columns = image_columns
        self.keep_columns = tuple(keep_columns)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        urls = [image_data_url(row[c]) for c in self.image_columns]
        messages = chat_messages(difference_parts(self.prompt), lambda i: _image_url_part(urls[i]))
        return {**_kept(row, self.keep_columns), "messages": messages, "sampling_params": self.sampling}


class CaptionAnswer:
    """Ray Data postprocess: generated text -> expression, intensity, pronoun columns (None if unparsable)."""

    def __init__(self, keep_columns: Sequence[str] = ()):
        self.keep_columns = tuple(keep_columns)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        text = str(row.get("generated_text") or "")
        cap = parse_caption(text)
        return {
            **_kept(row, self.keep_columns),
            "expression": cap.expression if cap else None,
            "intensity": cap.intensity if cap else None,
            "pronoun": cap.pronoun if cap else None,
            "caption_text": text,
        }


class DifferenceAnswer:
    """Ray Data postprocess: the generated text -> ``difference`` in [0, 1] (None if unparsable)."""

    def __init__(self, keep_columns: Sequence[str] = ()):
        self.keep_columns = tuple(keep_columns)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        text = str(row.get("generated_text") or "")
        return {
            **_kept(row, self.keep_columns),
            "difference": parse_difference(text),
            "difference_text": text,
        }


def _kept(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {c: row[c] for c in columns if c in row}


def engine_processor_config(
    cfg: VlmBackendConfig,
    *,
    batch_size: int = 32,
    concurrency: int | tuple[int, int] = 1,
    engine_kwargs: dict[str, Any] | None = None,
) -> Any:
    """The ``vLLMEngineProcessorConfig`` for cfg's checkpoint: chat template, tokenize and detokenize stages
    and the multimodal preparation stage on; vLLM engine arguments from cfg (overridden by engine_kwargs)."""
    errors = check_vlm_weights(cfg)
    if errors:
        raise BackendUnavailable("vlm: " + "; ".join(errors))
    ray_llm = import_ray_llm()
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": int(cfg.tensor_parallel_size),
        "dtype": cfg.dtype,
        "max_model_len": int(cfg.max_model_len),
        "limit_mm_per_prompt": {"image": 2},
    }
    if cfg.max_pixels > 0:
        kwargs["mm_processor_kwargs"] = {"max_pixels": int(cfg.max_pixels)}
    kwargs.update(engine_kwargs or {})
    return ray_llm.vLLMEngineProcessorConfig(
        model_source=cfg.path,
        engine_kwargs=kwargs,
        prepare_multimodal_stage={"enabled": True},
        chat_template_stage={"enabled": True},
        tokenize_stage={"enabled": True},
        detokenize_stage={"enabled": True},
        batch_size=int(batch_size),
        concurrency=concurrency,
    )


def _build(config: Any, preprocess: Any, postprocess: Any) -> Any:
    ray_llm = import_ray_llm()
    build = getattr(ray_llm, "build_processor", None) or ray_llm.build_llm_processor  # renamed in Ray 2.5x
    return build(config, preprocess=preprocess, postprocess=postprocess)


def build_caption_processor(
    cfg: VlmBackendConfig,
    *,
    image_column: str = "image",
    keep_columns: Sequence[str] = ("key",),
    batch_size: int = 32,
    concurrency: int | tuple[int, int] = 1,
    engine_kwargs: dict[str, Any] | None = None,
) -> Any:
    """A Ray Data LLM processor: dataset of face images -> expression, intensity, pronoun, caption_text
    (plus keep_columns). Call it on a ``ray.data.Dataset``."""
    config = engine_processor_config(
        cfg, batch_size=batch_size, concurrency=concurrency, engine_kwargs=engine_kwargs
    )
    return _build(config, CaptionRequest(cfg, image_column, keep_columns), CaptionAnswer(keep_columns))


def build_difference_processor(
    cfg: VlmBackendConfig,
    *,
    image_columns: tuple[str, str] = ("src_image", "tgt_image"),
    keep_columns: Sequence[str] = ("key",),
    batch_size: int = 32,
    concurrency: int | tuple[int, int] = 1,
    engine_kwargs: dict[str, Any] | None = None,
) -> Any:
    """A Ray Data LLM processor: dataset of image pairs -> difference, difference_text (plus keep_columns)."""
    config = engine_processor_config(
        cfg, batch_size=batch_size, concurrency=concurrency, engine_kwargs=engine_kwargs
    )
    return _build(config, DifferenceRequest(cfg, image_columns, keep_columns), DifferenceAnswer(keep_columns))
