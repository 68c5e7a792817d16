"""Row helpers shared by stages: rejection, reading the kept rows of an upstream part."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from hfl.storage import parquet_file

# reasons any stage may write through these helpers (judged_safely, a stage's error_rows), with their text
REASONS = {"error": "an unexpected error while processing the row (reject_detail holds it)"}


def reject(row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    """Mark a row rejected; the first failed check names the reason, detail says by how much."""
    row["reject_reason"] = reason
    row["reject_detail"] = detail
    return row


def kept_batches(path: str, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Batches of the kept rows (reject_reason null) of one upstream part, streamed."""
    pf = parquet_file(path)
    for batch in pf.iter_batches(batch_size=batch_size):
        rows = [r for r in batch.to_pylist() if r.get("reject_reason") is None]
        if rows:
            yield rows


def judged_safely(judge: Callable[[dict[str, Any]], dict[str, Any]], row: dict[str, Any]) -> dict[str, Any]:
    """judge(row), with an unexpected failure on one row recorded as reason `error` on that row."""
    try:
        return judge(dict(row))
    except Exception as exc:
        return reject(dict(row), "error", f"{type(exc).__name__}: {exc}"[:500])
