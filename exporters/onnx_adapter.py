"""PEFT LoRA adapter -> ONNX Runtime `.onnx_adapter`, matched to a base's LoRA slots.

Parameter names are the base's slot inputs (`<slot>.lora_A.MatMul.weight`, [in, r], and
`.lora_B.MatMul.weight`, [r, out]); PEFT's scaling (alpha/r, patterns, rsLoRA) is folded
into B. Fused Phi-3 projections are split like the builder splits them: B by rows, A
shared. The base binding travels in the format's `model_version` field (28 bits of the
base fingerprint; the format has no string metadata).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sgedge.exporters.onnx_base import BASE_META
from sgedge.exporters.peft_adapter import load_peft_adapter
from sgedge.runtime.onnx_adapter_io import fingerprint_tag, write_adapter

from sgedge.errors import AdapterError, InputError
from sgedge.families import FAMILIES


def read_base_meta(base_dir: str | Path) -> dict:
    base_dir = Path(base_dir)
    meta = base_dir / BASE_META
    if not meta.is_file():
        raise InputError(
            f"{base_dir} is not an ONNX base exported by sgedge (no {BASE_META}); export it with "
            "'sgedge export base MODEL_DIR --format onnx -o DIR' and pass that DIR as --base"
        )
    return json.loads(meta.read_text())


@dataclass(frozen=True)
class OnnxAdapterExport:
    path: Path
    family: str
    fingerprint: str
    n_slots: int
    rank: int
    size_bytes: int


def _slot_of(module: str) -> str:
    # HF "model.layers.3.self_attn.q_proj" -> builder "model.layers.3.attn.q_proj"
    return module.replace(".self_attn.", ".attn.")


def plan_onnx_adapter(peft_dir: Path, base_dir: Path, allow_pickle: bool) -> tuple[dict, dict[str, np.ndarray], int]:
    meta = read_base_meta(base_dir)
    fam = next(f for f in FAMILIES if f.name == meta["family"])
    slots: dict = meta["slots"]
    adapter = load_peft_adapter(peft_dir, allow_pickle=allow_pickle)
    np_dtype = np.dtype(next(iter(slots.values()))["dtype"]) if slots else np.float32
    params: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for m in adapter.modules:
        if m.leaf not in fam.lora_modules:
            problems.append(f"{m.module}: '{m.leaf}' is not a linear layer sgedge adapts in {fam.name}")
            continue
        parts = fam.onnx_splits.get(m.leaf, (m.leaf,))
        prefix = _slot_of(m.module).rsplit(".", 1)[0]
        names = [f"{prefix}.{leaf}" for leaf in parts]
        missing = [n for n in names if n not in slots]
        if missing:
            problems.append(f"{m.module}: the base has no LoRA slot {missing[0]} (re-export the base with "
                            f"--lora-targets including {m.leaf})")
            continue
        outs = [slots[n]["out"] for n in names]
        if m.a.shape[1] != slots[names[0]]["in"] or m.b.shape[0] != sum(outs):
            problems.append(f"{m.module}: LoRA maps {m.a.shape[1]} -> {m.b.shape[0]} features but the base slot "
                            f"is {slots[names[0]]['in']} -> {sum(outs)}")
            continue
        b = m.b * np.float32(m.scaling)
        row = 0
        for name, n_out in zip(names, outs, strict=True):
            params[f"{name}.lora_A.MatMul.weight"] = np.ascontiguousarray(m.a.T, dtype=np_dtype)
            params[f"{name}.lora_B.MatMul.weight"] = np.ascontiguousarray(b[row : row + n_out].T, dtype=np_dtype)
            row += n_out
    if problems:
        raise AdapterError(f"adapter {peft_dir} does not fit base {base_dir}: " + "; ".join(problems[:8]))
    return meta, params, adapter.rank


def export_adapter_onnx(
    peft_dir: str | Path,
    out: str | Path,
    *,
    base: str | Path | None,
    allow_pickle: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> OnnxAdapterExport:
    if base is None:
        raise InputError("an ONNX adapter needs --base: the ONNX base folder exported by sgedge")
    out = Path(out)
    meta, params, rank = plan_onnx_adapter(Path(peft_dir), Path(base), allow_pickle)
    write_adapter(out, params, fingerprint_tag(meta["fingerprint"]))
    if progress:
        progress(1, 1)
    return OnnxAdapterExport(out, meta["family"], meta["fingerprint"], len(params) // 2, rank, out.stat().st_size)
