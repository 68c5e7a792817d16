"""The dataset card DIR/README.md (written by `split`): counts, expression distribution (paper Fig. 3c),
head-pose angle histogram (Fig. 3d), thresholds, backends, lineage and known limits."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hfl import __version__  # noqa: E402
from hfl.backends.expression import EXPRESSIONS  # noqa: E402
from hfl.config import config_hash, to_dict  # noqa: E402
from hfl.storage import Location, parquet_file, read_table, staged, write_bytes_atomic  # noqa: E402

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig

CARD_COLUMNS = [
    "key", "video_id", "split", "group_id", "edit_expression", "edit_intensity", "tgt_expression",
    "yaw_delta", "pitch_delta", "yaw_units", "pitch_units", "instruction", "subset", "generator",
    "pose_error_deg",
]  # fmt: skip

LIMITS = [
    "Head-turn angles come from the configured head-pose estimator (default: 3DDFA_V2's regressed camera, "
    "PnP of the 68 landmarks on insightface's mean face as fallback; see pose_backend), not from the "
    "paper's optical-flow angles. The two disagree by a median 4.8 deg in yaw on real frames.",
    "Occlusion (a hand over the mouth) is not detected: the paper drops occluded faces with its detector; "
    "the offline detectors here do not score occlusion, so such frames can become sources or targets.",
    "Expressions are those two offline models (FER2013 and facex) agree on for the target face; both read "
    "a talking open mouth as surprised or fearful at times, and neither measures intensity.",
    "Offline backends (fer expression model, dlib identity) stand in for Qwen2.5-VL and CLIP unless the "
    "config names local weights for them; the backends section below says which ran.",
    "FER2013 was trained on 48x48 grey faces; on small or profile faces its expression and intensity "
    "are noisy, so instructions inherit that noise.",
    "Pairs run from the earlier to the later frame of a track; the reverse edit is not emitted.",
    "Synthetic edits from the offline `geometric` generator are landmark-driven image warps, not the output "
    "of a learned editing model: they cannot show content absent from the source (teeth, the far side of a "
    "turned face), and large turns squeeze the far half of the face. The validator keeps only edits whose "
    "measured pose change (Eq. 1) and FER2013 expression match the instruction.",
]


def _rows(out_dir: Location) -> list[dict[str, Any]]:
    rows = []
    for p in sorted((out_dir / "stages" / "split").glob("part-*.parquet")):
        have = set(parquet_file(p).schema_arrow.names)
        rows += read_table(p, columns=[c for c in CARD_COLUMNS if c in have]).to_pylist()
    for r in rows:
        r["subset"] = r.get("subset") or "real"
    return rows


def _series(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, rows) per subset x split that has rows, real first."""
    out = []
    for subset in ("real", "synthetic"):
        for split in ("train", "test"):
            sel = [r for r in rows if r["subset"] == subset and r["split"] == split]
            if sel:
                out.append((f"{subset} {split}", sel))
    return out


def _stats(out_dir: Location, stage: str) -> dict[str, Any]:
    f = out_dir / "stages" / stage / "stats.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _expression_chart(rows: list[dict[str, Any]], path: Location) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = [*EXPRESSIONS, "pose only"]
    series = _series(rows) or [("train", [])]
    wd = 0.8 / len(series)
    for k, (label, sel) in enumerate(series):
        c = Counter((r.get("edit_expression") or "pose only") for r in sel)
        ax.bar([i + k * wd for i in range(len(labels))], [c[e] for e in labels], wd, label=label)
    ax.set_xticks([i + 0.4 - wd / 2 for i in range(len(labels))], labels, rotation=20)
    ax.set_ylabel("pairs")
    ax.set_title("Instructed expression (cf. paper Fig. 3c)")
    ax.legend()
    fig.tight_layout()
    with staged(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _pose_chart(rows: list[dict[str, Any]], path: Location, unit: float) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    data = {}
    for subset in ("real", "synthetic"):
        for axis in ("yaw", "pitch"):
            vals = [
                r[f"{axis}_delta"]
                for r in rows
                if r["subset"] == subset and r.get(f"{axis}_delta") is not None
            ]
            if vals:
                data[f"{subset} {axis} change"] = vals
    lim = max([unit * 2.5] + [abs(v) for vals in data.values() for v in vals])
    bins = [-lim + i * unit / 6 for i in range(int(2 * lim / (unit / 6)) + 2)]
    for label, vals in data.items():
        ax.hist(vals, bins=bins, alpha=0.5, label=label)
    for k in range(-int(lim // unit), int(lim // unit) + 1):
        ax.axvline(k * unit - unit / 2, color="grey", lw=0.5, ls=":")
    ax.set_xlabel(f"degrees (dotted: rounding edges of {unit:g}° units)")
    ax.set_ylabel("pairs")
    ax.set_title("Head-pose change (cf. paper Fig. 3d)")
    ax.legend()
    fig.tight_layout()
    with staged(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def write_card(out_dir: Location, cfg: PipelineConfig) -> Location:
    """Write DIR/README.md and DIR/card/*.png from the split stage's parts.

    The thresholds table and the stage-specific backend rows come from each registered stage's
    `card_rows` (its own module), in registry order; the backend roles shared by several stages are here."""
    from hfl.stages import STAGES

    card = out_dir / "card"
    card.mkdir(parents=True, exist_ok=True)
    rows = _rows(out_dir)
    _expression_chart(rows, card / "expressions.png")
    _pose_chart(rows, card / "pose.png", cfg.caption.pose_unit_deg)
    splits = Counter(r["split"] for r in rows)
    videos = {s: len({r["video_id"] for r in rows if r["split"] == s}) for s in ("train", "test")}
    groups = {s: len({r["group_id"] for r in rows if r["split"] == s}) for s in ("train", "test")}
    expr = Counter((r.get("edit_expression") or "pose only", r.get("edit_intensity") or "") for r in rows)
    funnel = []
    for stage in cfg.stages:
        st = _stats(out_dir, stage)
        if st:
            rej = ", ".join(f"{k} {v}" for k, v in sorted((st.get("rejected") or {}).items()))
            funnel.append([stage, st.get("rows_in", ""), st.get("kept", ""), rej or "-"])
    d = to_dict(cfg)
    be = cfg.backends
    backends = [
        [
            "face detector / landmarker / embedder",
            f"{be.face.detector} / {be.face.landmarker} / {be.face.embedder}",
        ],
        ["quality scorer", be.quality.scorer],
        ["semantic difference (pair)", be.expression.semantic],
        ["expression captioner", be.expression.captioner],
        ["CLIP identity", be.clip.path or "not configured"],
    ]
    thresholds: list[list[Any]] = []
    for name in STAGES:  # each stage's own rows (Stage.card_rows), in pipeline order
        rows_of = STAGES[name].card_rows(cfg)
        backends += rows_of.get("backends", [])
        thresholds += rows_of.get("thresholds", [])
    counts = [[s, splits.get(s, 0), videos[s], groups[s]] for s in ("train", "test")]
    subset_counts = [
        [sub, *(sum(1 for r in rows if r["subset"] == sub and r["split"] == s) for s in ("train", "test"))]
        for sub in ("real", "synthetic")
    ]
    subset_counts = [[*r, r[1] + r[2]] for r in subset_counts]
    synth_rows = [r for r in rows if r["subset"] == "synthetic"]
    synth_kinds = Counter(
        (r.get("edit_expression") or "pose", r.get("yaw_units") or 0, r.get("pitch_units") or 0)
        for r in synth_rows
    )
    examples = [r for r in rows if r.get("instruction") and r["subset"] == "real"][:6]
    examples += [r for r in rows if r.get("instruction") and r["subset"] == "synthetic"][:4]
    synth_table = (
        _table(
            ["edit", "yaw units", "pitch units", "edits"], [[*k, n] for k, n in sorted(synth_kinds.items())]
        )
        if synth_rows
        else "(none)"
    )
    example_lines = "\n".join(
        f"- `{r['key']}` ({r['subset']}, {r['split']}): {r['instruction']}" for r in examples
    )
    example_lines = example_lines or "- (none)"
    from hfl.yields import HEADERS, video_yield, yield_table_rows

    per_video = _table(HEADERS, yield_table_rows(video_yield(out_dir, d)))
    text = f"""# {cfg.name}: HFL-style face-editing pairs

Built by hfl {__version__} on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}; config hash
`{config_hash(cfg)}` (`config.yaml` next to this file). A `real` sample is a source frame, a target frame
of the same face track of the same video, and an instruction in the LaTo paper's template; a `synthetic`
sample is a real source frame, its single-turn edit by the `{be.generator.name}` generator, and the
instruction it was edited with, kept only when the validator confirmed the edit.

## Counts

{_table(["subset", "train", "test", "all"], subset_counts)}

{_table(["split", "pairs", "videos", "identity groups"], counts)}

No video and no identity group is in both splits (`split.group_by: {cfg.split.group_by}`). Test size:
min({cfg.split.test_pairs}, round({cfg.split.test_fraction:g} x pairs)), stratified by instructed
expression x head-turn bucket.

## Per-video yield

Real pairs per input video. `stopped_by`: the stages, in chain order, that kept under half of the
video's rows, each with its top reason and the median of that reason's measure on the rejected rows
(budgets such as `not_selected` are not filters). The same table is in `report/index.html`.

{per_video}

## Instructed expressions

![expressions](card/expressions.png)

{_table(["expression", "intensity", "pairs"], [[e, i or "-", n] for (e, i), n in sorted(expr.items())])}

## Head-pose change

![pose](card/pose.png)

Synthetic edits by instructed change (expression or pose, yaw units, pitch units):
{synth_table}

## Example instructions

{example_lines}

## Funnel

{_table(["stage", "rows in", "kept", "rejected by reason"], funnel)}

## Thresholds

{_table(["stage", "check", "threshold"], thresholds)}

## Backends

{_table(["role", "backend"], backends)}

## Lineage

- inputs: `{d["mine"]["input"]}`
- stages: {" -> ".join(cfg.stages)}
- per-stage config hashes: see `stages/<stage>/stats.json`; every rejected row with its reason is in
  `stages/<stage>/*.parquet`; `report/index.html` shows contact sheets.

## Known limits

{chr(10).join(f"- {x}" for x in LIMITS)}
"""
    path = out_dir / "README.md"
    write_bytes_atomic(path, text.encode())
    return path
