"""Parquet parts and JSON files, written so that a file is visible under its final name only once complete:
a temporary name renamed into place on the local disk, one upload on an object store (hfl.storage)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hfl.storage import Location, RemotePath, read_table, staged
from hfl.storage import write_json_atomic as write_json_atomic


def write_part(path: Location, batches: Iterable[list[dict[str, Any]]], schema: pa.Schema | None) -> None:
    """Stream row batches into `path` (local: a .tmp file renamed at the end; object store: a local temporary
    file uploaded once complete, so the part is its own done marker). Stage stats are counted from the
    finished parts (reason_counts), so that units done before a resume count too."""
    with staged(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for rows in batches:
                if not rows:
                    continue
                table = pa.Table.from_pylist(rows, schema=schema)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
            if writer is None:  # a unit with no rows still marks itself done
                empty = (
                    schema.empty_table()
                    if schema is not None
                    else pa.table({"reject_reason": pa.array([], pa.string())})
                )
                writer = pq.ParquetWriter(tmp, empty.schema, compression="zstd")
        finally:
            if writer is not None:
                writer.close()


def clean_tmp(folder: Location) -> int:
    """Remove leftovers of a killed run; returns how many (object stores leave none: no temporary names)."""
    if isinstance(folder, RemotePath):
        return 0
    n = 0
    for p in folder.rglob("*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def reason_counts(folder: Location, pattern: str = "part-*.parquet") -> tuple[int, dict[str, int]]:
    """Rows and counts per reject reason over all parts (reads one column)."""
    total, counts = 0, {}
    for p in sorted(folder.glob(pattern)):
        col = read_table(p, columns=["reject_reason"]).column(0).to_pylist()
        total += len(col)
        for r in col:
            counts[r or ""] = counts.get(r or "", 0) + 1
    return total, counts
