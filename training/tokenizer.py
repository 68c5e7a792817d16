"""Landmark tokenizer trainer (paper Sec. 4.1: 8192 codes x 3072 dims, batch 128/GPU, 100K iterations,
dead-code reset every 50 steps). Run with ``hfl train tokenizer --config training/<recipe>.yaml``.

Reads frame shards (``json.face.landmarks``) and/or pair shards (``json.src/tgt.landmarks``), trains Eq. 2
with Accelerate, checkpoints with resume, and evaluates L1 (512-canvas pixels), codebook utilisation and
perplexity on the eval shards; the final metrics go to ``OUTPUT/metrics.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from hfl.lato.tokenizer import LandmarkTokenizer, TokenizerConfig
from training.common import Checkpoints, MetricLog, TrainArgs, checkpoint_and_should_stop, warmup_lambda
from training.data import (
    ShardStream,
    collate_landmarks,
    epoch_stream,
    landmark_decoder,
    list_shards,
    make_loader,
)

PIXELS_PER_UNIT = 256.0  # normalised [-1, 1] -> 512 canvas


@torch.no_grad()
def evaluate(model: LandmarkTokenizer, shards: list[str], batch_size: int = 256) -> dict[str, float]:
    """L1 / per-point L2 in 512-canvas pixels, utilisation (% of codes used) and perplexity on ``shards``.

    Uses the fixed evaluation canvas (face crop x1.9, no jitter) and one pass in order.
    """
    was_training = model.training
    model.eval()
    stream = ShardStream(shards, landmark_decoder(), batch_size, shuffle_buffer=0)
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=collate_landmarks)
    device = next(model.parameters()).device
    m = model.config.codebook_size
    hist = torch.zeros(m, dtype=torch.long)
    l1_sum = l2_sum = 0.0
    n_points = 0
    for x in loader:
        x = x.to(device)
        out = model(x)
        diff = (out.recon.float() - x) * PIXELS_PER_UNIT
        l1_sum += float(diff.abs().sum())
        l2_sum += float(diff.norm(dim=-1).sum())
        n_points += x.shape[0] * x.shape[1]
        hist += torch.bincount(out.indices.flatten().cpu(), minlength=m)
    model.train(was_training)
    if n_points == 0:
        raise ValueError(f"no landmark samples in {shards}")
    p = hist.float() / hist.sum()
    ppl = float(torch.exp(-(p * torch.log(p + 1e-10)).sum()))
    return {
        "l1_px": l1_sum / (2 * n_points),  # mean |dx|, |dy| per coordinate
        "l2_px": l2_sum / n_points,  # mean point distance
        "utilisation_pct": 100.0 * float((hist > 0).float().mean()),
        "perplexity": ppl,
        "samples": n_points // 68,
    }


def train_tokenizer(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train from a recipe dict (see ``training/tokenizer_*.yaml``); returns the final metrics."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from hfl.recipes import validate_recipe

    validate_recipe("tokenizer", cfg)  # unknown keys / wrong types fail here, before any work
    args = TrainArgs.from_dict(cfg.get("train", {}))
    args.apply_threads()
    torch.set_flush_denormal(True)  # EMA statistics of rarely used codes decay towards denormals on CPU
    data = cfg.get("data", {})
    out_dir = Path(cfg.get("output_dir", "runs/tokenizer"))
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum
    )
    set_seed(args.seed)
    model = LandmarkTokenizer(TokenizerConfig.from_dict(cfg.get("model", {})))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(args.warmup_steps))
    model, opt, sched = accelerator.prepare(model, opt, sched)
    ckpts = Checkpoints(out_dir, args.keep_checkpoints)
    log = MetricLog(out_dir / "log.jsonl", enabled=accelerator.is_main_process)

    step, epoch, skip = 0, 0, 0
    resume = ckpts.latest() if cfg.get("resume", True) else None
    if resume is not None:
        accelerator.load_state(str(resume))
        st = Checkpoints.read_state(resume)
        step, epoch, skip = st["step"], st["epoch"], st["batches_in_epoch"]
        log(step, event="resumed", checkpoint=str(resume))

    train_shards = list_shards(data["train"])
    eval_shards = list_shards(data["eval"]) if data.get("eval") else train_shards
    decode = landmark_decoder(
        tuple(data.get("crop_scale", (1.6, 2.2))), data.get("jitter", 0.05), data.get("flip_prob", 0.0)
    )
    unwrapped: LandmarkTokenizer = accelerator.unwrap_model(model)
    t_start, samples_seen = time.time(), 0
    stop = False
    while step < args.max_steps and not stop:
        stream = epoch_stream(train_shards, decode, args, epoch, skip, accelerator)
        batches_in_epoch = skip
        got_batch = False
        for x in make_loader(stream, collate_landmarks, args.num_workers):
            got_batch = True
            with accelerator.accumulate(model):
                out = model(x.to(accelerator.device))
                accelerator.backward(out.loss)
                if args.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            batches_in_epoch += 1
            samples_seen += x.shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            if step % args.log_every == 0 or step == args.max_steps:
                log(
                    step,
                    epoch=epoch,
                    loss=float(out.loss.detach()),
                    l1_px=float(out.l1.detach()) * PIXELS_PER_UNIT,
                    commit=float(out.commit_loss.detach()),
                    perplexity=float(out.perplexity),
                    reset_codes=unwrapped.vq.last_reset_count,
                    lr=sched.get_last_lr()[0],
                    samples_per_s=samples_seen / max(1e-9, time.time() - t_start),
                )
            if args.eval_every and step % args.eval_every == 0 and accelerator.is_main_process:
                log(step, event="eval", **evaluate(unwrapped, eval_shards))
            data_state = {"epoch": epoch, "batches_in_epoch": batches_in_epoch}
            if checkpoint_and_should_stop(args, step, t_start, ckpts, accelerator, data_state):
                stop = True
                break
        else:
            if not got_batch and skip == 0:
                raise ValueError(f"no complete batch of {args.batch_size} landmark sets in {train_shards}")
            epoch, skip = epoch + 1, 0
    metrics: dict[str, Any] = {"step": step, "config": unwrapped.config.to_dict()}
    if accelerator.is_main_process:
        metrics["eval"] = evaluate(unwrapped, eval_shards)
        metrics["train"] = evaluate(unwrapped, train_shards)
        metrics["train_samples_per_s"] = samples_seen / max(1e-9, time.time() - t_start)
        log(step, event="final", **{f"eval_{k}": v for k, v in metrics["eval"].items()})
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in unwrapped.state_dict().items()},
            str(out_dir / "tokenizer.safetensors"),
        )
        (out_dir / "tokenizer_config.json").write_text(json.dumps(unwrapped.config.to_dict(), indent=1))
    accelerator.wait_for_everyone()
    return metrics
