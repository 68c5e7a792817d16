"""LaTo trainer (paper Sec. 4.1): LoRA rank 64 (peft) on the Step1X-Edit DiT plus the unfrozen landmark
adapter and unconditional landmark tokens, rectified-flow loss, Accelerate (DDP/FSDP, bf16, gradient
accumulation), gradient checkpointing, optional cached latents / text embeddings, WebDataset pair shards
with resumable epochs. Run with ``hfl train lato --config training/<recipe>.yaml``.

Objective (rectified flow as in Step1X-Edit / FLUX): for target latents x0 and noise e, x_t = (1 - t) x0 +
t e, and the DiT predicts v = e - x0 on the noisy tokens; loss = mean squared error.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hfl.lato import canvas
from hfl.lato.build import LaToParts, build_parts
from hfl.lato.dit import LaToDiT
from hfl.lato.vae import pack
from training.common import Checkpoints, MetricLog, TrainArgs, checkpoint_and_should_stop, warmup_lambda
from training.data import ShardStream, epoch_stream, list_shards, make_loader
from training.lato_data import collate_pairs, pair_decoder


def add_lora(dit: LaToDiT, rank: int, alpha: float | None = None, dropout: float = 0.0) -> nn.Module:
    """Wrap the DiT with peft LoRA on every double/single-block Linear; unfreeze the landmark adapter and
    the unconditional tokens. Returns the peft model."""
    from peft import LoraConfig, get_peft_model

    from hfl.lato.loaders import lora_target_modules

    lcfg = LoraConfig(
        r=rank,
        lora_alpha=alpha or rank,
        lora_dropout=dropout,
        target_modules=lora_target_modules(),
        init_lora_weights=True,
    )
    model = get_peft_model(dit, lcfg)
    for name, p in model.named_parameters():
        if ".landmark_in." in name or name.endswith("landmark_uncond"):
            p.requires_grad_(True)
    return model


def unwrap_dit(model: nn.Module) -> LaToDiT:
    base = getattr(model, "base_model", model)
    return getattr(base, "model", base)


@torch.no_grad()
def encode_conditions(parts: LaToParts, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Frozen encoders: batch -> DiT inputs (everything but the noisy tokens and the timesteps) + x0."""
    if "src_lat" in batch:  # cached
        src_lat, tgt_lat = batch["src_lat"].to(device), batch["tgt_lat"].to(device)
        text, mask = batch["text"].to(device), batch["text_mask"].to(device)
        img_hw = (
            tgt_lat.shape[2] * parts.vae.config.downsample,
            tgt_lat.shape[3] * parts.vae.config.downsample,
        )
    else:
        src, tgt = batch["src"].to(device), batch["tgt"].to(device)
        src_lat, tgt_lat = parts.vae.encode(src), parts.vae.encode(tgt)
        text, mask = parts.text_encoder(batch["txt"], [_to_uint8(x) for x in batch["src"]])
        text, mask = text.to(device), mask.to(device)
        img_hw = tuple(tgt.shape[2:])
    grid_hw = (src_lat.shape[2] // 2, src_lat.shape[3] // 2)
    out = {"x0": pack(tgt_lat), "source": pack(src_lat), "grid_hw": grid_hw, "text": text, "text_mask": mask}
    mode = parts.config.landmark_mode
    if mode == "tokens":
        tokens, _ = parts.tokenizer.tokenize(batch["landmark_norm"].to(device))
        out.update(landmark_tokens=tokens, landmark_xy=batch["landmark_xy"].to(device), image_hw=img_hw)
    elif mode == "image":
        h, w = img_hw
        imgs = [canvas.render_landmarks(p.cpu().numpy(), w, h) for p in batch["landmark_xy"]]
        x = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 127.5 - 1 for i in imgs]).to(device)
        out["landmark_latents"] = pack(parts.vae.encode(x))
    return out


def _to_uint8(x: Tensor):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def sample_timesteps(
    n: int, device: torch.device, shift: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Logit-normal flow times in (0, 1), optionally shifted towards noise (SD3 / FLUX ``shift``)."""
    t = torch.sigmoid(torch.randn(n, device=device, generator=generator))
    return shift * t / (1 + (shift - 1) * t)


def flow_loss(
    model: nn.Module, cond: dict[str, Any], t: Tensor, noise: Tensor, uncond_mask: Tensor | None
) -> Tensor:
    """Rectified-flow MSE: x_t = (1 - t) x0 + t e, target e - x0."""
    x0 = cond["x0"]
    tt = t.to(x0.dtype)[:, None, None]
    xt = (1 - tt) * x0 + tt * noise
    kw = {k: v for k, v in cond.items() if k != "x0"}
    pred = model(noisy=xt, timesteps=t.to(x0.dtype), uncond_mask=uncond_mask, **kw)
    return torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())


def _trainable_only_hook(models: list[nn.Module], weights: list[dict[str, Tensor]], output_dir: str) -> None:
    """accelerate save hook: keep only trainable tensors (LoRA, adapter, unconditional tokens)."""
    for model, sd in zip(models, weights, strict=False):
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        for k in list(sd):
            if k not in keep:
                del sd[k]


def export_weights(model: nn.Module, out_dir: Path) -> None:
    """Write the release-format files: ``lora.safetensors`` (kohya), ``landmark_in.safetensors`` and
    ``landmark_in.pth`` ({"weight", "bias"}), ``landmark_uncond.safetensors``."""
    from safetensors.torch import save_file

    from hfl.lato.loaders import peft_to_kohya

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(peft_to_kohya(model), str(out_dir / "lora.safetensors"))
    dit = unwrap_dit(model)
    if hasattr(dit, "landmark_in"):
        sd = {k: v.detach().cpu().contiguous() for k, v in dit.landmark_in.state_dict().items()}
        save_file(sd, str(out_dir / "landmark_in.safetensors"))
        torch.save(sd, out_dir / "landmark_in.pth")
        save_file(
            {"landmark_uncond": dit.landmark_uncond.detach().cpu().contiguous()},
            str(out_dir / "landmark_uncond.safetensors"),
        )


@torch.no_grad()
def precompute_cache(
    parts: LaToParts,
    shards: list[str],
    cache_dir: Path,
    height: int,
    width: int,
    device: torch.device,
    batch_size: int = 4,
) -> int:
    """Write ``{key}.safetensors`` with VAE latents and text embeddings for every pair sample."""
    from safetensors.torch import save_file

    cache_dir.mkdir(parents=True, exist_ok=True)
    stream = ShardStream(shards, pair_decoder(height, width), batch_size, shuffle_buffer=0)
    n = 0
    for batch in torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=collate_pairs):
        todo = [i for i, k in enumerate(batch["key"]) if not (cache_dir / f"{k}.safetensors").exists()]
        if not todo:
            continue
        src, tgt = batch["src"][todo].to(device), batch["tgt"][todo].to(device)
        src_lat, tgt_lat = parts.vae.encode(src), parts.vae.encode(tgt)
        text, mask = parts.text_encoder(
            [batch["txt"][i] for i in todo], [_to_uint8(x) for x in batch["src"][todo]]
        )
        for j, i in enumerate(todo):
            save_file(
                {
                    "src_lat": src_lat[j].cpu().contiguous(),
                    "tgt_lat": tgt_lat[j].cpu().contiguous(),
                    "text": text[j].cpu().contiguous(),
                    "text_mask": mask[j].cpu().contiguous(),
                    "orig_hw": batch["orig_hw"][i],
                },
                str(cache_dir / f"{batch['key'][i]}.safetensors"),
            )
            n += 1
    return n


def train_lato(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train from a recipe dict (see ``training/lato_*.yaml``); returns a summary with the loss curve."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from hfl.recipes import validate_lato_recipe

    validate_lato_recipe(cfg)  # unknown keys / wrong types fail here, before any work
    args = TrainArgs.from_dict(cfg.get("train", {}))
    args.apply_threads()
    data, lora_cfg = cfg.get("data", {}), cfg.get("lora", {})
    out_dir = Path(cfg.get("output_dir", "runs/lato"))
    height, width = int(data.get("height", 512)), int(data.get("width", 512))
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum
    )
    set_seed(args.seed)
    parts = build_parts(cfg)
    device = accelerator.device
    for m in (parts.vae, parts.text_encoder, parts.tokenizer):
        if m is not None:
            m.to(device)
    if cfg.get("gradient_checkpointing", False):
        parts.dit.enable_gradient_checkpointing()
    model = add_lora(
        parts.dit, int(lora_cfg.get("rank", 64)), lora_cfg.get("alpha"), lora_cfg.get("dropout", 0.0)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(args.warmup_steps))
    model, opt, sched = accelerator.prepare(model, opt, sched)
    accelerator.register_save_state_pre_hook(_trainable_only_hook)
    ckpts = Checkpoints(out_dir, args.keep_checkpoints)
    log = MetricLog(out_dir / "log.jsonl", enabled=accelerator.is_main_process)
    n_trainable = sum(p.numel() for p in params)
    log(
        0,
        event="start",
        trainable_params=n_trainable,
        total_params=sum(p.numel() for p in model.parameters()),
        processes=accelerator.num_processes,
        device=str(device),
    )

    step, epoch, skip = 0, 0, 0
    resume = ckpts.latest() if cfg.get("resume", True) else None
    if resume is not None:
        accelerator.load_state(str(resume), strict=False)
        st = Checkpoints.read_state(resume)
        step, epoch, skip = st["step"], st["epoch"], st["batches_in_epoch"]
        log(step, event="resumed", checkpoint=str(resume))

    shards = list_shards(data["train"])
    cache_dir = Path(data["cache_dir"]) if data.get("cache_dir") else None
    if cache_dir is not None:
        if accelerator.is_main_process:
            n = precompute_cache(parts, shards, cache_dir, height, width, device)
            log(step, event="cache", written=n, dir=str(cache_dir))
        accelerator.wait_for_everyone()
    decode = pair_decoder(height, width, cache_dir)
    gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + accelerator.process_index + step)
    shift = float(cfg.get("timestep_shift", 1.0))
    losses: list[float] = []
    t_start, stop = time.time(), False
    while step < args.max_steps and not stop:
        stream = epoch_stream(shards, decode, args, epoch, skip, accelerator)
        batches_in_epoch = skip
        got_batch = False
        for batch in make_loader(stream, collate_pairs, args.num_workers):
            got_batch = True
            with accelerator.accumulate(model):
                cond = encode_conditions(parts, batch, device)
                b = cond["x0"].shape[0]
                t = sample_timesteps(b, device, shift, gen)
                noise = torch.randn(cond["x0"].shape, device=device, generator=gen)
                uncond = (
                    unwrap_dit(accelerator.unwrap_model(model)).sample_uncond_mask(b, device, gen)
                    if parts.config.landmark_mode == "tokens"
                    else None
                )
                with accelerator.autocast():
                    loss = flow_loss(model, cond, t, noise, uncond)
                accelerator.backward(loss)
                if args.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            losses.append(float(loss.detach()))
            if step % args.log_every == 0 or step == args.max_steps:
                log(
                    step,
                    epoch=epoch,
                    loss=losses[-1],
                    lr=sched.get_last_lr()[0],
                    uncond_frac=float(uncond.float().mean()) if uncond is not None else 0.0,
                    s_per_step=(time.time() - t_start) / max(1, len(losses)),
                )
            data_state = {"epoch": epoch, "batches_in_epoch": batches_in_epoch}
            if checkpoint_and_should_stop(args, step, t_start, ckpts, accelerator, data_state):
                stop = True
                break
        else:
            if not got_batch and skip == 0:
                raise ValueError(f"no complete batch of {args.batch_size} pair samples in {shards}")
            epoch, skip = epoch + 1, 0
    summary = {"step": step, "losses": losses, "trainable_params": n_trainable}
    if accelerator.is_main_process:
        export_weights(accelerator.unwrap_model(model), out_dir / "export")
        (out_dir / "summary.json").write_text(
            json.dumps({**summary, "mean_loss_last": _tail_mean(losses)}, indent=1)
        )
    accelerator.wait_for_everyone()
    return summary


def _tail_mean(xs: list[float], n: int = 10) -> float:
    return float(sum(xs[-n:]) / max(1, len(xs[-n:]))) if xs else math.nan
