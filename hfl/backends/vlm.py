"""Qwen2.5-VL backend: facial captions (expression, intensity, pronoun) and pair semantic difference.

Paper (Sec. 3.1, App. B.1-B.2): a Qwen2.5-VL facial captioner gives each face one of seven expressions and an
intensity (slightly / normally / strongly, judged by visual saliency); Qwen2.5-VL scores the high-level
difference of a pair in [0, 1] and pairs below 0.4 are dropped.

Real weights only, from a local folder in Hugging Face format: ``config.json`` (model_type ``qwen2_5_vl``),
weights (``model.safetensors`` or ``model.safetensors.index.json`` and its shards, or the
``pytorch_model.bin`` equivalents), ``preprocessor_config.json``, ``tokenizer.json`` (or ``vocab.json`` +
``merges.txt``) and ``tokenizer_config.json``. Engines:

- ``transformers`` (CPU/GPU): ``Qwen2_5_VLForConditionalGeneration`` and a processor built from its parts
  (tokenizer + PIL image processor; no video processor, so torchvision is not needed), greedy decoding,
  ``batch_size`` requests per ``generate`` call with left padding.
- ``vllm`` (GPU, optional extra ``hfl[vllm]``): ``vllm.LLM(model=path, tensor_parallel_size=...)`` and
  ``LLM.generate`` with the Qwen2.5-VL chat prompt and ``multi_modal_data`` images, temperature 0.

Prompts are read at runtime from ``hfl/prompts/caption.txt`` and ``hfl/prompts/difference.txt``; both ask for
strict JSON, and the parsers here also accept fenced JSON, key/value prose and free prose.
In a build, a GPU pool hands the caption stage several videos' rows per call (``ray.gpu_batch_units``), and
the stage asks for ``batch_size`` rows' faces in one ``generate`` call (hfl.engine.runner, Stage.run_units).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled
from hfl.backends.clip import missing_weight_files, model_type_error, pil_image_processor_class, rgb_u8

PRONOUNS = ("his", "her")
ENGINES = ("transformers", "vllm")
QWEN_MODEL_TYPE = "qwen2_5_vl"
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


@dataclass
class FaceCaption:
    expression: str  # one of EXPRESSIONS
    intensity: str | None  # one of INTENSITIES; None for neutral (or when the answer gave none)
    pronoun: str | None  # "his" | "her" | None (unknown)


@dataclass
class VlmBackendConfig:
    path: str = ""  # local folder of a Qwen2.5-VL checkpoint (HF format); empty = not used
    engine: str = "transformers"  # transformers | vllm
    device: str = "cpu"  # torch device for the transformers engine
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    max_new_tokens: int = 64  # generation budget per answer
    tensor_parallel_size: int = 1  # vLLM only
    batch_size: int = 8  # requests per generate call (transformers engine; vLLM batches on its own)
    max_pixels: int = 0  # cap on pixels per image before patching (0 = the checkpoint's preprocessor setting)
    max_model_len: int = 8192  # vLLM only: context length (prompt + answer) to reserve KV cache for


# ----------------------------------------------------------------------------- prompts and chat messages

IMAGE = None  # marks an image slot in a request's parts (text parts are str)
Part = str | None


def load_prompt(name: str) -> str:
    """The prompt template ``hfl/prompts/<name>.txt`` (stripped)."""
    path = PROMPTS_DIR / f"{name}.txt"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise BackendUnavailable(f"vlm: prompt template {path} is missing") from e


def caption_parts(prompt: str) -> list[Part]:
    """User turn of a caption request: the face image, then the instruction."""
    return [IMAGE, prompt]


def difference_parts(prompt: str) -> list[Part]:
    """User turn of a difference request: both images, labelled, then the instruction."""
    return ["Image 1:", IMAGE, "Image 2:", IMAGE, prompt]


def chat_messages(
    parts: Sequence[Part], image_part: Callable[[int], dict[str, Any]] | None = None
) -> list[dict]:
    """OpenAI-style chat messages (one user turn) for `parts`; image slots become ``image_part(i)`` (default
    ``{"type": "image"}``, what the Qwen2.5-VL chat template and processor expect)."""
    content: list[dict[str, Any]] = []
    n_images = 0
    for part in parts:
        if part is IMAGE:
            content.append(image_part(n_images) if image_part else {"type": "image"})
            n_images += 1
        else:
            content.append({"type": "text", "text": part})
    return [{"role": "user", "content": content}]


QWEN_SYSTEM = "You are a helpful assistant."
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def render_qwen_prompt(parts: Sequence[Part]) -> str:
    """The Qwen2.5-VL chat prompt (default system turn, one user turn, generation prompt) for `parts`: the
    same text the checkpoint's chat template renders from ``chat_messages(parts)``. vLLM and checkpoints
    without a chat template use it."""
    body = "".join(QWEN_IMAGE if p is IMAGE else p for p in parts)
    system = f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
    return f"{system}<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class VlmRequest:
    """One generation: the user turn's parts and the images for its image slots, in order."""

    parts: list[Part]
    images: list[np.ndarray]

    def __post_init__(self) -> None:
        n_slots = sum(p is IMAGE for p in self.parts)
        if n_slots != len(self.images):
            raise ValueError(f"request has {n_slots} image slots but {len(self.images)} images")


# ----------------------------------------------------------------------------- weight checks

QWEN_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")


def check_vlm_weights(cfg: VlmBackendConfig) -> list[str]:
    """Errors naming what is missing under cfg.path (empty list when usable)."""
    errors: list[str] = []
    if cfg.engine not in ENGINES:
        errors.append(f"engine {cfg.engine!r} unknown (one of {', '.join(ENGINES)})")
    path = cfg.path
    if not path:
        return errors + ["path is empty (set it to a local folder of a Qwen2.5-VL checkpoint)"]
    if not os.path.isdir(path):
        return errors + [f"folder {path} not found (needs {', '.join(QWEN_FILES)}, tokenizer.json, weights)"]
    errors += [
        f"missing {name} in {path}" for name in QWEN_FILES if not os.path.isfile(os.path.join(path, name))
    ]
    if not _has_tokenizer_vocab(path):
        errors.append(f"missing tokenizer.json (or vocab.json + merges.txt) in {path}")
    errors += missing_weight_files(path)
    if os.path.isfile(os.path.join(path, "config.json")):
        if err := model_type_error(path, QWEN_MODEL_TYPE, "a Qwen2.5-VL checkpoint"):
            errors.append(err)
    return errors


def _has_tokenizer_vocab(path: str) -> bool:
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    return has("tokenizer.json") or (has("vocab.json") and has("merges.txt"))


# ----------------------------------------------------------------------------- answer parsing

# synonyms, "|"-separated, mapped to the canonical terms
_EXPRESSION_WORDS = {
    "neutral": "calm|expressionless|no expression|blank|relaxed",
    "happy": "happiness|joy|joyful|smile|smiling|smiles|glad|cheerful|laughing",
    "sad": "sadness|sorrow|sorrowful|unhappy|upset|crying",
    "surprised": "surprise|astonished|astonishment|amazed|shocked|shock",
    "fearful": "fear|afraid|scared|frightened|terrified|anxious",
    "disgusted": "disgust|disgusting|repulsed|revulsion",
    "angry": "anger|furious|fury|mad|rage|annoyed|irritated",
}
_INTENSITY_WORDS = {
    "slightly": "slight|a little|a bit|mildly|mild|subtly|subtle|weakly|weak|somewhat|faintly|faint",
    "normally": "normal|moderately|moderate",
    "strongly": "strong|very|extremely|extreme|intensely|intense|highly|greatly|exaggerated|pronounced",
}
# too generic to read as an intensity in free prose ("high-resolution"), fine as a JSON / key-value answer
_INTENSITY_FIELD_WORDS = {"slightly": "low", "normally": "medium|average", "strongly": "high"}
_PRONOUN_WORDS = {
    "his": "he|him|male|man|boy|masculine",
    "her": "she|hers|female|woman|girl|lady|feminine",
}

_EXPRESSION_KEYS = ("expression", "expression_type", "emotion", "facial_expression", "label", "category")
_INTENSITY_KEYS = ("intensity", "intensity_level", "level", "degree", "strength")
_PRONOUN_KEYS = ("pronoun", "gender", "sex")
_DIFFERENCE_KEYS = ("difference", "difference_score", "semantic_difference", "diff", "score", "value")


def _word_pattern(words: Sequence[str]) -> str:
    alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True) if w)
    return rf"(?<![a-z])(?:{alts})(?![a-z])"


def _vocab(*tables: dict[str, str]) -> dict[str, str]:
    """word -> canonical term, for the canonical terms and their "|"-separated synonyms."""
    return {
        w: canon for table in tables for canon, words in table.items() for w in (canon, *words.split("|"))
    }


_EXPRESSION_VOCAB = _vocab(_EXPRESSION_WORDS)
_INTENSITY_VOCAB = _vocab(_INTENSITY_WORDS)
_INTENSITY_FIELD_VOCAB = _vocab(_INTENSITY_WORDS, _INTENSITY_FIELD_WORDS)
_PRONOUN_VOCAB = _vocab(_PRONOUN_WORDS)
_NEGATION = re.compile(r"(?:\bnot|\bno|n't|\bwithout)\s+(?:\w+\s+)?$")


def _normalise_word(value: Any) -> str:
    return re.sub(r"[\s_\-]+", " ", str(value).strip().strip("\"'.!,;:").lower())


def _lookup(value: Any, vocab: dict[str, str]) -> str | None:
    """Canonical term for a value from a JSON field or key/value line (exact word, else first word found)."""
    if value is None:
        return None
    text = _normalise_word(value)
    if text in vocab:
        return vocab[text]
    return _first_mention(text, vocab)


def _first_mention(text: str, vocab: dict[str, str]) -> str | None:
    """Canonical term of the earliest non-negated vocabulary word in free `text`."""
    for m in re.finditer(_word_pattern(list(vocab)), text):
        if not _NEGATION.search(text[max(0, m.start() - 30) : m.start()]):
            return vocab[m.group(0)]
    return None


def _strip_fences(text: str) -> str:
    return re.sub(r"```[a-zA-Z0-9_-]*", " ", text)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Flat JSON objects in `text` (fenced or inline), lenient about single quotes and Python literals."""
    found = []
    for candidate in re.findall(r"\{[^{}]*\}", _strip_fences(text)):
        obj = _loads_lenient(candidate)
        if isinstance(obj, dict):
            found.append({_normalise_word(k).replace(" ", "_"): v for k, v in obj.items()})
    return found


def _loads_lenient(candidate: str) -> Any:
    attempts = (
        candidate,
        re.sub(r",\s*}", "}", candidate),
        re.sub(r"\bNone\b", "null", candidate.replace("'", '"')),
    )
    for attempt in attempts:
        try:
            return json.loads(attempt)
        except ValueError:
            continue
    return None


def _key_values(text: str) -> dict[str, str]:
    """``key: value`` / ``key = value`` / ``"key": "value"`` pairs in prose, lower-cased keys."""
    pairs: dict[str, str] = {}
    for m in re.finditer(r"([a-z][a-z_-]{1,30})[\"']?\s*[:=]\s*[\"']?([^\"'\n,;}]+)", text.lower()):
        pairs.setdefault(m.group(1).replace("-", "_"), m.group(2).strip())
    return pairs


def _field(fields: dict[str, Any], keys: Sequence[str]) -> tuple[bool, Any]:
    for key in keys:
        if key in fields:
            return True, fields[key]
    return False, None


def _caption_from_fields(fields: dict[str, Any]) -> FaceCaption | None:
    has_expr, raw_expr = _field(fields, _EXPRESSION_KEYS)
    expression = _lookup(raw_expr, _EXPRESSION_VOCAB) if has_expr else None
    if expression is None:
        return None
    _, raw_intensity = _field(fields, _INTENSITY_KEYS)
    _, raw_pronoun = _field(fields, _PRONOUN_KEYS)
    # "very happy" / "slightly sad" in the expression field itself also carries the intensity
    intensity = _lookup(raw_intensity, _INTENSITY_FIELD_VOCAB) or _first_mention(
        _normalise_word(raw_expr), _INTENSITY_VOCAB
    )
    return _caption(expression, intensity, _pronoun(raw_pronoun))


def _pronoun(value: Any) -> str | None:
    """ "his" / "her" from a pronoun field; None for unknown or for both ("his/her")."""
    if value is None:
        return None
    text = _normalise_word(value)
    found = {_PRONOUN_VOCAB[m.group(0)] for m in re.finditer(_word_pattern(list(_PRONOUN_VOCAB)), text)}
    return found.pop() if len(found) == 1 else None


def _caption(expression: str, intensity: str | None, pronoun: str | None) -> FaceCaption:
    return FaceCaption(expression, None if expression == "neutral" else intensity, pronoun)


def parse_caption(text: str) -> FaceCaption | None:
    """A FaceCaption from a captioner answer, or None when no expression can be read from it.

    Tries, in order: JSON objects (also inside code fences, single-quoted or with trailing commas),
    ``key: value`` lines, then free prose (earliest non-negated expression, intensity and pronoun words).
    Synonyms map to the canonical terms ("surprise" -> "surprised", "fear" -> "fearful", "slight" ->
    "slightly", "very" / "strong" -> "strongly", "male" -> "his", ...); "unknown" pronouns give None; neutral
    has no intensity."""
    if not isinstance(text, str) or not text.strip():
        return None
    for fields in _json_objects(text):
        if (caption := _caption_from_fields(fields)) is not None:
            return caption
    if (caption := _caption_from_fields(_key_values(text))) is not None:
        return caption
    prose = _normalise_word(_strip_fences(text))
    expression = _first_mention(prose, _EXPRESSION_VOCAB)
    if expression is None:
        return None
    return _caption(
        expression, _first_mention(prose, _INTENSITY_VOCAB), _first_mention(prose, _PRONOUN_VOCAB)
    )


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"


def _number_from_text(text: str) -> float | None:
    """A [0, 1] value from free text: "a/b" or "a out of b" fractions, "x%" percentages, a number right after
    a difference/score keyword, else the first number written with a decimal point, else the first number."""
    s = text.lower()
    if m := re.search(rf"({_NUMBER})\s*(?:/|out of)\s*({_NUMBER})", s):
        den = float(m.group(2))
        return float(m.group(1)) / den if den > 0 else None
    if m := re.search(rf"({_NUMBER})\s*%", s):
        return float(m.group(1)) / 100.0
    if m := re.search(rf"(?:difference|score|diff)[^0-9+\-.]{{0,25}}({_NUMBER})", s):
        return float(m.group(1))
    if m := re.search(r"[-+]?\d*\.\d+", s):
        return float(m.group(0))
    if m := re.search(_NUMBER, s):
        return float(m.group(0))
    return None


def _difference_value(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _number_from_text(value)
    return None


def parse_difference(text: str) -> float | None:
    """A difference score in [0, 1] from an answer such as ``{"difference": 0.7}``, "7/10", "70%" or "0.7";
    values outside [0, 1] are clipped; None when no finite number can be read."""
    if not isinstance(text, str) or not text.strip():
        return None
    value = None
    for fields in _json_objects(text):
        found, raw = _field(fields, _DIFFERENCE_KEYS)
        if found and (value := _difference_value(raw)) is not None:
            break
    if value is None:
        value = _number_from_text(_strip_fences(text))
    if value is None or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, value))


# ----------------------------------------------------------------------------- engines


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.float32 if str(device).startswith("cpu") else "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"vlm dtype {name!r} unknown (auto, float32, bfloat16, float16)") from None


def _dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` dtype argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _image_only_processor_class() -> type:
    """Qwen2_5_VLProcessor that accepts ``video_processor=None``: the video processor needs torchvision, and
    images never use it."""
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return ImageOnlyQwen2_5_VLProcessor


def build_qwen_processor(path: str, max_pixels: int = 0) -> Any:
    """A Qwen2.5-VL processor for images from the checkpoint folder: its tokenizer (left padding, for batched
    generation), its PIL image processor (``max_pixels`` > 0 caps the pixels per image) and its chat template
    (the built-in Qwen2.5-VL format when the folder has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    kwargs = {"max_pixels": int(max_pixels)} if max_pixels > 0 else {}
    image_processor = pil_image_processor_class("Qwen2VLImageProcessor").from_pretrained(path, **kwargs)
    template = getattr(tokenizer, "chat_template", None) or _folder_chat_template(path)
    return _image_only_processor_class()(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=template
    )


def _folder_chat_template(path: str) -> str | None:
    """The chat template stored next to the tokenizer (chat_template.jinja or chat_template.json), if any."""
    jinja = os.path.join(path, "chat_template.jinja")
    if os.path.isfile(jinja):
        return Path(jinja).read_text(encoding="utf-8")
    js = os.path.join(path, "chat_template.json")
    if os.path.isfile(js):
        try:
            return json.loads(Path(js).read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            return None
    return None


class TransformersEngine:
    """Qwen2_5_VLForConditionalGeneration + processor on one torch device; greedy, batched, left-padded."""

    def __init__(self, cfg: VlmBackendConfig) -> None:
        try:
            import torch  # noqa: F401
            from transformers import Qwen2_5_VLForConditionalGeneration
        except ImportError as e:
            raise BackendUnavailable("vlm transformers engine needs 'torch' and 'transformers>=4.49'") from e
        self.cfg = cfg
        self.processor = build_qwen_processor(cfg.path, cfg.max_pixels)
        dtype = _torch_dtype(cfg.dtype, cfg.device)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.path, **_dtype_kwarg(dtype))
        self.model = model.to(cfg.device).eval()

    def prompt(self, parts: Sequence[Part]) -> str:
        """Chat-template text of one request (image slots: <|vision_start|><|image_pad|><|vision_end|>)."""
        if not self.processor.chat_template:
            return render_qwen_prompt(parts)
        return self.processor.apply_chat_template(
            chat_messages(parts), tokenize=False, add_generation_prompt=True
        )

    def generate(self, requests: Sequence[VlmRequest]) -> list[str]:
        """Decoded answers, one per request, ``cfg.batch_size`` requests per generate call."""
        step = max(1, int(self.cfg.batch_size))
        answers: list[str] = []
        for i in range(0, len(requests), step):
            answers += self._generate_batch(requests[i : i + step])
        return answers

    def _generate_batch(self, requests: Sequence[VlmRequest]) -> list[str]:
        import torch

        inputs = self.processor(
            text=[self.prompt(r.parts) for r in requests],
            images=[[rgb_u8(im) for im in r.images] for r in requests],
            padding=True,
            return_tensors="pt",
        ).to(self.model.device)
        pad_id = self.processor.tokenizer.pad_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=int(self.cfg.max_new_tokens),
                do_sample=False,
                pad_token_id=pad_id if pad_id is not None else self.processor.tokenizer.eos_token_id,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise BackendUnavailable(
            "vlm engine 'vllm' needs package 'vllm' (GPU only: pip install 'hfl[vllm]'); "
            "use engine 'transformers' on machines without it"
        ) from e
    return vllm


class VllmEngine:
    """vLLM offline engine; all requests of one call go to ``LLM.generate`` together (vLLM batches them)."""

    def __init__(self, cfg: VlmBackendConfig) -> None:
        vllm = _import_vllm()
        kwargs: dict[str, Any] = {
            "model": cfg.path,
            "tensor_parallel_size": int(cfg.tensor_parallel_size),
            "dtype": cfg.dtype,
            "max_model_len": int(cfg.max_model_len),
            "limit_mm_per_prompt": {"image": 2},
            "seed": 0,
        }
        if cfg.max_pixels > 0:
            kwargs["mm_processor_kwargs"] = {"max_pixels": int(cfg.max_pixels)}
        self.llm = vllm.LLM(**kwargs)
        self.sampling = vllm.SamplingParams(temperature=0.0, max_tokens=int(cfg.max_new_tokens))

    @staticmethod
    def prompt(parts: Sequence[Part]) -> str:
        return render_qwen_prompt(parts)

    def generate(self, requests: Sequence[VlmRequest]) -> list[str]:
        from PIL import Image

        prompts = [
            {
                "prompt": self.prompt(r.parts),
                "multi_modal_data": {"image": [Image.fromarray(rgb_u8(im)) for im in r.images]},
            }
            for r in requests
        ]
        outputs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        return [o.outputs[0].text if o.outputs else "" for o in outputs]


# ----------------------------------------------------------------------------- backend


class QwenVL(DropsModelWhenPickled):
    """Qwen2.5-VL facial captioner and pair-difference scorer. The engine (model + processor, or vLLM) loads
    on first use, once per instance, and is dropped when the backend is pickled into Ray workers."""

    name = "qwen2.5-vl"

    def __init__(self, cfg: VlmBackendConfig) -> None:
        if cfg.engine not in ENGINES:
            raise ValueError(f"vlm engine {cfg.engine!r} unknown (one of {', '.join(ENGINES)})")
        self.cfg = cfg
        self.caption_prompt = load_prompt("caption")
        self.difference_prompt = load_prompt("difference")
        self._lock = threading.Lock()
        self._model: TransformersEngine | VllmEngine | None = None

    def load(self) -> None:
        """Load the engine now (workers call this in setup so the first unit does not pay for it)."""
        self._get()

    def _get(self) -> TransformersEngine | VllmEngine:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> TransformersEngine | VllmEngine:
        errors = check_vlm_weights(self.cfg)
        if errors:
            raise BackendUnavailable("vlm: " + "; ".join(errors))
        return VllmEngine(self.cfg) if self.cfg.engine == "vllm" else TransformersEngine(self.cfg)

    def generate(self, requests: Sequence[VlmRequest]) -> list[str]:
        """Raw answers, one per request (empty input: no model load)."""
        return self._get().generate(list(requests)) if requests else []

    def caption_answers(self, images: list[np.ndarray]) -> list[str]:
        """Raw captioner answers, one per image."""
        return self.generate([VlmRequest(caption_parts(self.caption_prompt), [im]) for im in images])

    def difference_answers(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
        """Raw difference answers, one per (image 1, image 2) pair."""
        return self.generate([VlmRequest(difference_parts(self.difference_prompt), [a, b]) for a, b in pairs])

    def caption(self, images: list[np.ndarray]) -> list[FaceCaption | None]:
        """Expression, intensity and pronoun per face image; None where the answer cannot be parsed."""
        return [parse_caption(t) for t in self.caption_answers(images)]

    def difference(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float | None]:
        """High-level facial difference in [0, 1] per pair; None where the answer cannot be parsed."""
        return [parse_difference(t) for t in self.difference_answers(pairs)]


def load_vlm(cfg: VlmBackendConfig) -> QwenVL:
    """A Qwen2.5-VL backend for cfg.path (engine loads lazily); BackendUnavailable naming what is missing."""
    errors = check_vlm_weights(cfg)
    if errors:
        raise BackendUnavailable("vlm: " + "; ".join(errors))
    return QwenVL(cfg)
