"""PEFT LoRA adapter -> ONNX Runtime `.onnx_adapter`, matched to a base's LoRA slots.

Parameter names are the base's slot inputs (`<slot>.lora_A.MatMul.weight`, [in, r], and
`.lora_B.MatMul.weight`, [r, out]); PEFT's scaling (alpha/r, patterns, rsLoRA) is folded
into B. A slot may pack several projections (q|k|v, gate|up; the base's metadata lists
its parts in column order): separate LoRAs on them become one with the ranks
concatenated and B block-diagonal; a fused Phi-3 qkv_proj LoRA maps onto it as is. The base binding travels in the format's `model_version` field (28 bits of the
base fingerprint; the format has no string metadata).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgedge.errors import AdapterError, InputError
from sgedge.exporters.onnx_base import BASE_META
from sgedge.exporters.peft_adapter import load_peft_adapter
from sgedge.families import FAMILIES
from sgedge.formats.onnx_adapter_io import fingerprint_tag, write_adapter


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


def _part_index(slots: dict) -> dict[str, tuple[str, int, int]]:
    """Builder projection ("model.layers.0.attn.q_proj") -> (slot, first column, columns)."""
    index = {}
    for name, slot in slots.items():
        prefix = name.rsplit(".", 1)[0]
        col = 0
        # Bases exported before slots recorded their parts have one projection per slot.
        for leaf, n_out in slot.get("parts") or [[name.rsplit(".", 1)[-1], slot["out"]]]:
            index[f"{prefix}.{leaf}"] = (name, col, int(n_out))
            col += int(n_out)
    return index


def plan_onnx_adapter(peft_dir: Path, base_dir: Path, allow_pickle: bool) -> tuple[dict, dict[str, np.ndarray], int]:
    """Map each PEFT module onto the base's slots. A slot that packs several projections
    (q|k|v) gets the modules' ranks concatenated: A = [A_q A_k A_v], B block-diagonal,
    so x @ A @ B puts each module's update in its own columns."""
    meta = read_base_meta(base_dir)
    fam = next(f for f in FAMILIES if f.name == meta["family"])
    slots: dict = meta["slots"]
    index = _part_index(slots)
    adapter = load_peft_adapter(peft_dir, allow_pickle=allow_pickle)
    np_dtype = np.dtype(next(iter(slots.values()))["dtype"]) if slots else np.float32
    blocks: dict[str, list[tuple[np.ndarray, list[tuple[int, np.ndarray]]]]] = {}
    problems: list[str] = []
    no_slot: dict[str, list[str]] = {}  # leaf -> modules whose slot the base lacks
    for m in adapter.modules:
        if m.leaf not in fam.lora_modules:
            problems.append(f"{m.module}: '{m.leaf}' is not a linear layer sgedge adapts in {fam.name}")
            continue
        prefix = _slot_of(m.module).rsplit(".", 1)[0]
        names = [f"{prefix}.{leaf}" for leaf in fam.onnx_splits.get(m.leaf, (m.leaf,))]
        missing = [n for n in names if n not in index]
        if missing:
            no_slot.setdefault(m.leaf, []).append(missing[0])
            continue
        places = [index[n] for n in names]
        n_in = slots[places[0][0]]["in"]
        if m.a.shape[1] != n_in or m.b.shape[0] != sum(p[2] for p in places):
            problems.append(f"{m.module}: LoRA maps {m.a.shape[1]} -> {m.b.shape[0]} features but the base slot "
                            f"is {n_in} -> {sum(p[2] for p in places)}")
            continue
        b = m.b * np.float32(m.scaling)
        by_slot: dict[str, list[tuple[int, np.ndarray]]] = {}
        row = 0
        for slot, col, n_out in places:
            by_slot.setdefault(slot, []).append((col, b[row : row + n_out].T))
            row += n_out
        for slot, cols in by_slot.items():
            blocks.setdefault(slot, []).append((m.a.T, cols))
    if no_slot:
        order = [leaf for leaf in fam.lora_modules if leaf in no_slot]
        leaves = ", ".join(order)
        n = sum(len(v) for v in no_slot.values())
        problems.insert(0, f"the base has no LoRA slots for {leaves} ({n} module{'s' * (n > 1)}, e.g. "
                           f"{min(no_slot[order[0]])}); export the base again with --lora-targets including "
                           f"{leaves} (a bundle: bundle create --onnx-lora-targets all)")
    if problems:
        raise AdapterError(f"adapter {peft_dir} does not fit base {base_dir}: " + "; ".join(problems[:8]))
    params: dict[str, np.ndarray] = {}
    for slot, parts in blocks.items():
        a = np.concatenate([a_t for a_t, _ in parts], axis=1)
        b = np.zeros((a.shape[1], slots[slot]["out"]), np.float32)
        r0 = 0
        for a_t, cols in parts:
            for col, b_t in cols:
                b[r0 : r0 + a_t.shape[1], col : col + b_t.shape[1]] = b_t
            r0 += a_t.shape[1]
        params[f"{slot}.lora_A.MatMul.weight"] = np.ascontiguousarray(a, dtype=np_dtype)
        params[f"{slot}.lora_B.MatMul.weight"] = np.ascontiguousarray(b, dtype=np_dtype)
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
