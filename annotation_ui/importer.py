"""Import items: WebDataset shards (frame or pair samples), a build's manifest, or an image folder."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_ui.labels import EXPRESSIONS, INTENSITIES, NO_INTENSITY
from annotation_ui.models import GOLD_MAX_LABELS, Item, ItemMedia, Project

IMAGE_EXTS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024


@dataclass
class Sample:
    key: str
    kind: str  # face | pair
    media: dict[str, tuple[str, bytes]]  # role -> (mime, bytes)
    meta: str | None = None
    instruction: str | None = None
    source: str | None = None


@dataclass
class ImportResult:
    added: int = 0
    existing: int = 0
    skipped: list[str] = field(default_factory=list)


def _mime(ext: str) -> str | None:
    return IMAGE_EXTS.get("." + ext.lower().rsplit(".", 1)[-1])


def sample_from_parts(key: str, parts: dict[str, bytes], source: str) -> Sample | None:
    """Detect the sample kind by its keys: `src.jpg` + `tgt.jpg` is a pair, `jpg`/`png` a face."""
    meta = parts["json"].decode() if "json" in parts else None
    src = next((k for k in parts if k.startswith("src.") and _mime(k)), None)
    tgt = next((k for k in parts if k.startswith("tgt.") and _mime(k)), None)
    if src and tgt:
        txt = parts.get("txt")
        return Sample(
            key=key,
            kind="pair",
            media={"src": (_mime(src) or "", parts[src]), "tgt": (_mime(tgt) or "", parts[tgt])},
            meta=meta,
            instruction=txt.decode().strip() if txt else None,
            source=source,
        )
    img = next((k for k in ("jpg", "jpeg", "png", "webp") if k in parts), None)
    if img:
        return Sample(
            key=key, kind="face", media={"image": (_mime(img) or "", parts[img])}, meta=meta, source=source
        )
    return None


def read_shard(path: Path, keys: set[str] | None = None) -> Iterator[Sample | str]:
    """Samples of one WebDataset tar (members grouped by key = name up to the first dot of the basename).

    Yields a Sample, or the key of a sample that has no image (reported as skipped)."""
    groups: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isfile() or m.size > MAX_IMAGE_BYTES:
                continue
            base = m.name.rsplit("/", 1)[-1]
            if "." not in base or base.startswith("."):
                continue
            prefix = m.name[: len(m.name) - len(base)]
            stem, ext = base.split(".", 1)
            key = prefix + stem
            if keys is not None and key not in keys:
                continue
            f = tar.extractfile(m)
            if f is None:
                continue
            if key not in groups:
                groups[key] = {}
                order.append(key)
            groups[key][ext] = f.read()
    for key in order:
        sample = sample_from_parts(key, groups[key], source=path.name)
        yield sample if sample is not None else key


def read_manifest(path: Path, split: str | None = None) -> Iterator[Sample | str]:
    """A build's manifest.parquet: the shards it names, read for the keys it lists."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["key", "split", "shard"]).to_pylist()
    shards: dict[tuple[str, str], set[str]] = {}
    for row in table:
        if split is None or row["split"] == split:
            shards.setdefault((row["split"], row["shard"]), set()).add(row["key"])
    for (sp, shard), keys in sorted(shards.items()):
        yield from read_shard(path.parent / "shards" / sp / shard, keys)


def read_folder(folder: Path) -> Iterator[Sample | str]:
    """An image folder: one face per image, the key is its path relative to the folder."""
    for p in sorted(folder.rglob("*")):
        mime = IMAGE_EXTS.get(p.suffix.lower())
        if p.is_file() and mime:
            key = p.relative_to(folder).with_suffix("").as_posix()
            yield Sample(key=key, kind="face", media={"image": (mime, p.read_bytes())}, source=str(folder))


def read_source(path: Path, split: str | None = None) -> Iterator[Sample | str]:
    """Pick the reader: a .tar shard, a manifest, a build folder (its manifest, else its shards), a folder."""
    if path.is_file() and path.suffix == ".tar":
        return read_shard(path)
    if path.is_file() and path.suffix == ".parquet":
        return read_manifest(path, split)
    if path.is_dir() and (path / "manifest.parquet").is_file():
        return read_manifest(path / "manifest.parquet", split)
    if path.is_dir() and (path / "shards").is_dir():
        pattern = f"{split}/*.tar" if split else "*/*.tar"
        return (s for shard in sorted((path / "shards").glob(pattern)) for s in read_shard(shard))
    if path.is_dir():
        return read_folder(path)
    raise FileNotFoundError(f"{path}: not a shard (.tar), manifest (.parquet), build or image folder")


def load_gold(path: Path) -> dict[str, tuple[str, str | None]]:
    """Gold answers: JSONL or a JSON list of {"key", "expression", "intensity"}, or CSV with those columns."""
    text = path.read_text()
    rows: list[dict]
    if path.suffix == ".csv":
        import csv

        rows = list(csv.DictReader(text.splitlines()))
    elif text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    gold: dict[str, tuple[str, str | None]] = {}
    for r in rows:
        e, i = r["expression"], (r.get("intensity") or None)
        if (
            e not in EXPRESSIONS
            or (e in NO_INTENSITY) != (i is None)
            or (i is not None and i not in INTENSITIES)
        ):
            raise ValueError(f"gold {r.get('key')!r}: bad label {e!r}/{i!r}")
        gold[str(r["key"])] = (e, i)
    return gold


def get_or_create_project(
    s: Session,
    name: str,
    raters_per_item: int | None = None,
    quorum: int | None = None,
    guidelines: str | None = None,
    lease_seconds: int | None = None,
    gold_every: int | None = None,
) -> Project:
    """The named project; settings given here update it (raters/quorum only while it has no items)."""
    project = s.scalar(select(Project).where(Project.name == name))
    if project is None:
        from annotation_ui.labels import DEFAULT_GUIDELINES

        project = Project(
            name=name,
            raters_per_item=raters_per_item or 5,
            quorum=quorum or 3,
            guidelines=guidelines if guidelines is not None else DEFAULT_GUIDELINES,
            lease_seconds=lease_seconds or 600,
            gold_every=10 if gold_every is None else gold_every,
        )
        if not 1 <= project.quorum <= project.raters_per_item:
            raise ValueError("the quorum must lie between 1 and the raters per item")
        s.add(project)
        s.flush()
        return project
    has_items = s.scalar(select(Item.id).where(Item.project_id == project.id).limit(1)) is not None
    if (
        has_items
        and (raters_per_item, quorum) != (None, None)
        and (
            (raters_per_item or project.raters_per_item) != project.raters_per_item
            or (quorum or project.quorum) != project.quorum
        )
    ):
        raise ValueError(f"project {name!r} has items: raters per item and quorum are fixed")
    project.raters_per_item = raters_per_item or project.raters_per_item
    project.quorum = quorum or project.quorum
    if guidelines is not None:
        project.guidelines = guidelines
    if lease_seconds is not None:
        project.lease_seconds = lease_seconds
    if gold_every is not None:
        project.gold_every = gold_every
    return project


def import_samples(
    s: Session,
    project: Project,
    samples: Iterator[Sample | str],
    gold: dict[str, tuple[str, str | None]] | None = None,
    limit: int | None = None,
) -> ImportResult:
    """Add samples as items; keys already in the project are left as they are (re-import is idempotent)."""
    gold = gold or {}
    existing = set(s.scalars(select(Item.key).where(Item.project_id == project.id)))
    result = ImportResult()
    for sample in samples:
        if limit is not None and result.added >= limit:
            break
        if isinstance(sample, str):
            result.skipped.append(sample)
            continue
        if sample.key in existing:
            result.existing += 1
            continue
        g = gold.get(sample.key)
        item = Item(
            project_id=project.id,
            key=sample.key,
            kind=sample.kind,
            instruction=sample.instruction,
            meta=sample.meta,
            source=sample.source,
            is_gold=g is not None,
            gold_expression=g[0] if g else None,
            gold_intensity=g[1] if g else None,
            max_labels=GOLD_MAX_LABELS if g else project.raters_per_item,
            n_labels=0,
        )
        s.add(item)
        s.flush()
        for role, (mime, data) in sample.media.items():
            s.add(ItemMedia(item_id=item.id, role=role, mime=mime, data=data))
        existing.add(sample.key)
        result.added += 1
    s.flush()
    return result
