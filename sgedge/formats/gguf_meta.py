"""Read a GGUF file's metadata and tensor shapes from its header.

gguf-py's GGUFReader parses every array element in Python (1.7 s for a 49k-token
vocabulary), which would dominate start-up; this reader walks the header once, keeps
scalars and strings, records arrays by length only, and never touches tensor data.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgedge.errors import InputError

# GGUF value types -> struct format of scalars (8 = string, 9 = array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# GGML tensor type ids -> names (the ones sgedge writes or llama.cpp quantizes to).
_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K", 11: "Q3_K",
          12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    fields: dict[str, Any]  # arrays are stored as their length
    shapes: dict[str, tuple[int, ...]]  # numpy order: (rows, cols)
    types: dict[str, str]

    @property
    def arch(self) -> str:
        return str(self.fields.get("general.architecture", ""))

    @property
    def is_adapter(self) -> bool:
        return self.fields.get("general.type") == "adapter"

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item == _STRING:
                for _ in range(count):
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
            elif item in _SCALARS:
                self.pos += count * struct.calcsize(_SCALARS[item])
            else:
                for _ in range(count):
                    self.value(item)
            return count
        if kind not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.unpack(_SCALARS[kind])


def read_gguf_info(path: str | Path) -> GGUFInfo:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise ValueError("no GGUF magic")
            c = _Cursor(buf)
            c.pos = 4
            version = c.unpack("<I")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old")
            n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
            fields: dict[str, Any] = {}
            for _ in range(n_kv):
                key = c.string()
                fields[key] = c.value(c.unpack("<I"))
            shapes: dict[str, tuple[int, ...]] = {}
            types: dict[str, str] = {}
            for _ in range(n_tensors):
                name = c.string()
                dims = [c.unpack("<Q") for _ in range(c.unpack("<I"))]
                kind = c.unpack("<I")
                c.unpack("<Q")  # data offset
                shapes[name] = tuple(reversed(dims))
                types[name] = _TYPES.get(kind, str(kind))
    except (ValueError, struct.error, OSError, OverflowError) as e:  # Overflow: a length of 2^63
        raise InputError(f"{path} is not a readable GGUF file ({e})") from e
    return GGUFInfo(path, fields, shapes, types)
