"""Hugging Face base model -> GGUF file that llama.cpp loads (f32/f16/bf16/q8_0/q4_k_m).

Float types are written directly with gguf-py; quantized types are written as f32 to a
temporary file and quantized by llama.cpp itself (`llama_model_quantize`).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sgedge
from sgedge import binding
from sgedge._fs import atomic_path, temp_prefix
from sgedge.errors import InputError, UnsupportedModelError
from sgedge.exporters.gguf_vocab import add_vocab, read_vocab
from sgedge.exporters.hf_model import HFModel, permute_rows

FLOAT_DTYPES = ("f32", "f16", "bf16")
QUANT_DTYPES = ("q8_0", "q4_k_m")
BASE_DTYPES = FLOAT_DTYPES + QUANT_DTYPES


@dataclass(frozen=True)
class BaseExport:
    path: Path
    family: str
    dtype: str
    fingerprint: str
    n_tensors: int
    size_bytes: int
    notes: tuple[str, ...] = ()


def _gguf_arch(model: HFModel):
    import gguf

    return next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == model.family.gguf_arch)


def _write_hparams(w, model: HFModel) -> None:
    import gguf

    hidden = int(model.hparam("hidden_size"))
    w.add_context_length(int(model.hparam("max_position_embeddings", "n_positions", default=4096)))
    w.add_embedding_length(hidden)
    w.add_block_count(model.n_layers)
    w.add_feed_forward_length(int(model.hparam("intermediate_size")))
    w.add_head_count(model.n_head)
    w.add_head_count_kv(model.n_head_kv)
    w.add_layer_norm_rms_eps(float(model.hparam("rms_norm_eps", default=1e-6)))
    rope = model.rope_parameters
    w.add_rope_freq_base(float(rope.get("rope_theta", model.config.get("rope_theta", 10000.0))))
    head_dim = model.head_dim
    if head_dim != hidden // model.n_head or model.family.name == "qwen3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_dimension_count(model.rotary_dim)
    rope_type = model.rope_type
    if model.family.name == "phi3":
        w.add_rope_scaling_orig_ctx_len(model.original_context)
        w.add_sliding_window(int(model.config.get("sliding_window") or 0))
        if rope_type == "longrope":
            w.add_rope_scaling_attn_factors(model.longrope_attention_factor)
        elif rope_type != "default":
            raise UnsupportedModelError(f"rope scaling type {rope_type!r} is not supported for Phi-3 "
                                        "(supported: default, longrope)")
    elif rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type == "yarn":
        # llama.cpp's YaRN is transformers' default one (attention factor 0.1 ln(s) + 1,
        # correction range rounded outwards); other settings would run differently.
        custom = [k for k in ("attention_factor", "mscale", "mscale_all_dim") if rope.get(k) is not None]
        custom += ["truncate"] if rope.get("truncate") is False else []
        if custom:
            raise UnsupportedModelError(f"YaRN with {', '.join(custom)} is not reproduced by llama.cpp's YaRN; "
                                        "export this model with --format onnx")
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(model.original_context)
        if rope.get("beta_fast") is not None:
            w.add_rope_scaling_yarn_beta_fast(float(rope["beta_fast"]))
        if rope.get("beta_slow") is not None:
            w.add_rope_scaling_yarn_beta_slow(float(rope["beta_slow"]))
    elif rope_type not in ("default", "llama3"):
        raise UnsupportedModelError(f"rope scaling type {rope_type!r} is not supported yet")


def _longrope_factors(model: HFModel) -> dict[str, np.ndarray]:
    """LongRoPE's per-frequency divisors as llama.cpp's `rope_factors_long/short` tensors:
    llama.cpp uses the long set when the context is longer than the original one,
    transformers when the sequence is."""
    import gguf

    rope, half = model.rope_parameters, model.rotary_dim // 2
    out = {}
    for key, tensor in (("long_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_LONG),
                        ("short_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT)):
        factors = np.asarray(rope.get(key) or [], dtype=np.float32)
        if factors.shape != (half,):
            raise UnsupportedModelError(
                f"rope {key} has {factors.size} values; LongRoPE needs one per rotated frequency ({half})"
            )
        out[gguf.TENSOR_NAMES[tensor] + ".weight"] = factors
    return out


def _llama3_rope_freqs(model: HFModel) -> np.ndarray:
    """llama.cpp applies Llama 3.1 rope scaling through a `rope_freqs` factor tensor."""
    rope = model.rope_parameters
    return llama3_rope_factors(float(rope.get("rope_theta", 10000.0)), model.head_dim, float(rope.get("factor", 8.0)),
                               float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0)),
                               float(rope.get("original_max_position_embeddings", 8192)))


def llama3_rope_factors(base: float, dim: int, factor: float, low: float, high: float, old_ctx: float) -> np.ndarray:
    """The per-frequency divisors of Llama 3.1's rope scaling, as transformers computes them."""
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def plan_tensors(model: HFModel) -> dict[str, str]:
    """HF tensor name -> GGUF tensor name for every tensor written. Raises listing all
    tensors that have no place in llama.cpp's graph (validate everything, then act)."""
    import gguf

    tmap = gguf.get_tensor_name_map(_gguf_arch(model), model.n_layers)
    tied = bool(model.config.get("tie_word_embeddings", False))
    plan: dict[str, str] = {}
    unknown: list[str] = []
    for name in model.shapes:
        if any(name.endswith(s) for s in model.family.skip_tensors) or (tied and name == "lm_head.weight"):
            continue
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            unknown.append(name)
        else:
            plan[name] = new
    if unknown:
        raise UnsupportedModelError(
            f"{len(unknown)} tensor(s) have no llama.cpp equivalent for {model.family.name}: "
            + ", ".join(unknown[:10])
        )
    biases = [n for n in plan if n.endswith(".bias")]
    if biases and not model.family.gguf_biases:
        raise UnsupportedModelError(
            f"{model.family.name} with biases ({biases[0]}, {len(biases)} in all; attention_bias in config.json): "
            f"llama.cpp's {model.family.gguf_arch} graph has no bias terms and would refuse the file; "
            "export it with --format onnx"
        )
    return plan


# Activations llama.cpp's graphs for these families compute (they hard-code SwiGLU).
_GGUF_ACTIVATIONS = ("silu", "swish")


def check_gguf_supported(model: HFModel) -> None:
    """Refuse, before writing anything, what llama.cpp would run differently or not at all."""
    act = model.config.get("hidden_act", "silu")
    if act not in _GGUF_ACTIVATIONS:
        raise UnsupportedModelError(
            f"hidden_act {act!r}: llama.cpp's {model.family.gguf_arch} graph computes SiLU (SwiGLU) only, so "
            "this model would give wrong answers; export it with --format onnx (the ONNX builder applies "
            f"{act!r})"
        )
    plan_tensors(model)


def _transform(model: HFModel, name: str, data: np.ndarray) -> np.ndarray:
    leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""
    heads_key = model.family.permute_heads.get(leaf)
    if heads_key is not None:
        data = permute_rows(data, int(model.hparam(heads_key)))
    return data


def _encode(data: np.ndarray, dtype: str):
    """Array and GGML type to store it as. 1-D tensors (norms, biases) stay f32."""
    import gguf

    if data.ndim == 1 or dtype == "f32":
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if dtype == "f16":
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.BF16), \
        gguf.GGMLQuantizationType.BF16


def _model_name(model: HFModel) -> str:
    name = model.path.resolve().name
    # llama.cpp gives Phi-3's special tokens HF's rstrip behaviour only when general.name
    # says phi3; say so when the tokenizer really strips after its special tokens.
    if model.family.name == "phi3" and not any(k in name.lower() for k in ("phi3", "phi-3")):
        tj = model.path / "tokenizer.json"
        if tj.is_file() and any(t.get("special") and t.get("rstrip")
                                for t in json.loads(tj.read_text("utf-8")).get("added_tokens", [])):
            name = f"phi3-{name}"
    return name


def _write_float_gguf(model: HFModel, out: Path, dtype: str, pre_tokenizer: str | None,
                      progress: Callable[[int, int], None] | None) -> int:
    import gguf

    plan = plan_tensors(model)
    vocab = read_vocab(model.path, int(model.hparam("vocab_size")), pre_tokenizer)
    w = gguf.GGUFWriter(out, model.family.gguf_arch)
    w.add_name(_model_name(model))
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype])
    w.add_string(binding.KEY_PRODUCER, f"sgedge {sgedge.__version__}")
    w.add_string(binding.KEY_BASE_FINGERPRINT, model.fingerprint)
    w.add_string(binding.KEY_FAMILY, model.family.name)
    if model.stop_token_ids:
        w.add_string(binding.KEY_STOP_TOKENS, json.dumps(model.stop_token_ids))
    w.add_vocab_size(len(vocab.tokens))
    _write_hparams(w, model)
    add_vocab(w, model.path, vocab)
    if model.rope_type == "llama3":
        w.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_freqs(model))
    if model.family.name == "phi3" and model.rope_type == "longrope":
        for name, factors in _longrope_factors(model).items():
            w.add_tensor(name, factors)
    n = 0
    for name, data in model.tensors():
        if name not in plan:
            continue
        arr, qtype = _encode(_transform(model, name, data), dtype)
        w.add_tensor(plan[name], arr, raw_dtype=qtype)
        n += 1
        if progress:
            progress(n, len(plan))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n


def export_base_gguf(
    model_dir: str | Path,
    out: str | Path,
    *,
    dtype: str = "f16",
    pre_tokenizer: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> BaseExport:
    """Export a Hugging Face model directory to one GGUF file at `out` (written atomically)."""
    if dtype not in BASE_DTYPES:
        raise InputError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(BASE_DTYPES)}")
    model = HFModel.open(model_dir)
    check_gguf_supported(model)
    out = Path(out)
    fallback = None
    with atomic_path(out) as tmp:
        if dtype in FLOAT_DTYPES:
            n = _write_float_gguf(model, tmp, dtype, pre_tokenizer, progress)
        else:
            from sgedge.runtime.llama_quantize import quantize_gguf

            with tempfile.TemporaryDirectory(dir=out.parent, prefix=temp_prefix(out)) as tdir:
                f32 = Path(tdir) / "base-f32.gguf"
                n = _write_float_gguf(model, f32, "f32", pre_tokenizer, progress)
                quantize_gguf(f32, tmp, dtype, threads=threads)
            fallback = _fallback_note(tmp, dtype)
    notes = _notes(model) + ((fallback,) if fallback else ())
    return BaseExport(out, model.family.name, dtype, model.fingerprint, n, out.stat().st_size, notes)


# The types llama.cpp means by each file type, and the block (values per row) they need.
_QUANT_TYPES = {"q8_0": ({"Q8_0"}, 32), "q4_k_m": ({"Q4_K", "Q5_K", "Q6_K"}, 256)}


def _fallback_note(path: Path, dtype: str) -> str | None:
    """Say which weight matrices llama.cpp could not store as `dtype` (rows that are not a
    multiple of the type's block fall back to another type, silently in llama.cpp)."""
    import gguf

    wanted, block = _QUANT_TYPES[dtype]
    weights = [t for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) >= 2]
    fell = [t for t in weights if t.tensor_type.name not in wanted]
    if not fell:
        return None
    types = ", ".join(sorted({t.tensor_type.name for t in fell}))
    rows = ", ".join(str(r) for r in sorted({int(t.shape[0]) for t in fell}))
    return (f"llama.cpp stored {len(fell)} of {len(weights)} weight matrices as {types} instead of {dtype}: "
            f"their rows ({rows} values) are not a multiple of the {block}-value blocks {dtype} needs, so the "
            "file is larger and slower than a full " + dtype + " (llama.cpp's usual fallback; other models of "
            "this shape get the same)")


def _notes(model: HFModel) -> tuple[str, ...]:
    """What the GGUF file will do differently from transformers, said at export time."""
    window = model.sliding_window
    if window is None:
        return ()
    return (f"transformers attends to the last {window} tokens (sliding window) in "
            f"{sum(model.sliding_layers)} of {model.n_layers} layers; llama.cpp attends to the whole "
            f"context, so past {window} tokens its answers differ from transformers' (as in any llama.cpp "
            "application); --format onnx applies the window",)
