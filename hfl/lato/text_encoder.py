"""Text encoders producing the DiT's ``text`` input (B, L, text_dim) and ``text_mask`` (B, L).

- :class:`QwenVLTextEncoder`: Step1X-Edit's conditioner, Qwen2.5-VL-7B-Instruct read from a local folder
  (``config.json``, safetensors weights, tokenizer and processor files). The instruction and the source
  image go through the chat template behind Step1X-Edit's prompt-enhancement prefix; the last hidden
  states after the first ``drop_prefix`` tokens (the fixed prefix, 217 with the released tokenizer) are
  padded to ``max_length``. transformers is imported lazily, so nothing here loads unless used.
- :class:`ByteTextEncoder`: a frozen, seeded byte-embedding table. Only for tiny CPU configs and tests,
  where no VLM is available; it carries the instruction's bytes, not its meaning.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

STEP1X_PREFIX = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions '
    "suitable for image generation. Evaluate the level of detail in the user prompt:\n"
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.\n"
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.\n\n"
    "Here are examples of how to transform or refine prompts:\n"
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, "
    "sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.\n"
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing "
    "street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by "
    "towering glass skyscrapers.\n\n"
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:\nUser Prompt:"
)

QWEN_REQUIRED = ("config.json",)
QWEN_PROCESSOR_FILES = ("tokenizer_config.json", "preprocessor_config.json")


def _pad_rows(rows: list[Tensor], max_length: int, dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    out = torch.zeros(len(rows), max_length, dim, dtype=dtype)
    mask = torch.zeros(len(rows), max_length, dtype=torch.long)
    for i, r in enumerate(rows):
        n = min(max_length, r.shape[0])
        out[i, :n] = r[:n].to(dtype)
        mask[i, :n] = 1
    return out, mask


class QwenVLTextEncoder(nn.Module):
    """Frozen Qwen2.5-VL conditioner (see module docstring).

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration``.
        processor: its ``AutoProcessor`` (None: only :meth:`encode_ids` is usable).
        max_length: padded token length of the output.
        drop_prefix: leading tokens (the fixed prompt prefix) dropped from the hidden states.
    """

    def __init__(
        self, model: nn.Module, processor: Any = None, max_length: int = 640, drop_prefix: int = 217
    ):
        super().__init__()
        self.model, self.processor = model, processor
        self.max_length, self.drop_prefix = max_length, drop_prefix
        self.model.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "text_config", cfg).hidden_size

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.bfloat16,
        device: str = "cpu",
        with_processor: bool = True,
        **kw: Any,
    ) -> QwenVLTextEncoder:
        """Load from a local Hugging Face folder; raises FileNotFoundError naming what is missing."""
        from hfl.lato.loaders import require_files, weight_files

        path = Path(path)
        require_files(path, QWEN_REQUIRED + ((QWEN_PROCESSOR_FILES) if with_processor else ()), "Qwen2.5-VL")
        weight_files(path, "Qwen2.5-VL")
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(path), dtype=dtype, local_files_only=True
        )
        processor = None
        if with_processor:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(
                str(path), local_files_only=True, min_pixels=256 * 28 * 28, max_pixels=324 * 28 * 28
            )
        return cls(model.to(device).eval(), processor, **kw)

    @torch.no_grad()
    def encode_ids(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **vision: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Hidden states of already-tokenised inputs (one row per sample), prefix dropped and padded."""
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **vision
        )
        hs = out.hidden_states[-1]
        rows = []
        for i in range(hs.shape[0]):
            keep = hs[i] if attention_mask is None else hs[i][attention_mask[i].bool()]
            rows.append(keep[self.drop_prefix :])
        return _pad_rows(rows, self.max_length, hs.shape[-1], hs.dtype)

    @torch.no_grad()
    def forward(self, prompts: list[str], images: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Instructions + source images (RGB uint8) -> (B, max_length, hidden), (B, max_length)."""
        if self.processor is None:
            raise RuntimeError("QwenVLTextEncoder was loaded without a processor")
        from PIL import Image

        device = next(self.model.parameters()).device
        rows = []
        for prompt, image in zip(prompts, images, strict=True):
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": STEP1X_PREFIX},
                        {"type": "image"},
                        {"type": "text", "text": prompt},
                    ],
                }
            ]
            text = self.processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, add_vision_id=True
            )
            inputs = self.processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt").to(
                device
            )
            emb, mask = self.encode_ids(
                inputs["input_ids"],
                inputs["attention_mask"],
                pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"],
            )
            rows.append(emb[0, : int(mask[0].sum())])
        return _pad_rows(rows, self.max_length, self.hidden_size, rows[0].dtype)


class ByteTextEncoder(nn.Module):
    """Frozen seeded embedding of UTF-8 bytes plus sinusoidal positions (tiny configs and tests only).

    Args:
        dim: output width (the DiT's ``text_dim``).
        max_length: padded length.
        seed: table seed.
    """

    def __init__(self, dim: int, max_length: int = 64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(256, dim, generator=g))
        pos = torch.arange(max_length)[:, None] / (10000 ** (torch.arange(0, dim, 2) / dim))
        pe = torch.zeros(max_length, dim)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos[:, : dim // 2])
        self.register_buffer("pos", pe / math.sqrt(dim))
        self.max_length = max_length

    @torch.no_grad()
    def forward(self, prompts: list[str], images: list[np.ndarray] | None = None) -> tuple[Tensor, Tensor]:
        rows = []
        for p in prompts:
            b = torch.tensor(list(p.encode("utf-8"))[: self.max_length] or [0], dtype=torch.long)
            rows.append(self.table[b] + self.pos[: len(b)])
        return _pad_rows(rows, self.max_length, self.table.shape[1], self.table.dtype)
