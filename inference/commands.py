"""Implementation of ``hfl edit`` and ``hfl eval`` (``hfl/cli.py`` holds only the option parsing)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ModelArgs:
    """Where the LaTo weights come from: a training run + recipe, or a release config + weights root."""

    run: str | None = None
    recipe: str | None = None
    release: str | None = None
    weights: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    offload: bool = False
    threads: int = 0


def load_model(args: ModelArgs) -> Any:
    import torch

    from hfl.recipes import load_recipe
    from inference.model import load_release, load_run

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.run:
        if not args.recipe:
            raise ValueError("--run needs --recipe (the training recipe the run was trained with)")
        return load_run(args.run, load_recipe(args.recipe), args.device, args.dtype, args.offload)
    if args.release:
        cfg = load_recipe(args.release)
        if args.weights:
            cfg["root"] = args.weights
        return load_release(cfg, args.device, args.dtype, args.offload)
    raise ValueError(
        "give the model: --run DIR --recipe YAML (a hfl train lato run) or --release YAML [--weights DIR]"
    )


def make_predictor(kind: str, vlm_path: str = "", engine: str = "transformers", device: str = "cpu") -> Any:
    from inference.vlm_predictor import load_predictor

    return load_predictor(kind, vlm_path, engine, device)


def _record(
    req_id: str, src_path: str, out_path: Path, instruction: str, res: Any, seed: int, guidance: Any = None
) -> dict[str, Any]:
    return {
        "guidance": None if guidance is None else dict(guidance.__dict__),
        "id": req_id,
        "source": str(src_path),
        "output": str(out_path),
        "instruction": instruction,
        "seed": seed,
        "source_landmarks": None
        if res.source_landmarks is None
        else np.round(res.source_landmarks, 2).tolist(),
        "target_landmarks": np.round(res.target_landmarks, 2).tolist(),
        "timings": {k: round(v, 4) for k, v in res.timings.items()},
    }


@dataclass
class GuidanceArgs:
    """Sampling settings of ``hfl edit``; None takes the model's default (``default_guidance``: the
    release's text 4 / landmark 1 when no learned unconditional landmark tokens were loaded, LaTo's
    text 6 / landmark 4 / learned otherwise)."""

    steps: int = 28
    text_scale: float | None = None
    landmark_scale: float | None = None
    uncond: str | None = None
    seed: int = 0

    def resolve(self, dit: Any) -> Any:
        from hfl.lato.sampling import default_guidance

        scales = dict(text_scale=self.text_scale, landmark_scale=self.landmark_scale, uncond=self.uncond)
        return default_guidance(dit, self.steps, **scales)


@dataclass
class PredictorArgs:
    """Target-landmark predictor: ``geometric`` (offline) or ``vlm`` (local Qwen-VL folder, engine)."""

    kind: str = "geometric"
    vlm_path: str = ""
    engine: str = "transformers"


@dataclass
class EditInputs:
    """What to edit and where to write: one image + instruction (+ target landmarks), or a batch."""

    output: Path
    image: Path | None = None
    instruction: str | None = None
    landmarks: str | None = None
    batch: Path | None = None
    use_target_landmarks: bool = False
    split: str | None = None
    limit: int | None = None


def run_edit(
    model: ModelArgs,
    inputs: EditInputs,
    guidance: GuidanceArgs | None = None,
    predictor: PredictorArgs | None = None,
) -> list[dict[str, Any]]:
    """One edit (``inputs.image`` + ``instruction`` -> ``output`` file) or a batch (``batch`` -> ``output``
    dir), with the model, guidance and predictor settings as groups."""
    from hfl.predictor.landmark_json import to_grouped
    from inference.batch import EditRequest, iter_requests, read_landmarks
    from inference.face import read_rgb, to_canvas, write_rgb
    from inference.pipeline import LaToEditor

    ga, pa, x = guidance or GuidanceArgs(), predictor or PredictorArgs(), inputs
    if ga.uncond is not None and ga.uncond not in ("learned", "zero"):
        raise ValueError(f"--uncond: learned | zero, got {ga.uncond!r}")
    editor = LaToEditor(load_model(model), make_predictor(pa.kind, pa.vlm_path, pa.engine, model.device))
    g = ga.resolve(editor.bundle.dit)
    if x.batch is None:
        if x.image is None or x.instruction is None:
            raise ValueError("give --image and --instruction, or --batch")
        lm = read_landmarks(x.landmarks) if x.landmarks else None
        src = str(x.image)
        reqs = [EditRequest(Path(src).stem, read_rgb(src), x.instruction, lm, ga.seed, {"image_path": src})]
        out_dir, single = Path(x.output).parent, Path(x.output)
    else:
        reqs, out_dir, single = iter_requests(x.batch, x.use_target_landmarks, x.split), Path(x.output), None
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, req in enumerate(reqs):
        if x.limit is not None and i >= x.limit:
            break
        res = editor.edit(req.image, req.instruction, req.landmarks, g, req.seed)
        out_path = single or out_dir / f"{req.id}.png"
        write_rgb(str(out_path), res.image)
        stem = out_path.with_suffix("")
        write_rgb(f"{stem}_panel.png", res.panel(to_canvas(req.image)))
        Path(f"{stem}_landmarks.json").write_text(json.dumps(to_grouped(res.target_landmarks, 1)))
        src_path = req.extra.get("image_path")
        if src_path is None:  # shard input: keep the source next to the edit for hfl eval
            src_path = f"{stem}_source.png"
            write_rgb(src_path, req.image)
        records.append(_record(req.id, src_path, out_path, req.instruction, res, req.seed, g))
    jsonl = (out_dir / f"{single.stem}_edit.jsonl") if single else out_dir / "edits.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def run_eval(
    edits: list[Path],
    output: Path,
    identity: str = "dlib",
    insightface_dir: str = "",
    amplitude: str = "landmarks",
    judge_vlm: str = "",
    vlm_engine: str = "transformers",
    device: str = "cpu",
    predictor_pairs: Path | None = None,
    predictor: str = "geometric",
    predictor_vlm: str = "",
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate edits (``hfl edit`` JSONL records) and/or a predictor on pair shards; write eval.json/md."""
    from hfl.backends.vlm import VlmBackendConfig
    from inference.evaluate import EvalConfig, evaluate_edits, predictor_accuracy, write_results

    results: dict[str, Any] = {}
    if edits:
        records = [
            json.loads(line) for p in edits for line in Path(p).read_text().splitlines() if line.strip()
        ]
        judge = None
        if judge_vlm:
            from inference.judge import VlmJudge

            judge = VlmJudge(VlmBackendConfig(path=judge_vlm, engine=vlm_engine, device=device))
        cfg = EvalConfig(identity=identity, insightface_dir=insightface_dir, amplitude=amplitude)
        results["edits"] = evaluate_edits(records[:limit] if limit else records, cfg, judge)
    if predictor_pairs is not None:
        from inference.batch import iter_shards

        pred = make_predictor(predictor, predictor_vlm, vlm_engine, device)
        results["predictor"] = predictor_accuracy(iter_shards(predictor_pairs), pred, limit)
    if not results:
        raise ValueError("nothing to evaluate: give edits JSONL files and/or --predictor-pairs")
    write_results(output, results)
    return results
