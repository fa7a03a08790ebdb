"""Fused mode: a base with a fixed policy's adapters merged in, for deployments whose
policy is chosen once at start-up. llama.cpp's LoRA path costs 25-35% of decode speed
(extra matmuls per projection); a fused base runs at bare-base speed. (ONNX: the
composed adapter is merged into float weights, or baked into an int4 graph as
constant LoRA branches; see fuse_onnx.)

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

from sgedge._fs import make_temp_dir, sweep_stale, temp_prefix
from sgedge.bundle_verify import HashCache
from sgedge.errors import InputError

_FTYPES_KEEP_FLOAT = {0: "f32"}  # general.file_type values that need no quantization pass
# A fused base must carry the adapters' change to its weights; below this share of it
# (measured after quantization) fused mode is refused rather than run without the adapter.
MIN_RETAINED = 0.9


@dataclass(frozen=True)
class FusedFile:
    path: Path
    key: str
    built: bool  # False when taken from the cache
    seconds: float


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _digests(path: Path, cache: HashCache) -> dict[str, str]:
    return {p.relative_to(path.parent).as_posix(): cache.sha256(p) for p in _files(path)}


def fuse_key(base: Path, adapters: Sequence[tuple[Path, float]], cache: HashCache) -> str:
    # v2 for ONNX: the adapter is merged into float weights (before: kept as LoRA branches).
    h = hashlib.sha256(b"sgedge-fuse-v1\n" if base.is_file() else b"sgedge-fuse-onnx-v2\n")
    for digest in _digests(base, cache).values():
        h.update(digest.encode())
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


def _merged_type(kind):
    """The type a merged tensor is stored in. A tensor coarser than q8_0 (Q4_x, Q5_x,
    K-quants, IQ types) goes to Q8_0: quantized again on its own grid, the adapter's
    change, finer than that grid's step, would round back (Q4_1 kept 7% of it); on
    q8_0's finer grid it survives. Float and q8_0 tensors keep their type."""
    import gguf

    T = gguf.GGMLQuantizationType
    return kind if kind in (T.F32, T.F16, T.BF16, T.Q8_0) else T.Q8_0


def fuse_gguf(base: Path, adapters: Sequence[tuple[Path, float]], out: Path) -> None:
    """Write `out`: `base` with `adapters` merged in. Merged tensors are quantized like
    the base where its type is q8_0 or float, to q8_0 where it is coarser (_merged_type);
    the others are copied as they are."""
    import gguf

    from sgedge._fs import atomic_path
    from sgedge.runtime.llama_quantize import quantize_gguf

    deltas = _deltas(adapters)
    reader = gguf.GGUFReader(base)
    names = {t.name for t in reader.tensors}
    missing = sorted(set(deltas) - names)
    if missing:
        raise InputError(f"cannot fuse: the base has no tensor {missing[0]}")
    arch = reader.fields["general.architecture"].contents()
    ftype_field = reader.fields.get("general.file_type")
    ftype = int(ftype_field.contents()) if ftype_field is not None else 0
    T = gguf.GGMLQuantizationType
    coarse = any(_merged_type(t.tensor_type) != t.tensor_type for t in reader.tensors if t.name in deltas)
    sweep_stale(out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=temp_prefix(out)) as tmp:
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
                qtype = _merged_type(t.tensor_type) if coarse else T.F32
                if qtype == T.F16:
                    arr = arr.astype(np.float16)
                elif qtype != T.F32:
                    arr = gguf.quants.quantize(arr, qtype)
                w.add_tensor_info(t.name, arr.shape, arr.dtype, arr.nbytes, qtype)
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
            if ftype in _FTYPES_KEEP_FLOAT or coarse:
                merged.replace(final)
            else:
                quantize_gguf(merged, final, ftype)
            if ftype not in _FTYPES_KEEP_FLOAT:
                share = retained_share(reader, final, deltas)
                if share < MIN_RETAINED:
                    raise InputError(
                        f"cannot fuse: the {_type_name(reader, deltas)} base keeps only {share:.0%} of the adapters' "
                        "change to its weights (the change is finer than the quantization step of weights that are "
                        "already quantized, so rounding takes most of it back) and would run as if the adapters "
                        "were not there; run this policy without fusing (drop --fused / mode='fused'), or fuse "
                        "against a float base (sgedge export base --dtype f16 or f32)")


def _type_name(reader, deltas: dict[str, np.ndarray]) -> str:
    types = sorted({t.tensor_type.name for t in reader.tensors if t.name in deltas})
    return "/".join(types)


def retained_share(base_reader, fused: Path, deltas: dict[str, np.ndarray]) -> float:
    """How much of the adapters' weight change the fused file carries: the projection
    <got, want> / <want, want> pooled over every merged tensor, where got = fused - base
    weights after (re)quantization and want = the exact change. 1.0: all of it; a delta
    finer than the step of an already-quantized weight rounds back to it when quantized
    on the same grid again (SmolLM2, trained rank-4 adapter: 6% on Q4_1, 9% on q8_0)."""
    import gguf

    base = {t.name: t for t in base_reader.tensors}
    out = {t.name: t for t in gguf.GGUFReader(fused).tensors}
    num = den = 0.0
    for name, want in deltas.items():
        b, f = base[name], out[name]
        got = (gguf.quants.dequantize(f.data, f.tensor_type).reshape(want.shape).astype(np.float64)
               - gguf.quants.dequantize(b.data, b.tensor_type).reshape(want.shape))
        num += float((got * want).sum())
        den += float((want.astype(np.float64) ** 2).sum())
    return num / den if den > 0 else 1.0


def default_cache_dir() -> Path:
    from sgedge.bundle_verify import cache_root

    return cache_root() / "fused"


def ensure_fused(base: Path, adapters: Sequence[tuple[Path, float]], cache_dir: Path) -> FusedFile:
    """The fused base for (base, adapters, scales): from the cache if intact, else built.
    `base` is a GGUF file or an ONNX folder; the result has the same form."""
    import time

    from sgedge.bundle_verify import ensure_private_dir

    if not (ensure_private_dir(cache_dir.parent) and ensure_private_dir(cache_dir)):
        raise InputError(f"the fused-model cache {cache_dir} (or its parent) is not a folder only you can write (or cannot be "
                         "made): a fused file is run as it is found there, so sgedge keeps it only in a private "
                         "folder; `chmod 700` it, or point $SGEDGE_CACHE_DIR at one")
    cache = HashCache()
    key = fuse_key(base, adapters, cache)
    path = cache_dir / (f"{key}.gguf" if base.is_file() else f"{key}-onnx")
    meta = cache_dir / f"{key}.json"
    if path.exists() and meta.is_file():
        try:
            recorded = json.loads(meta.read_text())["files"]
        except (ValueError, KeyError):
            recorded = None
        if recorded == _digests(path, cache):
            cache.save()
            return FusedFile(path, key, False, 0.0)
    t0 = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if base.is_file():
        fuse_gguf(base, adapters, path)
    else:
        fuse_onnx(base, adapters, path)
    from sgedge._fs import atomic_path

    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps({"files": _digests(path, cache), "base": str(base),
                                   "adapters": [[str(p), s] for p, s in adapters]}, indent=2))
    cache.save()
    return FusedFile(path, key, True, time.perf_counter() - t0)


def fuse_onnx(base_dir: Path, adapters: Sequence[tuple[Path, float]], out_dir: Path, *, merge: bool = True) -> None:
    """Write `out_dir`: the slotted ONNX base with the composed adapter merged into the
    projections' float weights (onnx_merge) or, for int4 projections (or merge=False),
    baked in as constant LoRA branches (ONNX Runtime can prepack them); the LoRA branch
    of every slot the adapters do not use is removed. The result has no adapter inputs."""
    import shutil

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # the runtime extra runs ONNX models without it; merging graphs needs it
        raise InputError("fused and pool modes on an ONNX base rewrite its graph, which needs the onnx package: "
                         "pip install onnx (or sgedge[export]); the default dynamic mode runs without it") from None
    from sgedge.formats.onnx_adapter_io import compose
    from sgedge.runtime.onnx_merge import float_projection, merge_update

    _, params = compose(list(adapters))
    model = onnx.load(str(base_dir / "model.onnx"), load_external_data=True)
    g = model.graph
    slot_inputs = {i.name for i in g.input if ".lora_" in i.name}
    unknown = sorted(set(params) - slot_inputs)
    if unknown:
        raise InputError(f"cannot fuse: the base has no LoRA input {unknown[0]}")
    inits = {i.name: i for i in g.initializer}
    for name, arr in params.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(inits[name]).dtype), name))
    # Slots the policy uses: merge A @ B into the projection's weight where it is float
    # (onnx_merge); elsewhere (int4) the branch stays, its weights constants. Unused
    # slots, and merged ones: route each Add's consumers to the projection's output and
    # drop the branch.
    producers = {o: n for n in g.node for o in n.output}
    drop, rename = set(), {}
    for node in g.node:
        if node.op_type == "Add" and len(node.input) == 2 and node.input[1] in producers:
            b_node = producers[node.input[1]]
            if b_node.op_type != "MatMul" or b_node.input[1] not in slot_inputs:
                continue
            a_node = producers.get(b_node.input[0])
            if b_node.input[1] in params:
                target = float_projection(node, producers, inits) if merge and a_node is not None else None
                if target is None or a_node is None:
                    continue
                a_name = next(i for i in a_node.input if i in params)
                merge_update(target, inits, params[a_name].astype(np.float32) @ params[b_node.input[1]].astype(np.float32))
            drop.update({id(node), id(b_node)} | ({id(a_node)} if a_node is not None else set()))
            rename[node.output[0]] = node.input[0]
    kept = [n for n in g.node if id(n) not in drop]
    for n in kept:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    for o in g.output:
        if o.name in rename:
            raise InputError("cannot fuse: a LoRA branch feeds a graph output directly")
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    keep_inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    keep_inputs = [i for i in g.input if i.name not in slot_inputs]
    del g.input[:]
    g.input.extend(keep_inputs)
    tmp = make_temp_dir(out_dir)
    try:
        for f in base_dir.iterdir():
            if f.is_file() and not f.name.startswith("model.onnx"):
                shutil.copy2(f, tmp / f.name)
        meta_file = tmp / "sgedge_base.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            meta["slots"] = {}
            meta["fused"] = [{"sha256": HashCache().sha256(p), "scale": s} for p, s in adapters]
            meta_file.write_text(json.dumps(meta, indent=2))
        onnx.save(model, str(tmp / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
                  size_threshold=1024)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
