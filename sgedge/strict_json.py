"""JSON read as RFC 8259 has it, for files sgedge trusts with safety or shapes
(manifests, adapter and model configs, tokenizers): no NaN or Infinity, no duplicate
keys (Python's json keeps the last one silently), a bounded size and nesting. Errors
are the caller's error type with the file named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgedge.errors import InputError

MAX_DEPTH = 64


class _Refused(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Refused(f"key {k!r} appears twice in one object (which one counts is not defined by JSON)")
        out[k] = v
    return out


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def depth(value: Any, limit: int) -> int:
    """How deeply `value` nests (stops counting past `limit`)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, d + 1) for x in v]
    return deepest


def loads(data: bytes | str, what: str, *, error: type[Exception] = InputError, max_depth: int = MAX_DEPTH,
          want: type | None = dict) -> Any:
    """Parse `data` (from `what`, named in errors) strictly; `want`: the top-level type."""
    try:
        value = json.loads(data, object_pairs_hook=_pairs, parse_constant=_constant)
    except _Refused as e:
        raise error(f"{what}: {e}") from None
    except RecursionError:
        raise error(f"{what} nests its values too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{what} is not valid JSON ({e})") from None
    if want is not None and not isinstance(value, want):
        raise error(f"{what} must hold a JSON {'object' if want is dict else want.__name__}, "
                    f"not {type(value).__name__}")
    if depth(value, max_depth) > max_depth:
        raise error(f"{what} nests its values deeper than {max_depth} levels")
    return value


def read(path: str | Path, *, error: type[Exception] = InputError, max_bytes: int = 1 << 30, **kw: Any) -> Any:
    """`loads` of a file, refused unread when larger than `max_bytes`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size} bytes, more than such a file holds ({max_bytes})")
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror or e})") from None
    return loads(data, str(path), error=error, **kw)
