"""Hugging Face base model -> ONNX Runtime GenAI model folder with LoRA slots.

The ONNX Runtime GenAI builder emits LoRA MatMuls only when given an adapter, with the
weights baked in. sgedge gives it a rank-1 placeholder adapter on the requested targets,
then turns every LoRA weight initializer into a graph input whose default is an empty
tensor ([in, 0] / [0, out]): with no adapter active the LoRA branch multiplies by
nothing, and any `.onnx_adapter` with matching names overrides the inputs at run time.
(optimum-onnx pins transformers < 4.58 and cannot export a PeftModel; the builder can.)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sgedge
from sgedge._fs import normalize_modes, sweep_stale, temp_prefix
from sgedge.errors import BackendError, InputError, UnsupportedModelError
from sgedge.exporters.hf_model import HFModel
from sgedge.formats import ONNX_BASE_META as BASE_META

ONNX_DTYPES = ("fp32", "fp16", "int4")
# Execution providers an export can target (the builder's -e): the graph differs (CUDA
# takes fp16 activations and shares the KV buffer between steps). DirectML is not
# offered: nobody has run sgedge's slotted graph on it.
ONNX_EPS = ("cpu", "cuda")
ONNX_ROPE_TYPES = ("default", "llama3", "longrope", "linear", "yarn")
# Rope types whose cos/sin tables do not depend on the sequence: the builder writes
# plain rope tables and sgedge replaces them with transformers' own (_exact_rope_tables).
_TABLE_ROPE_TYPES = ("linear", "yarn")
SCHEMA_VERSION = 2
_LORA_INIT = re.compile(r"^(?P<slot>.+)\.lora_(?P<ab>[AB])\.MatMul\.weight$")


@dataclass(frozen=True)
class OnnxBaseExport:
    path: Path
    family: str
    dtype: str
    fingerprint: str
    n_slots: int
    size_bytes: int
    ep: str = "cpu"


def whole_groups(targets: Sequence[str], modules: Sequence[str]) -> list[str]:
    """Targets completed to whole packing groups (exporters/onnx_pack.GROUPS): slots on q
    and v become one packed q|k|v slot, as slots on all three do. The builder packs the
    siblings' base weights only when none of them has LoRA, and sgedge packs them back only
    when all have it; a partial group would leave q, k and v as three MatMuls with two
    slots, slower with or without an adapter than one packed MatMul with one slot (an
    adapter without k_proj puts zeros in k's columns of that slot)."""
    from sgedge.exporters.onnx_pack import GROUPS

    out = list(targets)
    for leaves, _ in GROUPS.values():
        if any(t in leaves for t in out) and all(leaf in modules for leaf in leaves):
            out += [leaf for leaf in leaves if leaf not in out]
    return [m for m in modules if m in out]


def _slot_adapter(model: HFModel, targets: Sequence[str], out: Path) -> None:
    from sgedge.exporters.peft_io import build_lora

    build_lora(model.path, out, r=1, alpha=1, targets=list(targets), std=0.0)


def _builder_input(model: HFModel, work: Path) -> Path:
    """The model directory to hand the builder: the model's own, or a staged copy (files
    linked, not copied, where possible) whose config.json says what the builder otherwise
    misses or gets wrong. Its Phi-3 LongRoPE code reads the rope dict's legacy "type" key,
    which transformers 5 no longer writes; it ignores linear rope scaling and fails on YaRN
    without explicit betas, so those get plain rope (the tables are replaced afterwards,
    _exact_rope_tables); it applies a sliding window only to the layers that `layer_types`
    names, which Mistral and Phi-3 configs leave out (transformers applies their window
    to every layer)."""
    raw = json.loads((model.path / "config.json").read_text("utf-8"))
    patched = False
    key = "rope_parameters" if isinstance(raw.get("rope_parameters"), dict) else "rope_scaling"
    if model.rope_type == "longrope" and isinstance(raw.get(key), dict) and "type" not in raw[key]:
        raw[key]["type"] = model.rope_type
        patched = True
    if model.rope_type in _TABLE_ROPE_TYPES:
        theta = model.rope_parameters.get("rope_theta", raw.get("rope_theta", 10000.0))
        plain = {"rope_type": "default", "rope_theta": theta}
        partial = model.rope_parameters.get("partial_rotary_factor")
        if partial is not None:
            plain["partial_rotary_factor"] = partial
        raw["rope_parameters"] = plain
        raw.pop("rope_scaling", None)
        patched = True
    if model.sliding_window is not None and not raw.get("layer_types"):
        raw["layer_types"] = ["sliding_attention" if s else "full_attention" for s in model.sliding_layers]
        patched = True
    if not patched:
        return model.path
    staged = work / "source"
    staged.mkdir()
    for f in model.path.iterdir():
        if f.is_file() and f.name != "config.json":
            _link_or_copy(f.resolve(), staged / f.name)
    (staged / "config.json").write_text(json.dumps(raw, indent=2))
    return staged


def _link_or_copy(src: Path, dst: Path) -> None:
    for link in (os.symlink, os.link):
        try:
            link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _check_rope(model: HFModel) -> None:
    rope_type = model.rope_type
    if rope_type not in ONNX_ROPE_TYPES or (rope_type == "longrope" and model.family.name != "phi3"):
        # Checked here: the builder's LongRoPE code is Phi-3's; 'dynamic' rope changes
        # with the sequence length, which fixed cos/sin tables cannot follow.
        raise UnsupportedModelError(
            f"rope scaling {rope_type!r} is not reproduced by the ONNX Runtime GenAI builder for "
            f"{model.family.name} (supported: default, llama3, linear, yarn, and longrope for Phi-3); "
            "export this model with --format gguf"
        )
    if rope_type == "longrope":
        # The builder scales cos/sin by short_mscale / long_mscale, or else by
        # sqrt(1 + ln(s) / ln(original)) with s the context ratio; transformers by an
        # explicit attention_factor, or the same formula with an explicit factor.
        rope, orig = model.rope_parameters, model.original_context
        ratio = int(model.hparam("max_position_embeddings")) / orig
        default = math.sqrt(1 + math.log(ratio) / math.log(orig)) if ratio > 1 else 1.0
        want = model.longrope_attention_factor
        for key in ("short_mscale", "long_mscale"):
            builder = float(rope.get(key) or 0) or default
            if abs(builder - want) > 1e-6:
                raise UnsupportedModelError(
                    f"this LongRoPE config scales attention by {want:.6g} where the ONNX Runtime GenAI "
                    f"builder would use {builder:.6g} ({key} / context ratio); export this model with --format gguf"
                )


def _exact_rope_tables(model: HFModel) -> dict[str, np.ndarray] | None:
    """cos/sin tables as transformers computes them (its own rope init function, the
    attention factor folded in), for the rope types in _TABLE_ROPE_TYPES."""
    if model.rope_type not in _TABLE_ROPE_TYPES:
        return None
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(model.path)
    inv_freq, scale = ROPE_INIT_FUNCTIONS[model.rope_type](config, "cpu")
    positions = torch.arange(int(model.hparam("max_position_embeddings")), dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq.float())
    return {"cos_cache": (freqs.cos() * scale).numpy(), "sin_cache": (freqs.sin() * scale).numpy()}


def _run_builder(model: HFModel, slot_dir: Path, out: Path, cache: Path, dtype: str,
                 targets: Sequence[str], source: Path, ep: str = "cpu") -> None:
    extra = [f"adapter_path={slot_dir}"]
    if dtype == "int4":
        # Quantize the base only: keep every LoRA MatMul float so adapters stay exact.
        sections = {leaf: ("mlp" if leaf in ("gate_proj", "up_proj", "down_proj") else "attn")
                    for leaf in model.family.onnx_slot_modules}
        leaves = [leaf for t in targets for leaf in model.family.onnx_splits.get(t, (t,))]
        names = [f"/model/layers.{i}/{sections[leaf]}/{leaf}/lora_{ab}/MatMul"
                 for i in range(model.n_layers) for leaf in leaves for ab in "AB"]
        extra.append("nodes_to_exclude=" + ",".join(names))
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
           "-p", dtype, "-e", ep, "-c", str(cache), "--extra_options", *extra]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise BackendError(f"the ONNX Runtime GenAI builder failed on {model.path}: {tail}")


def _open_slots(model_file: Path, pack: bool = True, rope_tables: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Pack sibling projections (exporters/onnx_pack.py), then turn LoRA initializers into
    inputs with empty defaults, in place. Returns the slots: in/out features, dtype and
    the projections each slot covers ([[leaf, out], ...], in column order)."""
    import onnx
    from onnx import helper, numpy_helper

    from sgedge.exporters.onnx_pack import pack_projections

    m = onnx.load(str(model_file), load_external_data=True)
    packed = pack_projections(m) if pack else {}
    g = m.graph
    _replace_tables(g, rope_tables or {})
    slots: dict[str, dict] = {}
    for init in g.initializer:
        match = _LORA_INIT.match(init.name)
        if match is None:
            continue
        arr = numpy_helper.to_array(init)
        slot = slots.setdefault(match["slot"], {})
        # Each input gets its own rank axis name: adapters may use any rank per slot.
        rank_dim = f"{match['slot']}.rank"
        if match["ab"] == "A":
            slot["in"] = int(arr.shape[0])
            empty, shape = np.zeros((arr.shape[0], 0), arr.dtype), [arr.shape[0], rank_dim]
        else:
            slot["out"] = int(arr.shape[1])
            empty, shape = np.zeros((0, arr.shape[1]), arr.dtype), [rank_dim, arr.shape[1]]
        slot["dtype"] = str(arr.dtype)
        init.CopyFrom(numpy_helper.from_array(empty, init.name))
        g.input.append(helper.make_tensor_value_info(init.name, init.data_type, shape))
    for name, slot in slots.items():
        slot["parts"] = packed.get(name) or [[name.rsplit(".", 1)[-1], slot["out"]]]
    # The builder recorded x·A as [batch, seq, 1] (its rank-1 placeholder). ONNX Runtime
    # plans buffers from recorded shapes: with slots of different ranks in one run (an
    # adapter on some layers only, or with a rank_pattern) it reuses one slot's buffer
    # for another's and fails ("Shape mismatch attempting to re-use buffer"). Drop those
    # records; shapes are inferred from each slot's own rank axis.
    a_inputs = {n for n in (i.name for i in g.input) if n.endswith(".lora_A.MatMul.weight")}
    rank_outputs = {o for n in g.node if any(i in a_inputs for i in n.input) for o in n.output}
    kept = [v for v in g.value_info if v.name not in rank_outputs]
    del g.value_info[:]
    g.value_info.extend(kept)
    data = model_file.with_name(model_file.name + ".data")
    model_file.unlink()
    if data.exists():
        data.unlink()
    onnx.save(m, str(model_file), save_as_external_data=True, location=data.name, size_threshold=1024)
    return slots


def _replace_tables(g, tables: dict[str, np.ndarray]) -> None:
    from onnx import numpy_helper

    found = {i.name: i for i in g.initializer if i.name in tables}
    if len(found) != len(tables):
        raise BackendError(f"the builder's graph has no rope table(s) {sorted(set(tables) - set(found))}")
    for name, init in found.items():
        old = numpy_helper.to_array(init)
        if old.shape != tables[name].shape:
            raise BackendError(f"rope table {name}: the builder wrote {old.shape}, transformers gives "
                               f"{tables[name].shape}")
        init.CopyFrom(numpy_helper.from_array(tables[name].astype(old.dtype), name))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished export into place; an existing export is swapped out, not merged."""
    normalize_modes(tmp)
    old = None
    if out.exists():
        if not (out / BASE_META).is_file() and any(out.iterdir()):
            raise InputError(f"{out} exists and is not an sgedge ONNX export; choose another -o")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_base_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "fp32",
    lora_targets: Sequence[str] | None = None,
    pack: bool = True,
    ep: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> OnnxBaseExport:
    if dtype not in ONNX_DTYPES:
        raise InputError(f"unknown ONNX dtype {dtype!r}; choose one of {', '.join(ONNX_DTYPES)}")
    if ep not in ONNX_EPS:
        raise InputError(f"unknown execution provider {ep!r} (--ep); choose one of {', '.join(ONNX_EPS)}")
    if ep == "cuda" and dtype == "fp32":
        # The builder folds q/k/v into one fp32 Attention operator for CUDA and leaves
        # their LoRA out, silently: adapters on q/k/v would have nowhere to go.
        raise UnsupportedModelError("--ep cuda takes fp16 or int4 (the builder's fp32 CUDA graph has no LoRA "
                                    "slots on q/k/v); use --dtype fp16, or --ep cpu for fp32")
    model = HFModel.open(model_dir)
    fam = model.family
    _check_rope(model)
    if model.head_dim % 16 or model.rotary_dim % 16:
        # The builder emits GroupQueryAttention, whose CPU kernel refuses such heads at
        # the first token ("head_size shall be a multiple of 16", "cos_cache dimension 1
        # must be <= head_size / 2 and a multiple of 8"); say so before exporting.
        what = (f"head size {model.head_dim}" if model.head_dim % 16 else
                f"rotary dimension {model.rotary_dim} (partial_rotary_factor of head size {model.head_dim})")
        raise UnsupportedModelError(
            f"{what} is not a multiple of 16, which ONNX Runtime's GroupQueryAttention needs; "
            "export this model with --format gguf"
        )
    targets = list(lora_targets or fam.lora_modules)
    bad = [t for t in targets if t not in fam.lora_modules]
    if bad:
        raise InputError(f"--lora-targets {', '.join(bad)} not in {fam.name}'s linear layers: {', '.join(fam.lora_modules)}")
    if pack:
        targets = whole_groups(targets, fam.lora_modules)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=temp_prefix(out)) as work:
        work_p = Path(work)
        _slot_adapter(model, targets, work_p / "slots")
        if progress:
            progress(1, 3)
        built = work_p / "model"
        _run_builder(model, work_p / "slots", built, work_p / "cache", dtype, targets,
                     _builder_input(model, work_p), ep)
        if progress:
            progress(2, 3)
        slots = _open_slots(built / "model.onnx", pack, _exact_rope_tables(model))
        meta = {
            "schema_version": SCHEMA_VERSION,
            "producer": f"sgedge {sgedge.__version__}",
            "format": "onnx",
            "family": fam.name,
            "fingerprint": model.fingerprint,
            "dtype": dtype,
            "ep": ep,
            "lora_targets": targets,
            "slots": slots,
        }
        (built / BASE_META).write_text(json.dumps(meta, indent=2))
        _replace_dir(built, out)
        if progress:
            progress(3, 3)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return OnnxBaseExport(out, fam.name, dtype, model.fingerprint, len(slots), size, ep)
