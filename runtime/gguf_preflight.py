"""Pre-flight checks of a GGUF file before llama.cpp sees it.

llama.cpp answers most bad files with an error, but some with `GGML_ASSERT` or an
uncaught C++ exception, which abort the whole process (exit 134, a debugger dump on
stdout, nothing an app can catch). Found so far: a header naming far more layers than
the file holds, a vocabulary that repeats a token, a SentencePiece vocabulary without
the byte tokens its fallback looks up (`std::out_of_range` at load or at the first
unknown character). This module refuses those, and every tensor whose type, shape or data
range does not fit the file, with a message naming the problem; then llama.cpp loads.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from sgedge.errors import InputError
from sgedge.formats.gguf_meta import _ARRAY, _SCALARS, _STRING, _Cursor

MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS
MAX_DIMS = 4  # GGML_MAX_DIMS
_VOCAB_ARRAYS = ("tokenizer.ggml.tokens",)


# GGML type id -> (elements per block, bytes per block): gguf-py's GGML_QUANT_SIZES, kept
# here because importing gguf-py costs ~180 ms of every start-up (a test keeps them equal).
TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66),
    17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54),
    35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18)}


class _Walk(_Cursor):
    """A header walk that keeps the vocabulary's strings and every array's element type."""

    def __init__(self, buf: mmap.mmap) -> None:
        super().__init__(buf)
        self.strings: dict[str, list[bytes]] = {}
        self.array_types: dict[str, int] = {}

    def field(self, key: str, kind: int) -> Any:
        if kind == _ARRAY and key in _VOCAB_ARRAYS:
            item, count = self.unpack("<I"), self.unpack("<Q")
            self.array_types[key] = item
            if item != _STRING:
                raise InputError(f"{key} must be an array of strings")
            if count > len(self.buf) // 8:
                raise ValueError(f"{key} claims {count} entries, more than the file can hold")
            out = []
            for _ in range(count):
                n = self.unpack("<Q")
                if n > len(self.buf) - self.pos:
                    raise ValueError(f"a string of {key} runs past the end of the file")
                out.append(bytes(self.buf[self.pos : self.pos + n]))
                self.pos += n
            self.strings[key] = out
            return count
        if kind == _ARRAY:
            self.array_types[key] = struct.unpack_from("<I", self.buf, self.pos)[0]
        return self.value(kind)


def _fail(path: Path, problem: str, hint: str = "") -> InputError:
    return InputError(f"{path} cannot be run: {problem}{'; ' + hint if hint else ''} (llama.cpp would abort the "
                      "process on it; the file is damaged or was written by a faulty converter)")


def preflight_cached(path: str | Path, *, base: bool = True) -> None:
    """preflight_gguf, skipped for a file that passed before: the pass is recorded in the
    private hash cache under the file's identity (device, inode, size, mtime, ctime), which
    any change to the file changes (a base's check costs ~40 ms of a 49k-token vocabulary)."""
    import os

    from sgedge.bundle_verify import HashCache
    from sgedge.pinned import identity

    cache = HashCache()
    try:
        key = f"preflight-v1|{int(base)}|" + "|".join(map(str, identity(os.stat(path))))
    except OSError:
        key = None
    if key is not None and cache.usable and cache.entries.get(key) == "ok":
        return
    preflight_gguf(path, base=base)
    if key is not None and cache.usable:
        cache.entries[key], cache.dirty = "ok", True
        cache.save()


def preflight_gguf(path: str | Path, *, base: bool = True) -> None:
    """Raise InputError when `path` holds what makes llama.cpp abort; `base=False` for a
    LoRA adapter (its tensors are checked, it has no vocabulary or layers of its own)."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            _check(path, buf, base)
    except InputError:
        raise
    except (ValueError, struct.error, OSError, OverflowError, MemoryError) as e:
        raise InputError(f"{path} is not a readable GGUF file ({e})") from e


def _check(path: Path, buf: mmap.mmap, base: bool) -> None:
    size = len(buf)
    if buf[:4] != b"GGUF":
        raise ValueError("no GGUF magic")
    c = _Walk(buf)
    c.pos = 4
    version = c.unpack("<I")
    if version not in (2, 3):
        raise _fail(path, f"GGUF version {version} (llama.cpp reads 2 and 3)")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    if n_tensors > size // 24 or n_kv > size // 12:
        raise _fail(path, f"the header claims {n_tensors} tensors and {n_kv} keys, more than the file can hold")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        kind = c.unpack("<I")
        if kind not in _SCALARS and kind not in (_STRING, _ARRAY):
            raise _fail(path, f"key {key!r} has unknown value type {kind}")
        if key in fields:
            raise _fail(path, f"key {key!r} appears twice")
        fields[key] = c.field(key, kind)
    sizes = TYPE_SIZES
    tensors: dict[str, tuple[tuple[int, ...], int, int]] = {}
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _fail(path, f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
        dims = tuple(c.unpack("<Q") for _ in range(n_dims))
        kind, offset = c.unpack("<I"), c.unpack("<Q")
        if name in tensors:
            raise _fail(path, f"tensor {name!r} appears twice")
        if kind not in sizes:
            raise _fail(path, f"tensor {name!r} has unknown type {kind}")
        if any(d < 1 or d > 1 << 40 for d in dims):
            raise _fail(path, f"tensor {name!r} has shape {list(dims)}")
        tensors[name] = (dims, kind, offset)
    alignment = fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise _fail(path, f"general.alignment is {alignment!r}, not a power of two")
    data_start = -(-c.pos // alignment) * alignment
    for name, (dims, kind, offset) in tensors.items():
        block, nbytes_block = sizes[kind]
        count = 1
        for d in dims:
            count *= d
        if dims[0] % block:
            raise _fail(path, f"tensor {name!r}: a row of {dims[0]} does not fill whole blocks of {block}")
        end = data_start + offset + count // block * nbytes_block
        if offset % alignment or end > size:
            raise _fail(path, f"tensor {name!r} lies outside the file's data (offset {offset}, file {size} bytes)")
    if base:
        _check_layers(path, fields, tensors)
        _check_vocab(path, fields, tensors, c.strings)
    else:
        _check_adapter_values(path, buf, fields, tensors, data_start)


_FLOAT_TYPES = {0: "<f4", 1: "<f2"}  # F32, F16: what sgedge's exporter writes for adapters


def _check_adapter_values(path: Path, buf: mmap.mmap, fields: dict[str, Any], tensors: dict[str, Any],
                          data_start: int) -> None:
    """An adapter's alpha and float weights are finite: NaN or infinity would not stop
    llama.cpp, it would turn every reply into garbage under the adapter."""
    import math

    import numpy as np

    alpha = fields.get("adapter.lora.alpha")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float)
                              or not math.isfinite(alpha) or abs(alpha) > 3.4e38):
        raise InputError(f"{path}: adapter.lora.alpha is {alpha!r}, not a finite number; the adapter is damaged")
    for name, (dims, kind, offset) in tensors.items():
        if kind not in _FLOAT_TYPES:
            continue
        count = 1
        for d in dims:
            count *= d
        start = data_start + offset  # a copy: a view would keep the map from closing
        values = np.frombuffer(buf[start:start + count * int(_FLOAT_TYPES[kind][-1])], _FLOAT_TYPES[kind])
        if not np.isfinite(values).all():
            raise InputError(f"{path}: tensor {name} holds NaN or infinite values; the adapter is damaged (or its "
                             "training diverged) and would turn replies into garbage")


def _check_layers(path: Path, fields: dict[str, Any], tensors: dict[str, Any]) -> None:
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise _fail(path, "it names no general.architecture")
    n_layer = fields.get(f"{arch}.block_count")
    if isinstance(n_layer, bool) or not isinstance(n_layer, int) or not 1 <= n_layer <= MAX_LAYERS:
        raise _fail(path, f"{arch}.block_count is {n_layer!r} (1 to {MAX_LAYERS} layers)")
    blocks = {int(n.split(".")[1]) for n in tensors if n.startswith("blk.") and n.split(".")[1].isdigit()}
    if not set(range(n_layer)) <= blocks:  # (tensors of extra blocks, as MTP layers, are llama.cpp's to judge)
        have = f"{len(blocks)} ({min(blocks)}..{max(blocks)})" if blocks else "none"
        raise _fail(path, f"the header says {n_layer} layers, the file has tensors for {have}")


def _check_vocab(path: Path, fields: dict[str, Any], tensors: dict[str, Any], strings: dict[str, list[bytes]]) -> None:
    tokens = strings.get("tokenizer.ggml.tokens")
    if not tokens:
        raise _fail(path, "it has no vocabulary (tokenizer.ggml.tokens)")
    n = len(tokens)
    if len(set(tokens)) != n:
        seen: set[bytes] = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))  # type: ignore[func-returns-value]
        raise _fail(path, f"its vocabulary repeats the token {dup.decode('utf-8', 'replace')!r}")
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in fields and fields[key] != n:
            raise _fail(path, f"{key} has {fields[key]} entries for {n} tokens")
    embd = tensors.get("token_embd.weight")
    if embd is not None and len(embd[0]) >= 2 and embd[0][1] != n:
        raise _fail(path, f"the vocabulary has {n} tokens, the embedding {embd[0][1]} rows",
                    "export the model with its own tokenizer")
    model = fields.get("tokenizer.ggml.model")
    vocab = set(tokens)
    if model == "llama":  # SentencePiece: unknown text falls back to byte tokens
        missing = [b for b in range(256) if f"<0x{b:02X}>".encode() not in vocab
                   and not (b < 128 and bytes([b]) in vocab)]
        if missing:
            raise _fail(path, f"its SentencePiece vocabulary lacks the byte token <0x{missing[0]:02X}> "
                              f"({len(missing)} of the 256 byte-fallback tokens are missing)")
