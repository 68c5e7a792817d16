"""Typed dataclasses from YAML mappings: one checker for the pipeline config and the training recipes.

`build(cls, data, path, errors)` fills a dataclass from a dict, recursing into dataclass fields; every
unknown key (with a "did you mean"), wrong type or non-mapping is appended to `errors` instead of raising,
so one message can list every problem. ints are accepted (and converted) where floats are expected; bools
are never numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


def type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(value fits tp, the value coerced: int -> float where a float is expected)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        if not args:
            return True, value
        out = []
        for item in value:
            ok, v = type_ok(item, args[0])
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        args = typing.get_args(tp)
        if not args:
            return True, value
        out_d = {}
        for k, item in value.items():
            ok, v = type_ok(item, args[1])
            if not ok:
                return False, value
            out_d[str(k)] = v
        return True, out_d
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        return True, float(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, tp), value


def build(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    """An instance of dataclass `cls` from mapping `data` (None = defaults); problems go to `errors`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            errors.append(f"{where}: unknown key{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, where, errors)
            continue
        ok, coerced = type_ok(value, tp)
        if not ok:
            tname = getattr(tp, "__name__", str(tp))
            errors.append(f"{where}: expected {tname}, got {type(value).__name__} ({value!r})")
            continue
        kwargs[key] = coerced
    return cls(**kwargs)
