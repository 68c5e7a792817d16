"""Atomic Parquet parts and JSON files: a file is visible under its final name only once complete."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def write_part(path: Path, batches: Iterable[list[dict[str, Any]]], schema: pa.Schema | None) -> None:
    """Stream row batches into `path` (via a .tmp file renamed at the end). Stage stats are counted from
    the finished parts (reason_counts), so that units done before a resume count too."""
    tmp = path.with_name(path.name + ".tmp")
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
    os.replace(tmp, path)


def clean_tmp(folder: Path) -> int:
    """Remove leftovers of a killed run; returns how many."""
    n = 0
    for p in folder.rglob("*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def reason_counts(folder: Path, pattern: str = "part-*.parquet") -> tuple[int, dict[str, int]]:
    """Rows and counts per reject reason over all parts (reads one column)."""
    total, counts = 0, {}
    for p in sorted(folder.glob(pattern)):
        col = pq.read_table(p, columns=["reject_reason"]).column(0).to_pylist()
        total += len(col)
        for r in col:
            counts[r or ""] = counts.get(r or "", 0) + 1
    return total, counts
