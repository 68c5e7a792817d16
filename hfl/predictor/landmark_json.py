"""Grouped landmark JSON (App. D.2): coordinates on the 512 x 512 canvas, grouped by facial region, and the
robust parser of predictor answers.

Format (iBUG-68 order inside each group)::

    {"JAW": [[x, y] x 17], "BROWS": [[x, y] x 10], "NOSE": [[x, y] x 9], "EYES": [[x, y] x 12],
     "MOUTH": [[x, y] x 20]}

``parse_landmarks`` reads the *last* answer in a text: a grouped object, ``{"landmarks": [...]}``, a flat
list of 68 pairs or 136 numbers, or "(X, Y)" pairs in prose after the last "Step 4"/"Final" marker. It is
lenient about code fences, single quotes, trailing commas and lower-case group names, repairs a truncated
last object only when all 68 points are already there, and returns None otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

GROUPS: dict[str, tuple[int, int]] = {
    "JAW": (0, 17),
    "BROWS": (17, 27),
    "NOSE": (27, 36),
    "EYES": (36, 48),
    "MOUTH": (48, 68),
}
_NUM = r"[-+]?\d+(?:\.\d+)?"


def to_grouped(points: np.ndarray, decimals: int = 0) -> dict[str, list[list[float]]]:
    """(68, 2) -> grouped dict with rounded coordinates (ints when ``decimals == 0``)."""
    pts = np.round(np.asarray(points, np.float64).reshape(68, 2), decimals)
    conv = (lambda v: int(v)) if decimals == 0 else float  # noqa: E731
    return {g: [[conv(x), conv(y)] for x, y in pts[a:b]] for g, (a, b) in GROUPS.items()}


def dumps_grouped(points: np.ndarray) -> str:
    """Compact one-line-per-group JSON text of ``to_grouped``."""
    g = to_grouped(points)
    rows = [f'  "{k}": {json.dumps(v, separators=(",", ":"))}' for k, v in g.items()]
    return "{\n" + ",\n".join(rows) + "\n}"


def _as_points(obj: Any) -> np.ndarray | None:
    """Points from a parsed JSON value (grouped dict, {"landmarks": ...}, list of pairs, flat list)."""
    if isinstance(obj, dict):
        upper = {str(k).strip().upper(): v for k, v in obj.items()}
        if all(g in upper for g in GROUPS):
            parts = [_as_points(upper[g]) for g in GROUPS]
            if any(p is None for p in parts):
                return None
            pts = np.concatenate(parts)
            sizes = [b - a for a, b in GROUPS.values()]
            return pts if [len(p) for p in parts] == sizes else None
        for key in ("LANDMARKS", "TARGET_LANDMARKS", "EDITED_LANDMARKS", "POINTS", "COORDINATES"):
            if key in upper:
                return _as_points(upper[key])
        return None
    if isinstance(obj, list) and obj:
        try:
            if all(isinstance(p, dict) for p in obj):
                arr = np.array([[float(p.get("x", p.get("X"))), float(p.get("y", p.get("Y")))] for p in obj])
            else:
                arr = np.asarray(obj, np.float64)
        except (TypeError, ValueError):
            return None
        if arr.ndim == 1 and arr.size % 2 == 0:
            arr = arr.reshape(-1, 2)
        return arr if arr.ndim == 2 and arr.shape[1] == 2 else None
    return None


def _lenient(text: str) -> Any:
    for attempt in (
        text,
        re.sub(r",\s*([}\]])", r"\1", text),
        re.sub(r",\s*([}\]])", r"\1", text.replace("'", '"')),
    ):
        try:
            return json.loads(attempt)
        except ValueError:
            continue
    return None


def _balanced_candidates(text: str) -> list[tuple[int, str]]:
    """(start, text) of every top-level {...} or [...] span, plus an unclosed tail (start, text)."""
    out: list[tuple[int, str]] = []
    stack: list[str] = []
    start = -1
    for i, ch in enumerate(text):
        if ch in "{[":
            if not stack:
                start = i
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            if ch != stack[-1]:
                stack.clear()
                continue
            stack.pop()
            if not stack:
                out.append((start, text[start : i + 1]))
    if stack and start >= 0:  # truncated tail: close it
        tail = re.sub(r"[,\s]*[-+\d.]*$", "", text[start:])
        closers, depth = [], []
        for ch in tail:
            if ch in "{[":
                depth.append("}" if ch == "{" else "]")
            elif ch in "}]" and depth:
                depth.pop()
        closers = "".join(reversed(depth))
        out.append((start, tail + closers))
    return out


def parse_landmarks(text: str) -> np.ndarray | None:
    """The last complete set of 68 landmarks in a predictor answer, or None (see the module docstring)."""
    if not text:
        return None
    clean = re.sub(r"```[a-zA-Z0-9_-]*", " ", text)
    for _, cand in reversed(_balanced_candidates(clean)):
        pts = _as_points(_lenient(cand))
        if pts is not None and pts.shape == (68, 2) and np.isfinite(pts).all():
            return pts
    marker = max(clean.rfind("Step 4"), clean.rfind("Final"), 0)
    pairs = re.findall(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)", clean[marker:])
    if len(pairs) >= 68:
        return np.asarray(pairs[-68:], np.float64)
    return None
