"""Fused mode: a base with a fixed policy's adapters merged in, for deployments whose
policy is chosen once at start-up. llama.cpp's LoRA path costs 25-35% of decode speed
(extra matmuls per projection); a fused base runs at bare-base speed.

The merge happens in float: each adapted tensor is dequantized (gguf-py), W += sum of
scale * alpha / rank * B @ A (A and B exactly as llama.cpp applies them, so the rope
permutation is already right), and written f32; every other tensor is copied as is.
llama.cpp then quantizes the merged tensors back to the base's type (tensors already
of their target type are copied). The adapter stays the unit of update: the cache key
holds the base's and every adapter's sha256 and scale, so a new adapter means a new
fused file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgedge.bundle_verify import HashCache
from sgedge.errors import InputError

_FTYPES_KEEP_FLOAT = {0: "f32"}  # general.file_type values that need no quantization pass


@dataclass(frozen=True)
class FusedFile:
    path: Path
    key: str
    built: bool  # False when taken from the cache
    seconds: float


def fuse_key(base: Path, adapters: Sequence[tuple[Path, float]], cache: HashCache) -> str:
    h = hashlib.sha256(b"sgedge-fuse-v1\n")
    h.update(cache.sha256(base).encode())
    for path, scale in adapters:
        h.update(f"\n{cache.sha256(path)}:{float(scale)!r}".encode())
    return h.hexdigest()[:24]


def _deltas(adapters: Sequence[tuple[Path, float]]) -> dict[str, np.ndarray]:
    import gguf

    out: dict[str, np.ndarray] = {}
    for path, scale in adapters:
        reader = gguf.GGUFReader(path)
        alpha_field = reader.fields.get("adapter.lora.alpha")
        alpha = float(alpha_field.contents()) if alpha_field is not None else 0.0
        tensors = {t.name: t for t in reader.tensors}
        for name, ta in tensors.items():
            if not name.endswith(".lora_a"):
                continue
            target = name[: -len(".lora_a")]
            a = np.asarray(ta.data, dtype=np.float32).reshape(tuple(reversed(ta.shape.tolist())))
            tb = tensors[target + ".lora_b"]
            b = np.asarray(tb.data, dtype=np.float32).reshape(tuple(reversed(tb.shape.tolist())))
            rank = a.shape[0]
            # llama.cpp: scale * alpha / rank when alpha is set, else scale alone.
            s = scale * (alpha / rank if alpha else 1.0)
            delta = np.float32(s) * (b @ a)
            out[target] = out[target] + delta if target in out else delta
    return out


def fuse_gguf(base: Path, adapters: Sequence[tuple[Path, float]], out: Path) -> None:
    """Write `out`: `base` with `adapters` merged in, quantized like the base."""
    import gguf
    from sgedge.runtime.llama_quantize import quantize_gguf

    from sgedge._fs import atomic_path

    deltas = _deltas(adapters)
    reader = gguf.GGUFReader(base)
    names = {t.name for t in reader.tensors}
    missing = sorted(set(deltas) - names)
    if missing:
        raise InputError(f"cannot fuse: the base has no tensor {missing[0]}")
    arch = reader.fields["general.architecture"].contents()
    ftype_field = reader.fields.get("general.file_type")
    ftype = int(ftype_field.contents()) if ftype_field is not None else 0
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".sgedge-fuse-") as tmp:
        merged = Path(tmp) / "merged.gguf"
        w = gguf.GGUFWriter(merged, arch)
        for field in reader.fields.values():
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        w.add_string("sgedge.fused.adapters", json.dumps(
            [{"sha256": HashCache().sha256(p), "scale": s} for p, s in adapters]))
        arrays = []
        for t in reader.tensors:
            if t.name in deltas:
                rows_cols = tuple(reversed(t.shape.tolist()))
                w_f32 = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rows_cols).astype(np.float32)
                arr = w_f32 + deltas[t.name]
                w.add_tensor_info(t.name, arr.shape, arr.dtype, arr.nbytes, gguf.GGMLQuantizationType.F32)
            else:
                arr = t.data
                w.add_tensor_info(t.name, arr.shape, arr.dtype, arr.nbytes, t.tensor_type)
            arrays.append(arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for arr in arrays:
            w.write_tensor_data(np.ascontiguousarray(arr), tensor_endianess=reader.endianess)
        w.close()
        with atomic_path(out) as final:
            if ftype in _FTYPES_KEEP_FLOAT:
                merged.replace(final)
            else:
                quantize_gguf(merged, final, ftype)


def default_cache_dir() -> Path:
    import os

    root = os.environ.get("SGEDGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sgedge")
    return Path(root) / "fused"


def ensure_fused(base: Path, adapters: Sequence[tuple[Path, float]], cache_dir: Path) -> FusedFile:
    """The fused base for (base, adapters, scales): from the cache if intact, else built."""
    import time

    cache = HashCache()
    key = fuse_key(base, adapters, cache)
    path = cache_dir / f"{key}.gguf"
    meta = cache_dir / f"{key}.json"
    if path.is_file() and meta.is_file():
        try:
            recorded = json.loads(meta.read_text())["sha256"]
        except (ValueError, KeyError):
            recorded = None
        if recorded == cache.sha256(path):
            cache.save()
            return FusedFile(path, key, False, 0.0)
    t0 = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    fuse_gguf(base, adapters, path)
    from sgedge._fs import atomic_path

    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps({"sha256": cache.sha256(path), "base": str(base),
                                   "adapters": [[str(p), s] for p, s in adapters]}, indent=2))
    cache.save()
    return FusedFile(path, key, True, time.perf_counter() - t0)
