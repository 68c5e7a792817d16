"""Storage: where builds read and write. Plain paths and ``file://`` are the local disk (pathlib, writes
via a temporary file renamed into place); ``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``memory://``, ...
go through fsspec filesystems (s3fs, gcsfs, pyarrow's HDFS, adlfs), whose credentials and endpoints come
from their usual environment/config (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...).

On an object store an object becomes visible only once its upload completes, so there is no temporary
name and no rename: a part is written once under its final name and is its own done marker.

``location(value)`` gives a ``pathlib.Path`` for local values (behaviour unchanged) and a ``RemotePath``
(the subset of the pathlib API the engine and stages use) for URLs. The helpers below accept either.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

#: protocols whose filesystem packages are installed with hfl or named in the error
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs"}


def is_remote(value: str | os.PathLike[str]) -> bool:
    """True for a URL whose protocol is not the local disk."""
    s = str(value)
    return "://" in s and not s.startswith("file://")


def filesystem(protocol: str) -> Any:
    """The fsspec filesystem of a protocol, one per process and configuration (the protocol's environment
    variables), with directory listings never cached (other workers write the same prefixes: a cached
    listing would hide their parts)."""
    env = tuple(os.environ.get(n, "") for n in STORAGE_ENV.get(protocol, ()))
    return _filesystem(protocol, env)


@cache
def _filesystem(protocol: str, env: tuple[str, ...]) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol, use_listings_cache=False, skip_instance_cache=True)
    except ImportError as exc:
        pkg = PACKAGES.get(protocol, f"the fsspec implementation of '{protocol}'")
        raise ImportError(f"{protocol}:// storage needs package {pkg} (pip install {pkg})") from exc
    except TypeError:  # filesystems without the listings-cache option (hdfs, memory)
        return fsspec.filesystem(protocol)


@dataclass(frozen=True)
class _Stat:
    st_size: int


class RemotePath:
    """A file or prefix on an fsspec filesystem, with the pathlib methods the build uses."""

    def __init__(self, url: str) -> None:
        protocol, _, rest = str(url).partition("://")
        self.protocol = protocol
        self.key = rest.rstrip("/")  # bucket/prefix/name (no protocol)

    # ------------------------------------------------------------------ pure path operations
    @property
    def fs(self) -> Any:
        return filesystem(self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.key}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __lt__(self, other: RemotePath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str | os.PathLike[str]) -> RemotePath:
        return RemotePath(f"{self}/{str(name).strip('/')}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        return RemotePath(f"{self.protocol}://{posixpath.dirname(self.key)}")

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("/"))

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        return PurePosixPath(self.key).relative_to(other.key)

    def resolve(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    # ------------------------------------------------------------------ queries
    def exists(self) -> bool:
        return bool(self.fs.exists(self.key))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.key))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.key))

    def stat(self) -> _Stat:
        return _Stat(int(self.fs.size(self.key)))

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        for k in self.fs.glob(f"{self.key}/{pattern}"):
            yield RemotePath(f"{self.protocol}://{k}")

    def rglob(self, pattern: str) -> Iterator[RemotePath]:
        for k in self.fs.find(self.key):
            if fnmatch.fnmatch(posixpath.basename(k), pattern):
                yield RemotePath(f"{self.protocol}://{k}")

    def iterdir(self) -> Iterator[RemotePath]:
        for k in self.fs.ls(self.key, detail=False):
            yield RemotePath(f"{self.protocol}://{k}")

    # ------------------------------------------------------------------ reading and writing
    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        return self.fs.open(self.key, mode, **kwargs)

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.key))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        self.fs.pipe_file(self.key, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a prefix exists once an object is under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise


Location = Path | RemotePath


def location(value: str | os.PathLike[str] | RemotePath) -> Location:
    """A Path (plain path or file://) or a RemotePath (any other URL)."""
    if isinstance(value, Path | RemotePath):
        return value
    s = str(value)
    if s.startswith("file://"):
        return Path(s[len("file://") :])
    if is_remote(s):
        return RemotePath(s)
    return Path(s)


def _fs_key(p: Location) -> tuple[Any, str]:
    """(filesystem for pyarrow, path on it): None means pyarrow's local filesystem."""
    if isinstance(p, RemotePath):
        return p.fs, p.key
    return None, str(p)


# ---------------------------------------------------------------------------- Parquet


def parquet_file(p: str | Location) -> pq.ParquetFile:
    fs, key = _fs_key(location(p))
    return pq.ParquetFile(key, filesystem=fs) if fs is not None else pq.ParquetFile(key)


def read_table(p: str | Location, columns: list[str] | None = None) -> pa.Table:
    fs, key = _fs_key(location(p))
    return pq.read_table(key, columns=columns, filesystem=fs)


def dataset(p: str | Location | list[Location]) -> pads.Dataset:
    """A Parquet dataset of one file or a list of files (all on one filesystem)."""
    locs = [location(x) for x in p] if isinstance(p, list) else [location(p)]
    keys = [_fs_key(x) for x in locs]
    fs = keys[0][0] if keys else None
    paths = [k for _, k in keys]
    return pads.dataset(paths if isinstance(p, list) else paths[0], format="parquet", filesystem=fs)


def write_table(table: pa.Table, p: str | Location, **kwargs: Any) -> None:
    """Write one Parquet file atomically (local: temporary name renamed; remote: one upload)."""
    dest = location(p)
    with staged(dest) as tmp:
        pq.write_table(table, tmp, **kwargs)


# ---------------------------------------------------------------------------- whole files


class staged:
    """Context manager giving a local file path to write; on success it becomes `dest` in one step:
    a rename on the local disk, one upload on an object store (visible only once complete). On an error
    nothing appears under `dest`."""

    def __init__(self, dest: str | Location) -> None:
        self.dest = location(dest)
        self.tmp = ""

    def __enter__(self) -> str:
        if isinstance(self.dest, RemotePath):
            fd, self.tmp = tempfile.mkstemp(prefix="hfl-", suffix="." + self.dest.name)
            os.close(fd)
        else:
            self.tmp = str(self.dest.with_name(self.dest.name + ".tmp"))
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                if isinstance(self.dest, RemotePath):
                    self.dest.fs.put_file(self.tmp, self.dest.key)
                else:
                    os.replace(self.tmp, self.dest)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)


def write_bytes_atomic(p: str | Location, data: bytes) -> None:
    dest = location(p)
    if isinstance(dest, RemotePath):
        dest.write_bytes(data)  # one PUT: the object appears complete or not at all
        return
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def write_json_atomic(p: str | Location, obj: Any) -> None:
    write_bytes_atomic(p, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(p: str | Location) -> Any:
    return json.loads(location(p).read_text())


def rmtree(p: str | Location) -> None:
    """Remove a folder (local) or every object under a prefix (remote); missing is fine."""
    loc = location(p)
    if isinstance(loc, RemotePath):
        if loc.exists():
            loc.fs.rm(loc.key, recursive=True)
    elif loc.is_dir():
        shutil.rmtree(loc)
    else:
        loc.unlink(missing_ok=True)


def makedirs(p: str | Location) -> None:
    location(p).mkdir(parents=True, exist_ok=True)


@contextmanager
def local_copy(p: str) -> Iterator[str]:
    """A local file path for readers that need one (video decoders): the path itself when local (plain or
    file://), else a temporary download removed on exit."""
    if not is_remote(p):
        yield p[len("file://") :] if p.startswith("file://") else p
        return
    loc = RemotePath(p)
    fd, tmp = tempfile.mkstemp(prefix="hfl-in-", suffix=loc.suffix)
    os.close(fd)
    try:
        loc.fs.get_file(loc.key, tmp)
        yield tmp
    finally:
        os.unlink(tmp)


#: environment variables that configure each protocol's filesystem (endpoints, regions, credentials)
STORAGE_ENV = {
    "s3": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID",
           "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE",
           "AWS_SHARED_CREDENTIALS_FILE"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST"),
    "hdfs": ("HADOOP_HOME", "HADOOP_CONF_DIR", "ARROW_LIBHDFS_DIR", "CLASSPATH", "KRB5CCNAME"),
}  # fmt: skip
STORAGE_ENV["s3a"] = STORAGE_ENV["s3"]
STORAGE_ENV["gcs"] = STORAGE_ENV["gs"]


def storage_env(*values: str) -> dict[str, str]:
    """The driver's variables configuring the filesystems of these URLs (set ones only): forwarded to the
    build's Ray workers, so that a worker on another node reaches the same endpoint with the same
    credentials as the driver. Local paths need none."""
    env: dict[str, str] = {}
    for v in values:
        if is_remote(v):
            for name in STORAGE_ENV.get(str(v).split("://", 1)[0], ()):
                if os.environ.get(name):
                    env[name] = os.environ[name]
    return env


def register_webdataset() -> None:
    """Let webdataset open s3:// gs:// hdfs:// abfs:// shard URLs through fsspec (webdataset has no S3
    handler of its own): ``wds.WebDataset("s3://bucket/out/shards/train/hfl-train-{000000..000003}.tar")``."""
    from webdataset.gopen import gopen_schemes

    def _open(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
        loc = RemotePath(url)
        return loc.fs.open(loc.key, mode)

    for proto in ("s3", "s3a", "gs", "gcs", "hdfs", "abfs", "az"):
        gopen_schemes[proto] = _open
