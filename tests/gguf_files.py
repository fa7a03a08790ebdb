"""Rewriting GGUF files in tests: a copy with metadata changed, keys dropped or tensors added."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def rewrite_gguf(src: Path, out: Path, *, change: dict[str, Any] | None = None,
                 drop: Callable[[str], bool] = lambda _: False, extra: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of `src` with metadata values replaced (same type; None drops the key), the
    keys `drop` names left out, and `extra` tensors first."""
    import gguf

    change = change or {}
    reader = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or drop(field.name):
            continue
        value = change.get(field.name, field.contents())
        if value is None:
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, value, field.types[0], sub_type=sub)
    for name, arr in (extra or {}).items():
        w.add_tensor(name, arr)
    for t in reader.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
