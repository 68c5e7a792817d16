"""`hfl` command line: build datasets, list stages, write reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="HFL: turn human-centric video into face-editing pairs (HFL-150K style) and train/run LaTo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def build(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML, e.g. pipelines/demo.yaml")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Build output folder DIR")],
    stage: Annotated[str, typer.Option(help="A stage name, a comma-separated list, or 'all'")] = "all",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set quality.min_log_blur=40 (repeatable)"),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Process at most N inputs (quick trial runs)")] = None,
    force: Annotated[
        bool, typer.Option(help="Redo the selected stages even if done with the same config")
    ] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write DIR/report/index.html at the end")] = True,
) -> None:
    """Run pipeline stages into DIR. Done stages with an unchanged config are skipped; killed stages resume.

    Every row each stage saw is written to DIR/stages/<stage>/*.parquet (rejected rows with reject_reason),
    with DIR/stages/<stage>/stats.json marking the stage done.

    Examples:  hfl build -c pipelines/demo.yaml -o demo-out
               hfl build -c pipelines/demo.yaml -o demo-out --stage quality --set quality.min_log_blur=40
    """
    from hfl.config import ConfigError, load_config, validate

    try:
        cfg = load_config(config, set_ or [])
        stages = cfg.stages if stage == "all" else [s.strip() for s in stage.split(",") if s.strip()]
        validate(cfg, stages)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    from hfl.engine.runner import run_build

    try:
        run_build(cfg, output, stages, force=force, limit=limit, ray_address=ray_address)
    except RuntimeError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    if report:
        from hfl.report import write_report

        path = write_report(output)
        typer.echo(f"report: {path}")


@app.command()
def stages(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Show thresholds of this config")
    ] = None,
) -> None:
    """List stages with their inputs, outputs, resources and thresholds."""
    from hfl.config import PipelineConfig, load_config
    from hfl.stages import STAGES

    cfg = load_config(config) if config else PipelineConfig()
    for name, cls in STAGES.items():
        st = cls(cfg)
        r = st.resources()
        typer.secho(f"{name}", bold=True)
        typer.echo(f"  {st.description}")
        typer.echo(f"  inputs:     {', '.join(st.inputs) or '(files: mine.input)'}")
        typer.echo(f"  outputs:    {', '.join(st.outputs)}")
        res = f"cpus={r.num_cpus:g} gpus={r.num_gpus:g} memory_mb={r.memory_mb} batch={r.batch_size}"
        typer.echo(f"  resources:  {res}")
        typer.echo("  thresholds: " + (", ".join(f"{k}={v}" for k, v in st.thresholds().items()) or "-"))


@app.command()
def report(out_dir: Annotated[Path, typer.Argument(help="A build output folder")]) -> None:
    """Write DIR/report/index.html: funnel, score histograms, contact sheets per reject reason."""
    from hfl.report import write_report

    if not (out_dir / "stages").is_dir():
        typer.secho(f"error: {out_dir} holds no build (no stages/ folder)", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"report: {write_report(out_dir)}")


def _add_subcommands() -> None:
    from annotation_ui.cli import app as annotate_app
    from training.cli import app as train_app

    app.add_typer(annotate_app, name="annotate")
    app.add_typer(train_app, name="train")


_add_subcommands()


def main() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    app()


if __name__ == "__main__":
    main()
