"""YAML recipes (``hfl train`` / ``hfl edit``) with ``a.b.c=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML recipe and apply ``a.b.c=value`` overrides (values parsed as YAML)."""
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return cfg
