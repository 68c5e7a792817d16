"""Expression captioner SFT on the annotation tool's export (``hfl annotate export``: ``train.jsonl`` /
``eval.jsonl`` with ``image``, ``expression``, ``intensity``), Qwen2.5-VL + LoRA through the shared loop of
``training.predictor.sft``. Run with ``hfl train captioner --config training/captioner.yaml``.

The prompt is the pipeline's captioner prompt (``hfl/prompts/caption.txt``); the response is its JSON
answer ``{"expression", "intensity", "pronoun"}`` (pronoun from the item's meta when present, else
"unknown"). Scoring (paper's hierarchical metric): 1 point for the right expression, +0.5 when the intensity
is right as well (a neutral face has no intensity: right when both are empty); reported as the mean points
(max 1.5), the normalised score (points / 1.5) and the expression accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.predictor import SftExample, sft


def hierarchical_score(
    pred_expr: str | None, pred_int: str | None, gt_expr: str, gt_int: str | None
) -> float:
    """1 for the right expression, +0.5 for the right intensity too."""
    if pred_expr != gt_expr:
        return 0.0
    if gt_expr == "neutral":
        return 1.5 if not pred_int else 1.0
    return 1.5 if pred_int == gt_int else 1.0


def answer(row: dict[str, Any]) -> str:
    meta = row.get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {}
    pronoun = meta.get("pronoun") if meta.get("pronoun") in ("his", "her") else "unknown"
    intensity = None if row["expression"] == "neutral" else row.get("intensity")
    return json.dumps({"expression": row["expression"], "intensity": intensity, "pronoun": pronoun})


def read_export(export_dir: str | Path, split: str) -> list[dict[str, Any]]:
    path = Path(export_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run hfl annotate export first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def caption_examples(export_dir: str | Path, split: str = "train") -> list[SftExample]:
    from hfl.backends.vlm import load_prompt
    from hfl.predictor.canvas import read_rgb

    prompt = load_prompt("caption")
    rows = [r for r in read_export(export_dir, split) if r.get("expression") and r.get("image")]
    return [
        SftExample(read_rgb(str(Path(export_dir) / r["image"])), prompt, answer(r), r["key"]) for r in rows
    ]


def score_answers(answers: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Hierarchical score of raw captioner answers against export rows."""
    from hfl.backends.vlm import parse_caption

    pts, expr_ok = [], []
    for a, r in zip(answers, rows, strict=True):
        cap = parse_caption(a)
        p = hierarchical_score(
            cap.expression if cap else None,
            cap.intensity if cap else None,
            r["expression"],
            r.get("intensity"),
        )
        pts.append(p)
        expr_ok.append(p >= 1.0)
    n = max(1, len(pts))
    return {
        "n": len(pts),
        "points": sum(pts) / n,
        "score": sum(pts) / (1.5 * n),
        "expression_accuracy": sum(expr_ok) / n,
        "parsed": sum(a is not None and parse_caption(a) is not None for a in answers),
    }


def evaluate_captioner(
    model_path: str, export_dir: str | Path, split: str = "eval", device: str = "cpu"
) -> dict:
    """Run a captioner folder (e.g. ``output_dir/merged``) on an export split and score it."""
    from hfl.backends.vlm import VlmBackendConfig, load_vlm
    from hfl.predictor.canvas import read_rgb

    rows = [r for r in read_export(export_dir, split) if r.get("expression") and r.get("image")]
    vlm = load_vlm(VlmBackendConfig(path=model_path, device=device, max_new_tokens=48))
    answers = vlm.caption_answers([read_rgb(str(Path(export_dir) / r["image"])) for r in rows])
    return score_answers(answers, rows)


def train_captioner(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune on ``data.export``'s train split; with ``merge`` and ``eval``, score the eval split."""
    from hfl.recipes import validate_recipe

    validate_recipe("captioner", cfg)  # unknown keys / wrong types fail here, before any work
    export = cfg["data"]["export"]
    summary = sft(cfg, caption_examples(export, "train"))
    out = Path(cfg.get("output_dir", "runs/captioner"))
    if cfg.get("merge", False) and cfg.get("eval", True) and read_export(export, "eval"):
        summary["eval"] = evaluate_captioner(
            str(out / "merged"), export, "eval", cfg["model"].get("device", "cpu")
        )
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
