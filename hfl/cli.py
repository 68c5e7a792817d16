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
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Build output DIR: a folder, file://, s3://bucket/prefix, gs://, hdfs://"
        ),
    ],
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
        str | None,
        typer.Option(
            help="Ray cluster address, e.g. 127.0.0.1:6379 (default: RAY_ADDRESS, else an embedded Ray); "
            "a cluster with token auth needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"
        ),
    ] = None,
    report: Annotated[bool, typer.Option(help="Write DIR/report/index.html at the end")] = True,
) -> None:
    """Run pipeline stages into DIR. Done stages with an unchanged config are skipped; killed stages resume.

    Every row each stage saw is written to DIR/stages/<stage>/*.parquet (rejected rows with reject_reason),
    with DIR/stages/<stage>/stats.json marking the stage done.

    Examples:  hfl build -c pipelines/demo.yaml -o demo-out
               hfl build -c pipelines/demo.yaml -o demo-out --stage quality --set quality.min_log_blur=40
    """
    from hfl.config import ConfigError
    from hfl.pipeline import load_config, validate

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
    """List stages with their inputs, outputs, pool, resources and thresholds.

    pool: the Ray Data operator the stage runs in for this config. Stages in one pool share actors (same
    resource shape); pools of one streaming run (`run N`) run at the same time, each fed by the one before."""
    from hfl.engine.runner import execution_plan, stage_resources
    from hfl.pipeline import PipelineConfig, load_config
    from hfl.stages import STAGES

    cfg = load_config(config) if config else PipelineConfig()
    plan = execution_plan(cfg)
    for name, cls in STAGES.items():
        st = cls(cfg)
        r = stage_resources(cfg, st)
        typer.secho(f"{name}", bold=True)
        typer.echo(f"  {st.description}")
        typer.echo(f"  inputs:     {', '.join(st.inputs) or '(files: mine.input)'}")
        typer.echo(f"  outputs:    {', '.join(st.outputs)}")
        typer.echo(f"  pool:       {plan.get(name, '- (not in this pipeline)')}")
        res = f"cpus={r.num_cpus:g} gpus={r.num_gpus:g} memory_mb={r.memory_mb} batch={r.batch_size}"
        typer.echo(f"  resources:  {res} (per actor; batch = rows per model call; spans units in a GPU pool)")
        typer.echo("  thresholds: " + (", ".join(f"{k}={v}" for k, v in st.thresholds().items()) or "-"))


@app.command()
def report(
    out_dir: Annotated[str, typer.Argument(help="A build output folder or URL (s3://bucket/prefix, ...)")],
) -> None:
    """Write DIR/report/index.html: funnel, score histograms, contact sheets per reject reason."""
    from hfl.report import write_report
    from hfl.storage import location

    if not (location(out_dir) / "stages").is_dir():
        typer.secho(f"error: {out_dir} holds no build (no stages/ folder)", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"report: {write_report(out_dir)}")


_MODEL_HELP = (
    "LaTo weights: --run DIR --recipe YAML (hfl train lato output) or --release YAML [--weights DIR]"
)


@app.command()
def edit(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output image (single) or folder (--batch)")],
    image: Annotated[Path | None, typer.Option(help="Source image")] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Edit instruction, e.g. 'Turn her head 30° left.'")
    ] = None,
    landmarks: Annotated[
        str | None,
        typer.Option(help="Target landmarks JSON file (68 points, 512 canvas); skips the predictor"),
    ] = None,
    batch: Annotated[
        Path | None, typer.Option(help="JSONL of requests, a build's manifest.parquet or a pair-shard folder")
    ] = None,
    split: Annotated[str | None, typer.Option(help="--batch manifest.parquet: only this split")] = None,
    use_target_landmarks: Annotated[
        bool, typer.Option(help="--batch on shards: use the pairs' target landmarks")
    ] = False,
    run: Annotated[str | None, typer.Option(help=_MODEL_HELP)] = None,
    recipe: Annotated[str | None, typer.Option(help="Training recipe of --run")] = None,
    release: Annotated[
        str | None, typer.Option(help="Release config, e.g. inference/lato_release.yaml")
    ] = None,
    weights: Annotated[str | None, typer.Option(help="Root folder of the release files")] = None,
    predictor: Annotated[str, typer.Option(help="geometric (offline default) | vlm")] = "geometric",
    predictor_vlm: Annotated[str, typer.Option(help="Local Qwen-VL folder of the VLM predictor")] = "",
    vlm_engine: Annotated[str, typer.Option(help="transformers | vllm")] = "transformers",
    steps: Annotated[int, typer.Option(help="Rectified-flow sampling steps")] = 28,
    text_scale: Annotated[
        float | None,
        typer.Option(help="Text guidance s_t (1 = off). Default: 6, or the release's 4 without learned u_f"),
    ] = None,
    landmark_scale: Annotated[
        float | None,
        typer.Option(help="Landmark guidance s_f (1 = off). Default: 4, or 1 without learned u_f (release)"),
    ] = None,
    uncond: Annotated[
        str | None, typer.Option(help="Unconditional landmark branch: learned (default) | zero")
    ] = None,
    seed: Annotated[int, typer.Option(help="Noise seed (single mode; batch rows carry their own)")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA) | float32 | bfloat16 | float16")] = "auto",
    offload: Annotated[
        bool, typer.Option(help="Keep models on the CPU, move each to the GPU while it runs")
    ] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = default)")] = 0,
    limit: Annotated[int | None, typer.Option(help="Edit at most N batch rows")] = None,
) -> None:
    """Edit a face with LaTo: detect, predict target landmarks, sample with landmark-aware CFG.

    Writes OUT, OUT_panel.png (source | target landmarks | edit), OUT_landmarks.json and a JSONL record.

    Example: hfl edit --image face.jpg --instruction "Turn his head 30° left." -o out.png
             --run runs/lato-tiny --recipe training/lato_tiny.yaml --steps 8
    """
    from inference.commands import EditInputs, GuidanceArgs, ModelArgs, PredictorArgs, run_edit

    try:
        records = run_edit(
            ModelArgs(run, recipe, release, weights, device, dtype, offload, threads),
            EditInputs(output, image, instruction, landmarks, batch, use_target_landmarks, split, limit),
            GuidanceArgs(steps, text_scale, landmark_scale, uncond, seed),
            PredictorArgs(predictor, predictor_vlm, vlm_engine),
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    for r in records:
        typer.echo(f"{r['output']}  ({r['timings'].get('sample_s', 0):.2f} s sampling)")


@app.command("eval")
def eval_(
    edits: Annotated[list[Path] | None, typer.Argument(help="edits JSONL files written by hfl edit")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for eval.json and eval.md")] = Path(
        "eval"
    ),
    identity: Annotated[str, typer.Option(help="Identity backend for s_arc: dlib | insightface")] = "dlib",
    insightface_dir: Annotated[str, typer.Option(help="buffalo_l folder (w600k_r50.onnx)")] = "",
    amplitude: Annotated[str, typer.Option(help="phi_ins from: landmarks | vlm")] = "landmarks",
    judge_vlm: Annotated[str, typer.Option(help="Local Qwen-VL folder for SC/VQ/NA (and phi_ins)")] = "",
    vlm_engine: Annotated[str, typer.Option(help="transformers | vllm")] = "transformers",
    device: Annotated[str, typer.Option(help="Device of VLM backends")] = "cpu",
    predictor_pairs: Annotated[
        Path | None, typer.Option(help="Pair shards to score the predictor on")
    ] = None,
    predictor: Annotated[str, typer.Option(help="geometric | vlm")] = "geometric",
    predictor_vlm: Annotated[str, typer.Option(help="Local Qwen-VL folder of the VLM predictor")] = "",
    limit: Annotated[int | None, typer.Option(help="Evaluate at most N items")] = None,
) -> None:
    """Rectified IP (Algorithm 1), Landmark Error, SC/VQ/NA (VLM judge) and predictor accuracy.

    Example: hfl eval out/edits.jsonl -o out/eval --predictor-pairs demo-out/shards/train
    """
    from inference.commands import run_eval

    try:
        res = run_eval(
            list(edits or []), output, identity, insightface_dir, amplitude, judge_vlm, vlm_engine, device,
            predictor_pairs, predictor, predictor_vlm, limit,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    from inference.evaluate import table

    for name, r in res.items():
        typer.echo(table(r, name))
    typer.echo(f"wrote {output / 'eval.json'} and {output / 'eval.md'}")


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
