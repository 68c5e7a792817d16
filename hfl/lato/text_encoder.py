"""Text encoders producing the DiT's ``text`` input (B, L, text_dim) and ``text_mask`` (B, L).

- :class:`QwenVLTextEncoder`: Step1X-Edit's conditioner (``modules/conditioner.py``, the same file in the
  LaTo release), Qwen2.5-VL-7B-Instruct read from a local folder (``config.json``, safetensors weights,
  tokenizer and processor files). The instruction and the source image go through the chat template behind
  Step1X-Edit's prompt-enhancement prefix, with Step1X-Edit's text preprocessing
  (:func:`step1x_input_ids`): ``“ ” '`` become ``"``, every character inside a quoted span is tokenised on
  its own, and the re-tokenised text replaces the template's ids after ``<|vision_end|>``; the attention
  mask is ``ids > 0`` (so ``!``, id 0, is masked, as in the release). The image is first resized as
  ``qwen_vl_utils.fetch_image`` does (:func:`smart_resize`). The last hidden states after the first
  ``drop_prefix`` tokens (the fixed prefix, 217 with the released tokenizer) are padded to ``max_length``.
  transformers is imported lazily, so nothing here loads unless used.
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
# Ids the release's conditioner hard-codes (Qwen2.5-VL vocabulary): “, ” and <|vision_end|>.
QWEN_OPEN_QUOTE, QWEN_CLOSE_QUOTE, QWEN_VISION_END = 2073, 854, 151653
# qwen_vl_utils.fetch_image defaults: factor 28 (patch 14 x merge 2), 4 .. 16384 tokens of 28 x 28.
FETCH_FACTOR, FETCH_MIN_PIXELS, FETCH_MAX_PIXELS = 28, 4 * 28 * 28, 16384 * 28 * 28


def smart_resize(
    height: int,
    width: int,
    factor: int = FETCH_FACTOR,
    min_pixels: int = FETCH_MIN_PIXELS,
    max_pixels: int = FETCH_MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width) rounded to multiples of ``factor`` within the pixel bounds (``qwen_vl_utils``)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of a {width} x {height} image is over 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def step1x_split(text: str) -> list[str]:
    """Step1X-Edit's ``split_string`` (the one its conditioner runs): pieces to tokenise one by one.

    ``“ ” '`` become ``"``; a ``"`` past character 155 (i.e. in the instruction, after the fixed prefix)
    toggles a quoted span; outside spans text accumulates into one piece (the opening quote ends a piece,
    the closing one starts the next), inside them every character is its own piece wrapped in ``“ ”``.
    An apostrophe therefore opens a span too (``Don't`` quotes the rest of the instruction), as in the
    release.
    """
    text = text.replace("“", '"').replace("”", '"').replace("'", '"')
    out: list[str] = []
    in_quotes, temp = False, ""
    for idx, ch in enumerate(text):
        if ch == '"' and idx > 155:
            temp += ch
            if not in_quotes:
                out.append(temp)
                temp = ""
            in_quotes = not in_quotes
            continue
        if in_quotes:
            out.append("“" + ch + "”")
        else:
            temp += ch
    if temp:
        out.append(temp)
    return out


def step1x_input_ids(tokenizer: Any, templated: str, input_ids: Tensor) -> Tensor:
    """(1, L') ids: the template's ids up to ``<|vision_end|>`` (image tokens expanded by the processor),
    then the :func:`step1x_split` pieces' ids from their own ``<|vision_end|>`` on; a piece tokenised as
    ``“ x ”`` loses the two quote tokens (Step1X-Edit's conditioner)."""
    ids: list[int] = []
    for piece in step1x_split(templated):
        each = list(tokenizer(piece)["input_ids"])
        if each and each[0] == QWEN_OPEN_QUOTE and each[-1] == QWEN_CLOSE_QUOTE:
            each = each[1:-1]
        ids += each
    old = input_ids[0].tolist()
    if QWEN_VISION_END not in old or QWEN_VISION_END not in ids:
        raise ValueError("Step1X-Edit preprocessing: no <|vision_end|> token (not a Qwen2.5-VL tokenizer?)")
    merged = old[: old.index(QWEN_VISION_END)] + ids[ids.index(QWEN_VISION_END) :]
    return torch.tensor([merged], dtype=input_ids.dtype, device=input_ids.device)
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
        """Instructions + source images (RGB uint8) -> (B, max_length, hidden), (B, max_length).

        One sample at a time, as Step1X-Edit's ``Qwen25VL_7b_Embedder.forward``: every position after the
        prefix is kept (the ``ids > 0`` mask only goes to the VLM).
        """
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
            # the release hands the VLM torchvision's to_pil_image of a [0, 1] float tensor: mul(255).byte()
            u8 = torch.from_numpy(np.ascontiguousarray(image)).float().div(255).mul(255).byte().numpy()
            pil = Image.fromarray(u8)
            h, w = smart_resize(pil.height, pil.width)
            pil = pil.resize((w, h))  # qwen_vl_utils.fetch_image (PIL's default filter)
            inputs = self.processor(text=[text], images=[pil], padding=True, return_tensors="pt")
            ids = step1x_input_ids(self.processor.tokenizer, text, inputs["input_ids"]).to(device)
            out = self.model(
                input_ids=ids,
                attention_mask=(ids > 0).long(),
                pixel_values=inputs["pixel_values"].to(device),
                image_grid_thw=inputs["image_grid_thw"].to(device),
                output_hidden_states=True,
            )
            rows.append(out.hidden_states[-1][0, self.drop_prefix :])
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
