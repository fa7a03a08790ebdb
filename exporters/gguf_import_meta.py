"""What a GGUF file's metadata becomes in an import: config.json (a config per
family, since transformers' GGUF config table drops rope scaling and partial rotary
dims), the tokenizer (transformers' GGUF tokenizer builder plus llama.cpp's own
pre-tokenizer and space-prefix rules) and generation_config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sgedge import binding
from sgedge.errors import UnsupportedModelError
from sgedge.families import FAMILIES, Family

# llama.cpp architecture -> family, when the file does not name sgedge's (a Mistral
# exported by llama.cpp is an "llama" file: it imports as Llama, which computes the same).
FAMILY_BY_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3"}
HF_CLASS = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
             "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM"}
_MODEL_TYPE = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3"}


def field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return default


def read_family(reader: Any, src: Path) -> Family:
    arch = field(reader, "general.architecture")
    name = field(reader, binding.KEY_FAMILY) or FAMILY_BY_ARCH.get(str(arch))
    fam = next((f for f in FAMILIES if f.name == name and f.gguf_arch == arch), None)
    if fam is None:
        raise UnsupportedModelError(
            f"{src}: llama.cpp architecture {arch!r} cannot be imported; sgedge imports "
            f"{', '.join(sorted(FAMILY_BY_ARCH))} (Llama, Mistral, Qwen2, Qwen3, Phi-3 models)"
        )
    return fam


def hf_config(reader: Any, fam: Family, tensor_names: set[str]) -> dict[str, Any]:
    arch = fam.gguf_arch

    def need(key: str) -> Any:
        v = field(reader, f"{arch}.{key}")
        if v is None:
            raise UnsupportedModelError(f"the GGUF file lacks {arch}.{key}; it cannot be imported")
        return v

    hidden, n_head = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(field(reader, f"{arch}.attention.key_length") or hidden // n_head)
    rot = int(field(reader, f"{arch}.rope.dimension_count") or head_dim)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise UnsupportedModelError("the GGUF file has no token_embd.weight; it cannot be imported")
    vocab = int(emb.shape[-1])  # gguf-py gives ggml order (cols, rows)
    if n_vocab is not None and n_vocab > vocab:
        raise UnsupportedModelError(f"the GGUF vocabulary has {n_vocab} tokens but the embedding only {vocab} rows")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": _f32(field(reader, f"{arch}.rope.freq_base", 10000.0))}
    scaling = field(reader, f"{arch}.rope.scaling.type")
    if scaling == "linear":
        rope.update(rope_type="linear", factor=float(need("rope.scaling.factor")))
    elif scaling == "yarn":
        rope.update(rope_type="yarn", factor=float(need("rope.scaling.factor")),
                    original_max_position_embeddings=int(need("rope.scaling.original_context_length")))
        for key in ("beta_fast", "beta_slow"):
            v = field(reader, f"{arch}.rope.scaling.yarn_{key}")
            if v is not None:
                rope[key] = float(v)
    elif scaling not in (None, "none"):
        raise UnsupportedModelError(f"rope scaling {scaling!r} cannot be imported (supported: linear, yarn)")
    if "rope_freqs.weight" in tensor_names:
        if scaling not in (None, "none"):
            raise UnsupportedModelError(f"the file scales rope twice ({scaling} and a rope_freqs tensor)")
        rope.update(_llama3_rope(np.asarray(_small_tensor(reader, "rope_freqs.weight"), dtype=np.float64),
                                 rope["rope_theta"], head_dim))
    config: dict[str, Any] = {
        "architectures": [HF_CLASS[fam.name]],
        "model_type": _MODEL_TYPE[fam.name],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(field(reader, f"{arch}.attention.head_count_kv") or n_head),
        "head_dim": head_dim,
        "max_position_embeddings": int(field(reader, f"{arch}.context_length") or 4096),
        "rms_norm_eps": _f32(need("attention.layer_norm_rms_epsilon")),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id"),
        "rope_parameters": rope,
        "torch_dtype": "float32",
    }
    if fam.name == "qwen2":
        config["use_sliding_window"] = False
    if fam.name == "phi3":
        config["partial_rotary_factor"] = rot / head_dim
        window = int(field(reader, f"{arch}.attention.sliding_window") or 0)
        config["sliding_window"] = window or None
        orig = field(reader, f"{arch}.rope.scaling.original_context_length")
        config["original_max_position_embeddings"] = int(orig or config["max_position_embeddings"])
        if "rope_factors_long.weight" in tensor_names:
            rope.update(rope_type="longrope", long_factor=_small_tensor(reader, "rope_factors_long.weight"),
                        short_factor=_small_tensor(reader, "rope_factors_short.weight"),
                        original_max_position_embeddings=config["original_max_position_embeddings"])
            attn = field(reader, f"{arch}.rope.scaling.attn_factor")
            if attn is not None:
                rope["attention_factor"] = float(attn)
    elif rot != head_dim:
        raise UnsupportedModelError(f"rope rotates {rot} of {head_dim} head dimensions; {fam.name} rotates all")
    return config


def _llama3_rope(table: np.ndarray, theta: float, head_dim: int) -> dict[str, Any]:
    """Llama 3.1's rope parameters from llama.cpp's `rope_freqs` table (one divisor per
    rotated frequency). The table is all that the computation uses; it fixes the factor
    and, through its smooth part, (high - low) / context and low / (high - low). With the
    original context set to 8192 (every Llama 3.x) the rest follows; the result must
    reproduce the table, or the file is refused rather than run with other frequencies."""
    from sgedge.exporters.gguf_base import llama3_rope_factors

    if table.shape != (head_dim // 2,) or not np.isfinite(table).all() or (table <= 0).any():
        raise UnsupportedModelError(f"the rope_freqs tensor has {table.size} values; {head_dim // 2} positive ones "
                                    "expected")
    factor, old_ctx = float(table.max()), 8192.0
    candidates = [(1.0, 4.0)]
    wavelen = 2 * np.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    smooth = (table > 1 + 1e-6) & (table < factor * (1 - 1e-6))
    if smooth.sum() >= 2 and factor > 1:
        s = (1 / table[smooth] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(1 / wavelen[smooth], s, 1)  # s = old_ctx/((high-low) wavelen) - low/(high-low)
        span = old_ctx / slope
        low = -intercept * span
        candidates.insert(0, (round(float(low), 6), round(float(low + span), 6)))
    for low, high in candidates:
        if not 0 < low < high:
            continue
        again = llama3_rope_factors(theta, head_dim, factor, low, high, old_ctx)
        if np.allclose(again, table, rtol=1e-5, atol=0):
            return {"rope_type": "llama3", "factor": _f32(factor), "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": int(old_ctx)}
    raise UnsupportedModelError("the rope_freqs tensor is not a Llama 3.1 rope scaling sgedge can reproduce; "
                                "importing it would run with other frequencies")


def _f32(value: Any) -> float:
    """A float32 setting as the shortest decimal that is the same float32 (1e-05, not
    9.999999747378752e-06): what the model's own config said."""
    return float(str(np.float32(value)))


def _small_tensor(reader: Any, name: str) -> list[float]:
    t = next(t for t in reader.tensors if t.name == name)
    return [float(x) for x in np.asarray(t.data, dtype=np.float32).reshape(-1)]


def write_tokenizer(src: Path, out: Path, reader: Any) -> None:
    """tokenizer.json + tokenizer_config.json (chat template, special tokens) through
    transformers' GGUF tokenizer builder."""
    import transformers
    from tokenizers import pre_tokenizers

    model = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre")
    if model not in ("gpt2", "llama"):
        raise UnsupportedModelError(f"tokenizer model {model!r} cannot be imported (supported: gpt2 byte-level BPE, "
                                    "llama SentencePiece)")
    fix = normalizer = None
    if model == "llama":
        from tokenizers import normalizers

        # llama.cpp prefixes one space to the text and then escapes every space as "▁"
        # (so "  hi" -> "▁▁▁hi"); transformers' Metaspace would give "▁▁hi". The
        # normalizer form (Llama 2's, Mistral v0.1's, Phi-3's tokenizer.json) is llama.cpp's.
        steps = [normalizers.Prepend("▁")] if field(reader, "tokenizer.ggml.add_space_prefix", True) else []
        normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    if model == "gpt2":
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

        if pre == "smollm":  # digits one by one, then GPT-2's byte-level split
            fix = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                           pre_tokenizers.ByteLevel(add_prefix_space=False)])
        elif pre not in (None, "default", "gpt-2") and pre not in GGUF_PRE_TOKENIZER_SPLITS:
            raise UnsupportedModelError(
                f"the GGUF tokenizer's pre-tokenizer {pre!r} is not one transformers or sgedge can reproduce, so the "
                "import would split text differently from llama.cpp; nothing was written"
            )
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on an inconsistent vocabulary
        raise UnsupportedModelError(f"transformers cannot build the tokenizer of {src} ({e})") from e
    if fix is not None:
        tok.backend_tokenizer.pre_tokenizer = fix
    if normalizer is not None:
        tok.backend_tokenizer.normalizer = normalizer
        tok.backend_tokenizer.pre_tokenizer = None
    tok.save_pretrained(str(out))


def write_generation_config(reader: Any, out: Path) -> None:
    eos = [field(reader, "tokenizer.ggml.eos_token_id")]
    try:
        eos += json.loads(field(reader, binding.KEY_STOP_TOKENS) or "[]")
    except (json.JSONDecodeError, TypeError):
        pass
    eos_ids = sorted({int(i) for i in eos if isinstance(i, int) and not isinstance(i, bool)})
    gen: dict[str, Any] = {"bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
                           "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
                           "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id")}
    (out / "generation_config.json").write_text(json.dumps({k: v for k, v in gen.items() if v not in (None, [])},
                                                           indent=2) + "\n")
