"""ONNX Runtime adapter files (`onnxruntime.AdapterFormat`): read, compose, write.

ONNX Runtime can neither scale an adapter nor activate two at once, so sgedge composes
them into one: each scale folded into B, several adapters concatenated along the rank
axis (A's columns, B's rows), so that x A B = sum_i s_i x A_i B_i.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sgedge._fs import atomic_path
from sgedge.errors import AdapterMismatchError

ADAPTER_VERSION = 1


def write_adapter(path: Path, params: dict[str, np.ndarray], model_version: int) -> None:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(ADAPTER_VERSION)
    fmt.set_model_version(model_version)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in params.items()})
    with atomic_path(path) as tmp:
        fmt.export_adapter(str(tmp))


def fingerprint_tag(fingerprint: str) -> int:
    """The base binding an .onnx_adapter stores in its int32 model_version field."""
    return int(fingerprint.split(":", 1)[-1][:7], 16)


def _read(path: Path):
    import onnxruntime as ort

    try:
        return ort.AdapterFormat.read_adapter(str(path))
    except Exception as e:
        raise AdapterMismatchError(f"{path} is not an ONNX Runtime adapter file ({e})") from e


_FILE_ID = b"TORT"


class _Table:
    """One FlatBuffers table of `buf`, read with bounds checks (a malformed file raises)."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vtable = pos - self._i32(pos)
        size = self._u16(vtable)
        self.fields = [self._u16(vtable + k) for k in range(4, size, 2)]

    def _unpack(self, fmt: str, at: int) -> int:
        import struct

        if at < 0 or at + struct.calcsize(fmt) > len(self.buf):
            raise ValueError(f"offset {at} outside the file")
        return struct.unpack_from(fmt, self.buf, at)[0]

    def _i32(self, at: int) -> int:
        return self._unpack("<i", at)

    def _u16(self, at: int) -> int:
        return self._unpack("<H", at)

    def _field(self, i: int) -> int | None:
        off = self.fields[i] if i < len(self.fields) else 0
        return self.pos + off if off else None

    def scalar(self, i: int, fmt: str = "<i") -> int:
        at = self._field(i)
        return 0 if at is None else self._unpack(fmt, at)

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
            raise ValueError("string outside the file")
        return bytes(self.buf[start:start + n]).decode("utf-8")

    def int64s(self, i: int) -> tuple[int, ...]:
        start, n = self.vector(i)
        return tuple(self._unpack("<q", start + 8 * k) for k in range(n))


def read_adapter_shapes(path: Path) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(model_version, parameter shapes), read from the file's FlatBuffers header
    (schema: onnxruntime/lora/adapter_format/adapter_schema.fbs) without touching the
    weights and without importing the `onnxruntime` package, which would load a second
    copy of ONNX Runtime next to onnxruntime-genai's (~30 MiB resident)."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                if len(buf) < 8 or bytes(buf[4:8]) != _FILE_ID:
                    raise ValueError("no 'TORT' file identifier")
                root = _Table(buf, int.from_bytes(buf[0:4], "little"))
                version = root.scalar(2)
                shapes = {}
                for param in root.tables(3):
                    name, (data, size) = param.string(0), param.vector(3)
                    if data + size > len(buf):
                        raise ValueError(f"the data of {name} runs past the end of the file")
                    shapes[name] = param.int64s(1)
            finally:
                buf.release()
    except (OSError, ValueError) as e:
        raise AdapterMismatchError(f"{path} is not an ONNX Runtime adapter file ({e})") from e
    return version, shapes


def compose(adapters: list[tuple[Path, float]]) -> tuple[int, dict[str, np.ndarray]]:
    """(model_version, parameters) of one adapter equal to the scaled sum of `adapters`.
    The files' buffers are viewed, not copied, until the concatenation makes the result."""
    parts: dict[str, list[np.ndarray]] = {}
    version = 0
    keep = []  # the readers own the memory the views point into
    for path, scale in adapters:
        fmt = _read(path)
        keep.append(fmt)
        version = int(fmt.get_model_version())
        for pname, value in fmt.get_parameters().items():
            arr = value.numpy()
            if pname.endswith("lora_B.MatMul.weight") and scale != 1.0:
                arr = arr * np.asarray(scale, dtype=arr.dtype)
            parts.setdefault(pname, []).append(arr)
    composed = {
        pname: np.concatenate(arrs, axis=1 if pname.endswith("lora_A.MatMul.weight") else 0)
        for pname, arrs in parts.items()
    }
    del parts, keep
    return version, composed
