"""Export the kept set for captioner fine-tuning: images, JSONL/Parquet with a train/eval split, figures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_ui.agreement import confusion_png
from annotation_ui.labels import caption
from annotation_ui.models import Item, ItemMedia, Project
from annotation_ui.stats import project_report

EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def _order(key: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_keys(keys: list[str], eval_fraction: float, eval_size: int | None, seed: str) -> set[str]:
    """The eval keys: a deterministic hash order, so re-exports keep an item in the same split."""
    n_eval = eval_size if eval_size is not None else round(len(keys) * eval_fraction)
    n_eval = max(0, min(n_eval, len(keys)))
    return set(sorted(keys, key=lambda k: _order(k, seed))[:n_eval])


def _safe_name(key: str) -> str:
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[-80:]
    return f"{stem}-{digest}"


def export_project(
    s: Session,
    project: Project,
    out: Path,
    formats: tuple[str, ...] = ("jsonl", "parquet"),
    eval_fraction: float = 1 / 18,
    eval_size: int | None = None,
    seed: str = "hfl",
) -> dict:
    """Write OUT/{train,eval}.{jsonl,parquet}, OUT/images/, OUT/agreement.json, OUT/confusion.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    report = project_report(s, project, with_items=True)
    results = report.pop("items")
    kept = {i: r for i, r in results.items() if r.kept}
    items = {it.id: it for it in s.scalars(select(Item).where(Item.id.in_(list(kept)))).all()} if kept else {}
    eval_keys = split_keys([it.key for it in items.values()], eval_fraction, eval_size, seed)
    rows: list[dict] = []
    for item_id in sorted(kept):
        item, r = items[item_id], kept[item_id]
        paths: dict[str, str] = {}
        for m in s.scalars(select(ItemMedia).where(ItemMedia.item_id == item_id)):
            suffix = "" if m.role == "image" else "." + m.role
            rel = f"images/{_safe_name(item.key)}{suffix}.{EXT.get(m.mime, 'bin')}"
            (out / rel).write_bytes(m.data)
            paths[m.role] = rel
        face = paths.get("image") or paths.get("tgt")
        rows.append(
            {
                "key": item.key,
                "split": "eval" if item.key in eval_keys else "train",
                "kind": item.kind,
                "image": face,  # the face the label describes (a pair's target)
                "src_image": paths.get("src"),
                "instruction": item.instruction,
                "expression": r.expression,
                "intensity": r.intensity,
                "caption": caption(r.expression, r.intensity),
                "n_labels": r.n_labels,
                "n_agree": r.n_agree,
                "votes": json.dumps(r.votes, sort_keys=True),
                "intensity_votes": json.dumps(r.intensity_votes, sort_keys=True),
                "meta": item.meta,
            }
        )
    written: dict[str, str] = {}
    for split in ("train", "eval"):
        part = [r for r in rows if r["split"] == split]
        if "jsonl" in formats:
            p = out / f"{split}.jsonl"
            p.write_text("".join(json.dumps(r) + "\n" for r in part))
            written[f"{split}.jsonl"] = str(p)
        if "parquet" in formats:
            import pyarrow as pa
            import pyarrow.parquet as pq

            p = out / f"{split}.parquet"
            schema = pa.schema(
                [
                    (k, pa.int64() if k in ("n_labels", "n_agree") else pa.string())
                    for k in (rows[0] if rows else {})
                ]
            )
            pq.write_table(pa.Table.from_pylist(part, schema=schema) if rows else pa.table({}), p)
            written[f"{split}.parquet"] = str(p)
    (out / "confusion.png").write_bytes(confusion_png(report["confusion"]))
    summary = {
        **{k: v for k, v in report.items()},
        "train": sum(r["split"] == "train" for r in rows),
        "eval": sum(r["split"] == "eval" for r in rows),
        "files": written,
    }
    (out / "agreement.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
