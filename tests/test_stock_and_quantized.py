"""Exported files work outside sgedge (stock llama-cpp-python), and quantized bases
stay close to f32.

Quantization measure: relative logit error ||L_q - L_f32|| / ||L_f32 - mean|| of
teacher-forced logits over a 200-token text (exact runtime mode, with and without a
rank-16 adapter), on a random Qwen2-shape model with 256-wide layers so that q4_K
blocks (256 values) really apply. A broken export (wrong layout, wrong tensor) gives
about 1.4. Top-1 agreement is reported too but not bounded: random models have tiny
top-1 margins (median 0.14 logit), so it says little about quantization quality.
| dtype  | bound on relative error | measured | top-1 agreement measured |
| f16    | 0.005 | 0.0008 | 1.00 |
| bf16   | 0.02  | 0.0066 | 0.99 |
| q8_0   | 0.05  | 0.023  | 0.93 |
| q4_k_m | 0.35  | 0.21   | 0.61 |
"""

from __future__ import annotations

import numpy as np
import pytest

from sgedge.exporters.gguf_adapter import export_adapter_gguf
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.formats.gguf_meta import read_gguf_info
from sgedge.runtime.api import Runtime
from sgedge.testing.synthetic import CORPUS, build_lora, build_model


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_stock_llama_cpp_python_loads_adapter_and_agrees(tiny, family):
    from llama_cpp import Llama

    t = tiny(family)
    with Runtime.open(t.gguf, adapters=[t.a1], n_ctx=512) as rt:
        ours = rt.generate("Hello world, the quick brown", raw=True, max_tokens=16)
    llm = Llama(model_path=str(t.gguf), lora_path=str(t.a1), n_ctx=512, verbose=False, seed=0)
    try:
        assert llm.tokenize(b"Hello world, the quick brown", add_bos=True, special=True) == ours.prompt_tokens
        stock = []
        for tok in llm.generate(ours.prompt_tokens, temp=0.0, top_k=1, reset=True):
            if tok == llm.token_eos() or len(stock) == len(ours.tokens):
                break
            stock.append(tok)
        assert stock == ours.tokens
    finally:
        llm.close()


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide")
    hf = build_model("qwen2", root / "hf", shape={"hidden_size": 256, "intermediate_size": 512,
                                                    "num_attention_heads": 4, "num_key_value_heads": 2},
                     init_std=0.05)
    lora = build_lora(hf, root / "lora", r=16, alpha=32, std=0.05)
    out = {"adapter": export_adapter_gguf(lora, root / "a.gguf", base=hf).path}
    for dtype in ("f32", "f16", "bf16", "q8_0", "q4_k_m"):
        r = export_base_gguf(hf, root / f"base-{dtype}.gguf", dtype=dtype)
        out[dtype], out[f"{dtype} notes"] = r.path, r.notes
    return out


def _relative_error(ref: np.ndarray, q: np.ndarray) -> float:
    return float(np.linalg.norm(q - ref) / np.linalg.norm(ref - ref.mean(-1, keepdims=True)))


@pytest.mark.parametrize(("dtype", "bound", "ggml_type"), [
    ("f16", 0.005, "F16"), ("bf16", 0.02, "BF16"), ("q8_0", 0.05, "Q8_0"), ("q4_k_m", 0.35, "Q4_K"),
])
def test_lower_precision_exports_stay_close_to_f32(wide, dtype, bound, ggml_type):
    info = read_gguf_info(wide[dtype])
    assert wide[f"{dtype} notes"] == ()  # 256-wide rows: every block fits, nothing falls back
    assert ggml_type in set(info.types.values()), f"{dtype} export holds {set(info.types.values())}"
    assert info.get("sgedge.base.fingerprint") == read_gguf_info(wide["f32"]).get("sgedge.base.fingerprint")
    text = " ".join(CORPUS)
    with Runtime.open(wide["f32"], adapters=[wide["adapter"]], n_ctx=512, exact=True) as ref, \
         Runtime.open(wide[dtype], adapters=[wide["adapter"]], n_ctx=512, exact=True) as q:
        ids = ref.encode_prompt(text, raw=True)[:200]
        for adapters in ([], None):
            err = _relative_error(ref.logits(ids, adapters=adapters), q.logits(ids, adapters=adapters))
            assert err <= bound, f"{dtype} relative logit error {err:.4f} > {bound}"


def test_quantization_fallback_is_said(tmp_path):
    """Rows that are not a multiple of a type's block make llama.cpp store that matrix in
    another type without a word; the export says so (80-value rows: q8_0 needs 32)."""
    hf = build_model("llama", tmp_path / "hf", shape={"hidden_size": 80, "intermediate_size": 160,
                                                       "num_attention_heads": 5, "num_key_value_heads": 1})
    r = export_base_gguf(hf, tmp_path / "b.gguf", dtype="q8_0")
    types = set(read_gguf_info(r.path).types.values())
    assert {"Q8_0", "F16"} <= types  # ffn_down's 160-value rows fit, the 80-value ones fall back
    assert len(r.notes) == 1
    assert "matrices as F16 instead of q8_0" in r.notes[0] and "rows (80 values)" in r.notes[0]
    assert "32-value blocks" in r.notes[0]
