"""A tiny Qwen2.5-VL-format processor folder for CPU tests and the reference goldens (no hub access).

The real Qwen2.5-VL tokenizer cannot be downloaded here, so the Step1X-Edit text preprocessing (quote
rewriting, per-character tokenisation of quoted spans, the ``<|vision_end|>`` splice) is checked with a
byte-level BPE tokenizer in Qwen's file format whose ids agree with Qwen's where the release's code reads
them: the byte characters are ids 0..255 in GPT-2's byte order, as in Qwen's vocabulary (``!`` is 0),
``“`` is 2073, ``”`` is 854, and the special tokens sit at Qwen's ids (``<|endoftext|>`` 151643 ...
``<|video_pad|>`` 151656).
The other ids up to 151642 are unused placeholders, so the vocabulary has Qwen's size. Text is encoded
byte by byte except for a handful of merges; it carries no meaning and is only for plumbing checks.

The folder is written on demand (about 4 MB) rather than stored: :func:`write_tiny_qwen_processor`.
"""

from __future__ import annotations

import json
from pathlib import Path

# Qwen2-VL / Qwen2.5-VL chat template (with the default system prompt and ``add_vision_id``).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
OPEN_QUOTE_ID, CLOSE_QUOTE_ID = 2073, 854  # “ and ” in Qwen's vocabulary
_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _tokenizer_json() -> dict:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    vocab = {ch: i for i, ch in enumerate(b2u.values())}  # GPT-2 / Qwen byte order: "!" is 0
    merges: list[list[str]] = []

    def merge(a: str, b: str, idx: int) -> None:
        vocab[a + b] = idx
        merges.append([a, b])

    e2_80 = b2u[0xE2] + b2u[0x80]
    merge(b2u[0xE2], b2u[0x80], 300)
    merge(e2_80, b2u[0x9C], OPEN_QUOTE_ID)
    merge(e2_80, b2u[0x9D], CLOSE_QUOTE_ID)
    merge("Ġ", "t", 301)
    merge("Ġt", "h", 302)
    merge("h", "e", 303)
    used = set(vocab.values())
    vocab.update({f"<|unused{i}|>": i for i in range(151643) if i not in used})
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": c,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for c, i in SPECIAL_TOKENS.items()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": _PRETOKENIZE},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def write_tiny_qwen_processor(folder: str | Path) -> Path:
    """Write the tiny processor folder (tokenizer + Qwen2-VL image processor + chat template)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(_tokenizer_json(), ensure_ascii=False))
    decoder = {
        str(i): {
            "content": c,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for c, i in SPECIAL_TOKENS.items()
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "added_tokens_decoder": decoder,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 32768,
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    return folder


def load_tiny_qwen_processor(
    folder: str | Path, min_pixels: int = 256 * 28 * 28, max_pixels: int = 324 * 28 * 28
):
    """The processor of a folder from :func:`write_tiny_qwen_processor` (Step1X-Edit's pixel bounds).

    Built from its parts (no video processor), so it works without torchvision.
    """
    import transformers
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor

    folder = Path(folder)
    image_cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    cfg.update(min_pixels=min_pixels, max_pixels=max_pixels)
    cfg.pop("image_processor_type", None)
    cfg.pop("processor_class", None)
    image_processor = image_cls(**cfg)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    class _ImageOnlyProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, attribute_name, arg):  # no video processor here
            return None

    return _ImageOnlyProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=CHAT_TEMPLATE,
    )
