"""Landmark predictor SFT (paper Sec. 3.3): Qwen2.5-VL (local folder) + LoRA (peft), next-token loss on the
structured CoT of App. D.2 (``hfl.predictor.cot``), from HFL pair shards. Run with
``hfl train predictor --config training/predictor.yaml``.

Examples: for every pair sample, the source image resized to the 512 canvas, the user prompt
``hfl.predictor.cot.build_prompt(source landmarks, instruction)`` and the response
``hfl.predictor.cot.generate_trace(source, instruction, target)`` (rule-guided, four steps, grouped JSON),
landmarks mapped to the canvas. The loss covers the response tokens only (prompt and image tokens are
masked with -100). ``write_examples`` dumps the examples as JSONL (``prompt``, ``response``, ``image``) for
inspection or manual verification (the paper kept 19,398 of 23,145 traces after checking them).

The SFT loop (``sft``) is shared with the captioner (``training.captioner``): batch size 1 with gradient
accumulation, AdamW on the LoRA weights, ``max_length`` truncation (response tokens past it are dropped),
``log.jsonl``, and the adapter saved with ``save_pretrained`` to ``output_dir/adapter`` (plus
``output_dir/merged`` with the processor files when ``merge: true``, a folder ``hfl edit --predictor vlm
--predictor-vlm`` loads directly).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SftExample:
    """One supervised turn: the image, the user text after it, the assistant response."""

    image: np.ndarray
    prompt: str
    response: str
    key: str = ""


def pair_examples(shard_dirs: list[str], limit: int | None = None) -> Iterator[SftExample]:
    """CoT examples from pair shards (see the module docstring)."""
    from hfl.predictor.canvas import to_canvas
    from hfl.predictor.cot import build_prompt, generate_trace
    from hfl.predictor.shards import iter_shards

    n = 0
    for d in shard_dirs:
        for req in iter_shards(d):
            if limit is not None and n >= limit:
                return
            src, tgt = req.extra["source_landmarks"], req.extra["gt_target_landmarks"]
            instr = req.instruction or "Change the facial expression and head pose."
            trace = generate_trace(src, instr, tgt)
            yield SftExample(to_canvas(req.image), build_prompt(src, instr), trace, req.id)
            n += 1


def write_examples(examples: list[SftExample], out_dir: Path) -> Path:
    """``out_dir/examples.jsonl`` (+ images/) for inspection."""
    import cv2

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    path = out_dir / "examples.jsonl"
    with path.open("w") as f:
        for i, ex in enumerate(examples):
            img = f"images/{i:06d}.png"
            cv2.imwrite(str(out_dir / img), cv2.cvtColor(ex.image, cv2.COLOR_RGB2BGR))
            f.write(
                json.dumps({"key": ex.key, "image": img, "prompt": ex.prompt, "response": ex.response}) + "\n"
            )
    return path


def encode_example(processor: Any, ex: SftExample, max_length: int) -> dict[str, Any]:
    """Model inputs with ``labels`` (-100 on the prompt), truncated to ``max_length`` tokens."""
    from hfl.backends.vlm import IMAGE, chat_messages, render_qwen_prompt, rgb_u8

    parts = [IMAGE, ex.prompt]
    if processor.chat_template:
        prompt = processor.apply_chat_template(
            chat_messages(parts), tokenize=False, add_generation_prompt=True
        )
    else:
        prompt = render_qwen_prompt(parts)
    full = prompt + ex.response + "<|im_end|>\n"
    img = [rgb_u8(ex.image)]
    p_ids = processor(text=[prompt], images=img, return_tensors="pt")["input_ids"]
    enc = processor(text=[full], images=img, return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[:, : p_ids.shape[1]] = -100
    seq = enc["input_ids"].shape[1]
    if seq > max_length:
        if p_ids.shape[1] >= max_length:
            raise ValueError(f"prompt of {p_ids.shape[1]} tokens exceeds max_length {max_length}")
        for k, v in list(enc.items()):  # every per-token tensor (ids, mask, token types)
            if hasattr(v, "ndim") and v.ndim == 2 and v.shape[1] == seq:
                enc[k] = v[:, :max_length]
        labels = labels[:, :max_length]
    enc["labels"] = labels
    return dict(enc)


def load_model(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """Qwen2.5-VL from ``model.path`` with LoRA on the language model's linear layers; (model, processor)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    from hfl.backends.vlm import build_qwen_processor

    m = cfg.get("model", {})
    path = m.get("path")
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"model.path {path!r}: a local Qwen2.5-VL folder is required")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[m.get("dtype", "float32")]
    processor = build_qwen_processor(path, int(m.get("max_pixels", 0)))
    processor.tokenizer.padding_side = "right"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype)
    lora = cfg.get("lora", {})
    lcfg = LoraConfig(
        r=int(lora.get("rank", 16)),
        lora_alpha=float(lora.get("alpha", 2 * int(lora.get("rank", 16)))),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules", LM_TARGETS),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg)
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    return model.to(m.get("device", "cpu")), processor


def sft(cfg: dict[str, Any], examples: list[SftExample]) -> dict[str, Any]:
    """The shared SFT loop (see the module docstring); returns a summary with the loss curve."""
    import torch

    from training.common import MetricLog, TrainArgs

    args = TrainArgs.from_dict(cfg.get("train", {}))
    args.apply_threads()
    torch.manual_seed(args.seed)
    if not examples:
        raise ValueError("no training examples")
    out = Path(cfg.get("output_dir", "runs/predictor"))
    out.mkdir(parents=True, exist_ok=True)
    model, processor = load_model(cfg)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    log = MetricLog(out / "log.jsonl")
    log(0, event="start", examples=len(examples), trainable_params=sum(p.numel() for p in params))
    max_length = int(cfg.get("max_length", 4096))
    rng = random.Random(args.seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    t0 = time.time()
    for step in range(1, args.max_steps + 1):
        total = 0.0
        for _ in range(args.grad_accum):
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            enc = encode_example(processor, examples[order.pop()], max_length)
            enc = {k: v.to(device) for k, v in enc.items()}
            loss = model(**enc).loss / args.grad_accum
            loss.backward()
            total += float(loss.detach())
        if args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if step % args.log_every == 0 or step == args.max_steps:
            log(step, loss=total, s_per_step=(time.time() - t0) / step)
    model.save_pretrained(str(out / "adapter"))
    if cfg.get("merge", False):
        merged = model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        processor.tokenizer.save_pretrained(str(out / "merged"))
        src = Path(cfg["model"]["path"])
        for name in ("preprocessor_config.json", "chat_template.json", "chat_template.jinja"):
            if (src / name).is_file() and not (out / "merged" / name).is_file():
                (out / "merged" / name).write_bytes((src / name).read_bytes())
    summary = {"step": args.max_steps, "losses": losses, "examples": len(examples)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def train_predictor(cfg: dict[str, Any]) -> dict[str, Any]:
    """Build CoT examples from ``data.train`` shard folders and fine-tune (see the module docstring)."""
    from hfl.recipes import validate_recipe

    validate_recipe("predictor", cfg)  # unknown keys / wrong types fail here, before any work
    data = cfg.get("data", {})
    dirs = data["train"] if isinstance(data.get("train"), list) else [data["train"]]
    examples = list(pair_examples(dirs, data.get("limit")))
    out = Path(cfg.get("output_dir", "runs/predictor"))
    if data.get("write_examples", True):
        write_examples(examples, out)
    return sft(cfg, examples)
