"""Import items: WebDataset shards (frame or pair samples), a build's manifest, or an image folder."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from annotation_ui.labels import EXPRESSIONS, INTENSITIES, NO_INTENSITY
from annotation_ui.models import GOLD_MAX_LABELS, Item, ItemMedia, Project

IMAGE_EXTS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_LEASE_SECONDS = 600


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


def check_quorum(raters: int, quorum: int, force: bool = False) -> None:
    """1 <= quorum <= raters, and a strict majority (quorum > raters / 2) unless forced."""
    if raters < 1:
        raise ValueError("raters per item: at least 1")
    if not 1 <= quorum <= raters:
        raise ValueError(f"the quorum must lie between 1 and the raters per item ({raters}), not {quorum}")
    if 2 * quorum <= raters and not force:
        raise ValueError(
            f"quorum {quorum} of {raters} is not a strict majority: two different expressions could each "
            f"reach it on one item; use {raters // 2 + 1} or more (or force it)"
        )


def check_team(s: Session, project: Project, force: bool = False) -> None:
    """Refuse raters per item above the project's team (active annotator members) unless forced."""
    from annotation_ui.team import team_size

    n = team_size(s, project)
    if project.raters_per_item <= n or force:
        return
    if n == 0:
        raise ValueError(
            f"project {project.name!r} has no active annotator among its members, so no item could be "
            f"completed: add the annotators first (hfl annotate adduser NAME) and name them "
            f"(--members a,b,c or --members all), or --force to add members later"
        )
    raise ValueError(
        f"project {project.name!r}: {project.raters_per_item} raters per item but only {n} active "
        f"annotator(s) are members, so no item could ever be completed. Lower the raters "
        f"(--raters {n} --quorum {n // 2 + 1}), add members (--members), or --force if more will join"
    )


def configure_project(
    s: Session,
    project: Project,
    raters_per_item: int | None = None,
    quorum: int | None = None,
    force: bool = False,
) -> Project:
    """Change raters per item and quorum, also after labels exist, by this rule:

    * raters go up at any time: every regular item gets the new number of slots (complete items open
      again and are served until they have the new count);
    * raters go down only to the most labels any regular item already holds (labels are never dropped);
      items that reach the new count are complete at once;
    * the quorum may change at any time (it is applied when figures and the export are computed), within
      1..raters and a strict majority unless forced; when only the raters change, the quorum becomes the
      smallest strict majority of the new count (3 of 5, 2 of 3, 3 of 4).
    """
    raters = raters_per_item or project.raters_per_item
    q = quorum or project.quorum
    if quorum is None and raters != project.raters_per_item:
        q = raters // 2 + 1  # the raters changed alone: the quorum becomes their smallest strict majority
    check_quorum(raters, q, force)
    if raters != project.raters_per_item:
        most = s.scalar(select(func.max(Item.n_labels)).where(Item.project_id == project.id, ~Item.is_gold))
        if most is not None and raters < most:
            raise ValueError(
                f"some items already hold {most} labels: raters per item can go down to {most}, not "
                f"{raters} (labels are never deleted)"
            )
        s.execute(
            update(Item)
            .where(Item.project_id == project.id, ~Item.is_gold)
            .values(max_labels=raters)
            .execution_options(synchronize_session=False)
        )
    project.raters_per_item = raters
    project.quorum = q
    s.flush()
    return project


def get_or_create_project(
    s: Session,
    name: str,
    raters_per_item: int | None = None,
    quorum: int | None = None,
    guidelines: str | None = None,
    lease_seconds: int | None = None,
    gold_every: int | None = None,
    force: bool = False,
) -> Project:
    """The named project; settings given here update it (raters and quorum by `configure_project`'s rule)."""
    project = s.scalar(select(Project).where(Project.name == name))
    if project is None:
        from annotation_ui.labels import DEFAULT_GUIDELINES

        raters = raters_per_item or 5
        project = Project(
            name=name,
            raters_per_item=raters,
            quorum=quorum or (3 if raters == 5 else raters // 2 + 1),
            guidelines=guidelines if guidelines is not None else DEFAULT_GUIDELINES,
            lease_seconds=lease_seconds or DEFAULT_LEASE_SECONDS,
            gold_every=10 if gold_every is None else gold_every,
        )
        check_quorum(project.raters_per_item, project.quorum, force)
        s.add(project)
        s.flush()
        return project
    if (raters_per_item, quorum) != (None, None):
        configure_project(s, project, raters_per_item, quorum, force)
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
