"""ONNX Runtime adapter files (`.onnx_adapter`): read, compose, write.

The format is a FlatBuffers file (schema: onnxruntime/lora/adapter_format/
adapter_schema.fbs, identifier "TORT"): format, adapter and model versions, then a list of
parameters (name, dims, data type, raw little-endian data aligned to 8 bytes). sgedge reads
and writes it itself rather than through the `onnxruntime` package, which would load a
second copy of ONNX Runtime next to onnxruntime-genai's (~20 MiB resident, ~80 ms) in
every process that uses an adapter. Tests check the files against onnxruntime's own
reader and that stock onnxruntime-genai loads them.

ONNX Runtime can neither scale an adapter nor activate two at once, so sgedge composes
them into one: each scale folded into B, several adapters concatenated along the rank
axis (A's columns, B's rows), so that x A B = sum_i s_i x A_i B_i.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgedge._fs import atomic_path
from sgedge.errors import AdapterMismatchError

ADAPTER_VERSION = 1
FORMAT_VERSION = 1
_FILE_ID = b"TORT"
# TensorDataType codes of the schema that an adapter parameter may use here.
_DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 10: np.dtype("<f2")}
_CODES = {v: k for k, v in _DTYPES.items()}


def fingerprint_tag(fingerprint: str) -> int:
    """The base binding an .onnx_adapter stores in its int32 model_version field."""
    return int(fingerprint.split(":", 1)[-1][:7], 16)


# -- reading ------------------------------------------------------------------------------
class _Table:
    """One FlatBuffers table of `buf`, read with bounds checks (a malformed file raises)."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vtable = pos - self._unpack("<i", pos)
        size = self._unpack("<H", vtable)
        self.fields = [self._unpack("<H", vtable + k) for k in range(4, size, 2)]

    def _unpack(self, fmt: str, at: int) -> int:
        if at < 0 or at + struct.calcsize(fmt) > len(self.buf):
            raise ValueError(f"offset {at} outside the file")
        return struct.unpack_from(fmt, self.buf, at)[0]

    def _field(self, i: int) -> int | None:
        off = self.fields[i] if i < len(self.fields) else 0
        return self.pos + off if off else None

    def scalar(self, i: int) -> int:
        at = self._field(i)
        return 0 if at is None else self._unpack("<i", at)

    def vector(self, i: int) -> tuple[int, int]:
        """(start of the elements, count) of a vector or string field."""
        at = self._field(i)
        if at is None:
            return 0, 0
        start = at + self._unpack("<I", at)
        return start + 4, self._unpack("<I", start)

    def tables(self, i: int) -> list[_Table]:
        start, n = self.vector(i)
        return [_Table(self.buf, start + 4 * k + self._unpack("<I", start + 4 * k)) for k in range(n)]

    def string(self, i: int) -> str:
        start, n = self.vector(i)
        if start + n > len(self.buf):
            raise ValueError("a name runs past the end of the file")
        return bytes(self.buf[start:start + n]).decode("utf-8")

    def int64s(self, i: int) -> tuple[int, ...]:
        start, n = self.vector(i)
        return tuple(self._unpack("<q", start + 8 * k) for k in range(n))


@dataclass(frozen=True)
class _Param:
    name: str
    dims: tuple[int, ...]
    dtype_code: int
    offset: int  # of the raw data in the file
    nbytes: int


def _parse(buf: memoryview, path: Path) -> tuple[int, list[_Param]]:
    try:
        if len(buf) < 8 or bytes(buf[4:8]) != _FILE_ID:
            raise ValueError("no 'TORT' file identifier")
        root = _Table(buf, int.from_bytes(buf[0:4], "little"))
        params = []
        for table in root.tables(3):
            name, (data, size) = table.string(0), table.vector(3)
            if data + size > len(buf):
                raise ValueError(f"the data of {name} runs past the end of the file")
            params.append(_Param(name, table.int64s(1), table.scalar(2), data, size))
        return root.scalar(2), params
    except (ValueError, UnicodeDecodeError) as e:
        raise AdapterMismatchError(f"{path} is not an ONNX Runtime adapter file ({e})") from e


def read_adapter_shapes(path: Path) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(model_version, parameter shapes), from the header only (the file is mapped, and
    the weights are not read)."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                version, params = _parse(buf, path)
            finally:
                buf.release()
    except (OSError, ValueError) as e:
        raise AdapterMismatchError(f"{path} is not an ONNX Runtime adapter file ({e})") from e
    return version, {p.name: p.dims for p in params}


def read_adapter(path: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(model_version, parameters); the arrays view one in-memory copy of the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AdapterMismatchError(f"cannot read adapter {path} ({e})") from e
    version, params = _parse(memoryview(data), path)
    out = {}
    for p in params:
        dtype = _DTYPES.get(p.dtype_code)
        count = 1
        for d in p.dims:  # Python ints: a product of huge dims must not wrap around
            count *= d if d >= 0 else 1 << 64
        if dtype is None or count * dtype.itemsize != p.nbytes:
            raise AdapterMismatchError(f"{path}: parameter {p.name} has data type {p.dtype_code} and "
                                       f"{p.nbytes} bytes for dims {list(p.dims)}; sgedge reads float32/float16")
        out[p.name] = np.frombuffer(data, dtype, count, p.offset).reshape(p.dims)
    return version, out


# -- writing ------------------------------------------------------------------------------
class _Writer:
    """Lays the FlatBuffers file out front to back: every offset points forward, vtables
    come before their tables, vectors start on 4 bytes, int64 and raw data on 8."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int, phase: int = 0) -> None:
        self.buf += bytes(-(len(self.buf) + phase) % n)

    def put(self, fmt: str, *values: int) -> int:
        at = len(self.buf)
        self.buf += struct.pack(fmt, *values)
        return at

    def patch_offset(self, at: int, target: int) -> None:
        struct.pack_into("<I", self.buf, at, target - at)

    def vtable(self, n_fields: int) -> int:
        self.align(2)
        return self.put(f"<{2 + n_fields}H", 4 + 2 * n_fields, 4 + 4 * n_fields, *(4 + 4 * k for k in range(n_fields)))

    def table(self, vtable: int, fmt: str, *values: int) -> int:
        self.align(4)
        at = len(self.buf)
        self.put("<i" + fmt, at - vtable, *values)
        return at

    def vector(self, elem_align: int, count: int, payload: bytes) -> int:
        self.align(max(4, elem_align), 4)  # the elements, after the 4-byte count, land aligned
        at = self.put("<I", count)
        self.buf += payload
        return at


def write_adapter(path: Path, params: dict[str, np.ndarray], model_version: int) -> None:
    """Write `params` as an .onnx_adapter (temp file, then rename)."""
    w = _Writer()
    w.put("<I", 0)  # root offset, patched below
    w.buf += _FILE_ID
    root_vt = w.vtable(4)
    root = w.table(root_vt, "iiiI", FORMAT_VERSION, ADAPTER_VERSION, int(model_version), 0)
    param_vt = w.vtable(4)
    vec = w.vector(4, len(params), bytes(4 * len(params)))
    w.patch_offset(0, root)
    w.patch_offset(root + 16, vec)
    for k, (name, value) in enumerate(params.items()):
        arr = np.ascontiguousarray(value)
        code = _CODES.get(arr.dtype.newbyteorder("<"))
        if code is None:
            raise ValueError(f"adapter parameter {name} is {arr.dtype}; .onnx_adapter files here hold float32/float16")
        table = w.table(param_vt, "IIiI", 0, 0, code, 0)
        w.patch_offset(vec + 4 + 4 * k, table)
        raw = name.encode("utf-8")
        w.patch_offset(table + 4, w.vector(1, len(raw), raw + b"\0"))
        w.patch_offset(table + 8, w.vector(8, arr.ndim, struct.pack(f"<{arr.ndim}q", *arr.shape)))
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        w.patch_offset(table + 16, w.vector(8, len(data), data))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(w.buf)


# -- composing ----------------------------------------------------------------------------
def compose(adapters: list[tuple[Path, float]]) -> tuple[int, dict[str, np.ndarray]]:
    """(model_version, parameters) of one adapter equal to the scaled sum of `adapters`."""
    parts: dict[str, list[np.ndarray]] = {}
    version = 0
    for path, scale in adapters:
        version, params = read_adapter(path)
        for pname, arr in params.items():
            if pname.endswith("lora_B.MatMul.weight") and scale != 1.0:
                arr = arr * np.asarray(scale, dtype=arr.dtype)
            parts.setdefault(pname, []).append(arr)
    return version, {
        pname: np.concatenate(arrs, axis=1 if pname.endswith("lora_A.MatMul.weight") else 0)
        for pname, arrs in parts.items()
    }
