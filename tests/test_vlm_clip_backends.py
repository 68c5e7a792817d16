"""CLIP and Qwen2.5-VL backends: real loaders on tiny random checkpoints written in the real folder layout
(plumbing only: random weights answer garbage), answer parsers on hand-written answers, the vLLM and Ray Data
paths against stand-in modules (vLLM is GPU-only and not installed here)."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch  # a dev dependency: missing is an error, not a skip

from hfl.backends.base import BackendUnavailable
from hfl.backends.clip import ClipBackendConfig, ClipImageEmbedder, check_clip_weights, cosine, load_clip
from hfl.backends.vlm import (
    QWEN_IMAGE,
    FaceCaption,
    QwenVL,
    VlmBackendConfig,
    caption_parts,
    check_vlm_weights,
    difference_parts,
    load_prompt,
    load_vlm,
    parse_caption,
    parse_difference,
    render_qwen_prompt,
)
from hfl.labels import EXPRESSIONS, INTENSITIES
from hfl.lato.qwen_tiny import CHAT_TEMPLATE


@pytest.fixture(scope="module")
def faces(carphone_frames: list[np.ndarray], astronaut: np.ndarray) -> list[np.ndarray]:
    """Real faces: two carphone frames (a man) and the astronaut's face crop (a woman)."""
    return [carphone_frames[1], carphone_frames[6], np.ascontiguousarray(astronaut[30:230, 120:320])]


# ============================================================================= CLIP


def _write_tiny_clip(folder: Path) -> Path:
    """A random CLIPModel (tiny CLIPConfig) and its image processor, saved like a hub CLIP folder."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",  # as in openai/clip-vit-* folders
                "crop_size": {"height": 32, "width": 32},
                "size": {"shortest_edge": 32},
                "do_center_crop": True,
                "do_normalize": True,
                "do_resize": True,
                "do_convert_rgb": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_embeds_real_faces(clip_dir: Path, faces: list[np.ndarray]) -> None:
    assert check_clip_weights(ClipBackendConfig(path=str(clip_dir))) == []
    emb = load_clip(ClipBackendConfig(path=str(clip_dir), batch_size=2))
    assert isinstance(emb, ClipImageEmbedder) and emb.name == "clip"
    assert emb._model is None  # lazy
    e = emb.embed(faces)
    assert e.shape == (3, 16) and e.dtype == np.float32 and emb.dim == 16
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # deterministic, and independent of how images are batched (batch_size 2 split 3 images as 2 + 1)
    np.testing.assert_allclose(emb.embed(faces), e, atol=1e-6)
    np.testing.assert_allclose(emb.embed(faces[2:]), e[2:], atol=1e-5)
    assert cosine(e[0], e[0]) == pytest.approx(1.0)
    assert cosine(e[0], e[2]) < 0.9999  # different faces, different embeddings
    assert emb.embed([]).shape == (0, 16)


def test_clip_pickle_drops_model_and_reloads(clip_dir: Path, faces: list[np.ndarray]) -> None:
    emb = load_clip(ClipBackendConfig(path=str(clip_dir)))
    ref = emb.embed(faces[:1])
    assert emb._model is not None
    clone = pickle.loads(pickle.dumps(emb))
    assert clone._model is None and emb._model is not None
    np.testing.assert_allclose(clone.embed(faces[:1]), ref, atol=1e-6)


def test_clip_rejects_non_rgb(clip_dir: Path) -> None:
    emb = load_clip(ClipBackendConfig(path=str(clip_dir)))
    with pytest.raises(ValueError, match="RGB"):
        emb.embed([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        emb.embed([np.zeros((8, 8, 3), np.float32)])


def test_clip_missing_files_are_named(tmp_path: Path) -> None:
    assert "path is empty" in check_clip_weights(ClipBackendConfig())[0]
    gone = tmp_path / "nowhere"
    assert str(gone) in check_clip_weights(ClipBackendConfig(path=str(gone)))[0]
    errs = check_clip_weights(ClipBackendConfig(path=str(tmp_path)))
    text = "\n".join(errs)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin"):
        assert name in text
    assert all(str(tmp_path) in e for e in errs)
    with pytest.raises(BackendUnavailable, match="config.json"):
        load_clip(ClipBackendConfig(path=str(tmp_path)))


def test_clip_sharded_index_and_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (tmp_path / "preprocessor_config.json").write_text("{}")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    errs = check_clip_weights(ClipBackendConfig(path=str(tmp_path)))
    assert any("model-00002-of-00002.safetensors" in e for e in errs)
    assert not any("model-00001-of-00002" in e for e in errs)
    assert any("model_type 'qwen2_5_vl'" in e for e in errs)


def test_cosine() -> None:
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == 0.0
    assert cosine(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == pytest.approx(1.0)
    assert cosine(np.zeros(3), np.ones(3)) == 0.0
    with pytest.raises(ValueError):
        cosine(np.ones(2), np.ones(3))


# ============================================================================= Qwen2.5-VL: tiny checkpoint

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _write_tiny_tokenizer(folder: Path) -> dict[str, int]:
    """A small byte-level BPE tokenizer with Qwen's special tokens, saved as tokenizer.json +
    tokenizer_config.json; returns the special tokens' ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=QWEN_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([load_prompt("caption"), load_prompt("difference")], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return {s: fast.convert_tokens_to_ids(s) for s in QWEN_SPECIAL} | {"vocab_size": len(fast)}


def _write_tiny_qwen(folder: Path) -> Path:
    """A random Qwen2.5-VL (2 text layers, 2 vision blocks, hidden 32) in the hub folder layout: config.json,
    model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.json and a
    preprocessor_config.json in the Qwen2.5-VL release format (min_pixels / max_pixels)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = _write_tiny_tokenizer(folder)
    text = dict(
        vocab_size=ids["vocab_size"],
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=32,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    # the chat template shipped with Qwen2.5-VL-*-Instruct (chat_template.json)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": 56 * 56,
                "max_pixels": 112 * 112,  # release: 12845056; tiny here to keep image token counts small
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_qwen(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def qwen(qwen_dir: Path) -> QwenVL:
    vlm = load_vlm(VlmBackendConfig(path=str(qwen_dir), max_new_tokens=6, batch_size=2))
    vlm.load()
    return vlm


def test_qwen_folder_passes_check(qwen_dir: Path) -> None:
    assert check_vlm_weights(VlmBackendConfig(path=str(qwen_dir))) == []


def test_qwen_prompt_has_image_tokens(qwen: QwenVL, faces: list[np.ndarray]) -> None:
    engine = qwen._get()
    for parts, n_images in (
        (caption_parts(qwen.caption_prompt), 1),
        (difference_parts(qwen.difference_prompt), 2),
    ):
        text = engine.prompt(parts)
        # the checkpoint's chat template and the built-in renderer (used by vLLM) agree
        assert text == render_qwen_prompt(parts)
        assert text.count(QWEN_IMAGE) == n_images and text.endswith("<|im_start|>assistant\n")
    assert "Image 1:" in engine.prompt(difference_parts("x")) and "Image 2:" in engine.prompt(
        difference_parts("x")
    )
    # the processor expands each <|image_pad|> into one token per merged 2x2 patch group of that image
    proc = engine.processor
    batch = proc(
        text=[engine.prompt(caption_parts("a")), engine.prompt(difference_parts("b"))],
        images=[[faces[2]], [faces[0], faces[1]]],
        padding=True,
        return_tensors="pt",
    )
    image_id = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    per_image = (batch["image_grid_thw"].prod(-1) // 4).tolist()
    counts = (batch["input_ids"] == image_id).sum(-1).tolist()
    assert counts == [per_image[0], per_image[1] + per_image[2]]
    assert max(per_image) * 4 * 14 * 14 <= 112 * 112  # preprocessor max_pixels honoured
    assert batch["attention_mask"][0, 0] == 0  # left padding for batched generation


def test_qwen_caption_and_difference_run(qwen: QwenVL, faces: list[np.ndarray]) -> None:
    answers = qwen.caption_answers(faces)  # 3 images, batch_size 2: two generate calls
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    caps = qwen.caption(faces)
    assert len(caps) == 3
    for cap in caps:
        assert cap is None or (isinstance(cap, FaceCaption) and cap.expression in EXPRESSIONS)
    assert caps == [parse_caption(a) for a in answers]  # greedy decoding: deterministic
    diffs = qwen.difference([(faces[0], faces[1]), (faces[0], faces[2])])
    assert len(diffs) == 2 and all(d is None or 0.0 <= d <= 1.0 for d in diffs)
    assert qwen.caption([]) == [] and qwen.difference([]) == []


def test_qwen_pickle_drops_engine(qwen: QwenVL, faces: list[np.ndarray]) -> None:
    ref = qwen.caption_answers(faces[:1])
    clone = pickle.loads(pickle.dumps(qwen))
    assert clone._model is None and qwen._model is not None
    assert clone.caption_answers(faces[:1]) == ref


def test_qwen_max_pixels_override(qwen_dir: Path, faces: list[np.ndarray]) -> None:
    from hfl.backends.vlm import build_qwen_processor

    proc = build_qwen_processor(str(qwen_dir), max_pixels=56 * 56)
    grid = proc.image_processor(images=[faces[2]], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) * 14 * 14 <= 56 * 56


def test_qwen_missing_files_are_named(tmp_path: Path, clip_dir: Path) -> None:
    errs = check_vlm_weights(VlmBackendConfig(path=str(tmp_path)))
    text = "\n".join(errs)
    for name in (
        "config.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "tokenizer.json",
        "model.safetensors",
    ):
        assert name in text, name
    assert all(str(tmp_path) in e for e in errs)
    with pytest.raises(BackendUnavailable, match="tokenizer.json"):
        load_vlm(VlmBackendConfig(path=str(tmp_path)))
    assert "path is empty" in check_vlm_weights(VlmBackendConfig())[0]
    assert any("engine 'tgi'" in e for e in check_vlm_weights(VlmBackendConfig(engine="tgi")))
    # a CLIP folder is not a Qwen2.5-VL checkpoint
    assert any("model_type 'clip'" in e for e in check_vlm_weights(VlmBackendConfig(path=str(clip_dir))))


# ============================================================================= vLLM engine (stand-in module)


CAPTION_ANSWER = '{"expression": "happy", "intensity": "strongly", "pronoun": "her"}'


class _FakeLLM:
    """Records what the vLLM engine sends; answers with a fixed text per prompt."""

    instances: list[_FakeLLM] = []
    answer = CAPTION_ANSWER

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[list[dict[str, Any]]] = []
        _FakeLLM.instances.append(self)

    def generate(self, prompts: list[dict[str, Any]], params: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append(prompts)
        out = types.SimpleNamespace(text=self.answer)
        return [types.SimpleNamespace(outputs=[out]) for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[_FakeLLM]:
    mod = types.ModuleType("vllm")
    mod.LLM = _FakeLLM  # type: ignore[attr-defined]
    mod.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", mod)
    _FakeLLM.instances = []
    _FakeLLM.answer = CAPTION_ANSWER
    return _FakeLLM


def test_vllm_engine_requests(fake_vllm: type[_FakeLLM], qwen_dir: Path, faces: list[np.ndarray]) -> None:
    cfg = VlmBackendConfig(path=str(qwen_dir), engine="vllm", tensor_parallel_size=2, max_new_tokens=32)
    vlm = load_vlm(cfg)
    caps = vlm.caption(faces[:2])
    assert caps == [FaceCaption("happy", "strongly", "her")] * 2
    (llm,) = fake_vllm.instances
    assert llm.kwargs["model"] == str(qwen_dir) and llm.kwargs["tensor_parallel_size"] == 2
    assert llm.kwargs["limit_mm_per_prompt"] == {"image": 2}
    (prompts,) = llm.calls  # one batched call
    assert len(prompts) == 2
    assert prompts[0]["prompt"] == render_qwen_prompt(caption_parts(vlm.caption_prompt))
    images = prompts[0]["multi_modal_data"]["image"]
    assert len(images) == 1 and images[0].size == (faces[0].shape[1], faces[0].shape[0])
    fake_vllm.answer = "Difference: 0.8"
    assert vlm.difference([(faces[0], faces[2])]) == [0.8]
    pair = llm.calls[-1][0]
    assert pair["prompt"].count(QWEN_IMAGE) == 2 and len(pair["multi_modal_data"]["image"]) == 2
    clone = pickle.loads(pickle.dumps(vlm))  # the LLM object is dropped, not pickled
    assert clone._model is None


def test_vllm_missing_is_backend_unavailable(
    monkeypatch: pytest.MonkeyPatch, qwen_dir: Path, faces: list[np.ndarray]
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    vlm = load_vlm(VlmBackendConfig(path=str(qwen_dir), engine="vllm"))  # lazy: loads on first use
    with pytest.raises(BackendUnavailable, match="vllm"):
        vlm.caption(faces[:1])


# ============================================================================= answer parsers

CAPTIONS = [
    ('{"expression": "happy", "intensity": "slightly", "pronoun": "her"}', ("happy", "slightly", "her")),
    (
        '```json\n{"expression": "Surprise", "intensity": "very", "pronoun": "he"}\n```',
        ("surprised", "strongly", "his"),
    ),
    (
        "Sure! ```\n{'expression': 'fear', 'intensity': 'strong', 'pronoun': 'unknown'}\n```",
        ("fearful", "strongly", None),
    ),
    ('{"expression": "neutral", "intensity": "strongly", "pronoun": "his"}', ("neutral", None, "his")),
    ('{"expression": "neutral", "intensity": null, "pronoun": "his/her"}', ("neutral", None, None)),
    ('{"Emotion": "Disgust", "Level": "mild",}', ("disgusted", "slightly", None)),
    ('{"expression": "very angry", "pronoun": "female"}', ("angry", "strongly", "her")),
    ('{"expression": "sad", "intensity": "moderate", "pronoun": "male"}', ("sad", "normally", "his")),
    ('{"expression": "happy", "intensity": "normal", "pronoun": "She"}', ("happy", "normally", "her")),
    ("Expression: surprised\nIntensity: slight\nPronoun: his", ("surprised", "slightly", "his")),
    ("expression = anger; intensity = extreme", ("angry", "strongly", None)),
    ("The man looks very angry.", ("angry", "strongly", "his")),
    ("She is not happy; she looks sad, slightly.", ("sad", "slightly", "her")),
    ("The woman has a faint smile.", ("happy", "slightly", "her")),
    ("A calm, expressionless face.", ("neutral", None, None)),
    ('{"expression": "happy", "intensity": "high"}', ("happy", "strongly", None)),
    ('{"expression": "sad", "intensity": "low intensity"}', ("sad", "slightly", None)),
    ("A high-resolution photo of a smiling woman.", ("happy", None, "her")),
    ("The face clearly shows strong anger.", ("angry", "strongly", None)),
    (
        'I think: {"foo": 1} then {"expression": "scared", "intensity": "normally"}',
        ("fearful", "normally", None),
    ),
]


@pytest.mark.parametrize(("text", "expected"), CAPTIONS)
def test_parse_caption(text: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse_caption(text) == FaceCaption(*expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "asdkj qwe 123",
        '{"expression": "confused"}',
        "I cannot see a face.",
        "\x05\ufffdB\ufffdF",
        "{}",
    ],
)
def test_parse_caption_garbage(text: str) -> None:
    assert parse_caption(text) is None


DIFFERENCES = [
    ('{"difference": 0.7}', 0.7),
    ('```json\n{"difference": 0.25}\n```', 0.25),
    ('{"score": "0.4"}', 0.4),
    ('{"difference": "8 out of 10"}', 0.8),
    ("7/10", 0.7),
    ("0.7", 0.7),
    ("70%", 0.7),
    (".5", 0.5),
    ("Image 1 and Image 2 differ a lot: 0.85", 0.85),
    ("The difference is 0.35 on a 0-1 scale.", 0.35),
    ("score: 1.4", 1.0),
    ('{"difference": -0.3}', 0.0),
    ('{"difference": 7}', 1.0),
    ("Difference score = 1", 1.0),
    ("0", 0.0),
]


@pytest.mark.parametrize(("text", "expected"), DIFFERENCES)
def test_parse_difference(text: str, expected: float) -> None:
    assert parse_difference(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "garbage", '{"difference": NaN}', '{"difference": null}', "no idea", "3/0", "{}"]
)
def test_parse_difference_garbage(text: str) -> None:
    assert parse_difference(text) is None


def test_prompts_ask_for_strict_json() -> None:
    caption, difference = load_prompt("caption"), load_prompt("difference")
    assert all(e in caption for e in EXPRESSIONS) and all(i in caption for i in INTENSITIES)
    assert "his" in caption and "her" in caption and "JSON" in caption
    assert '"difference"' in difference and "JSON" in difference and "0 to 1" in difference
