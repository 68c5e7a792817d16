"""`hfl train`: landmark tokenizer, LaTo, landmark predictor and captioner trainers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Train the landmark tokenizer or LaTo from HFL shards.", no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="training/<recipe>.yaml")
_SET = typer.Option(None, "--set", help="override a recipe value: key.sub=value (repeatable)")
_OUT = typer.Option(None, "--output", "-o", help="output folder (overrides the recipe's output_dir)")
_FRESH = typer.Option(False, "--no-resume", help="ignore checkpoints in the output folder")


def _recipe(config: Path, sets: list[str] | None, output: Path | None, no_resume: bool) -> dict:
    from training.common import load_recipe

    cfg = load_recipe(config, sets)
    if output is not None:
        cfg["output_dir"] = str(output)
    if no_resume:
        cfg["resume"] = False
    return cfg


@app.command()
def tokenizer(
    config: Path = _CONFIG,
    set_: list[str] | None = _SET,
    output: Path | None = _OUT,
    no_resume: bool = _FRESH,
) -> None:
    """Train the landmark VQ-VAE tokenizer (paper Eq. 2) on frame and/or pair shards.

    Example: hfl train tokenizer --config training/tokenizer_cpu.yaml --output runs/tok
    """
    from training.tokenizer import train_tokenizer

    metrics = train_tokenizer(_recipe(config, set_, output, no_resume))
    if "eval" in metrics:
        typer.echo(
            json.dumps(
                {"step": metrics["step"], "eval": metrics["eval"], "train": metrics["train"]}, indent=1
            )
        )


@app.command()
def lato(
    config: Path = _CONFIG,
    set_: list[str] | None = _SET,
    output: Path | None = _OUT,
    no_resume: bool = _FRESH,
) -> None:
    """Train LaTo (LoRA + landmark adapter + unconditional tokens) on pair shards.

    Example: hfl train lato --config training/lato_tiny.yaml --output runs/lato-tiny
    """
    from training.lato import train_lato

    summary = train_lato(_recipe(config, set_, output, no_resume))
    losses = summary["losses"]
    typer.echo(
        json.dumps(
            {
                "step": summary["step"],
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
            }
        )
    )


@app.command()
def predictor(
    config: Path = _CONFIG,
    set_: list[str] | None = _SET,
    output: Path | None = _OUT,
    no_resume: bool = _FRESH,
) -> None:
    """Fine-tune the VLM landmark predictor (LoRA) on rule-guided CoT traces of pair shards.

    Example: hfl train predictor -c training/predictor.yaml --set model.path=models/Qwen/Qwen2.5-VL-3B
    """
    from training.predictor import train_predictor

    s = train_predictor(_recipe(config, set_, output, no_resume))
    typer.echo(json.dumps({"step": s["step"], "examples": s["examples"], "last_loss": s["losses"][-1]}))


@app.command()
def captioner(
    config: Path = _CONFIG,
    set_: list[str] | None = _SET,
    output: Path | None = _OUT,
    no_resume: bool = _FRESH,
) -> None:
    """Fine-tune the expression captioner on the annotation export; score it (1 + 0.5 hierarchical metric).

    Example: hfl train captioner --config training/captioner.yaml --set data.export=annotation-export
    """
    from training.captioner import train_captioner

    s = train_captioner(_recipe(config, set_, output, no_resume))
    typer.echo(json.dumps({"step": s["step"], "last_loss": s["losses"][-1], "eval": s.get("eval")}))
