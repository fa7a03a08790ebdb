"""Config variants real checkpoints use (tied embeddings, Llama 3.1 rope, explicit
head_dim, one KV head, yarn / linear rope, sliding window): exports stay exact."""

from __future__ import annotations

import numpy as np
import pytest
from reference import PROMPT, hf_logits, hf_model
from sgedge.exporters.gguf_adapter import export_adapter_gguf
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.exporters.onnx_adapter import export_adapter_onnx
from sgedge.exporters.onnx_base import export_base_onnx
from sgedge.exporters.synthetic import build_lora, build_model
from sgedge.runtime.api import Runtime

from sgedge.errors import UnsupportedModelError

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0}
VARIANTS = {
    "llama3-rope": ("llama", {"rope_parameters": LLAMA3_ROPE}, True),
    "qwen2-tied": ("qwen2", {"tie_word_embeddings": True}, True),
    "qwen3-tied-head-dim": ("qwen3", {"tie_word_embeddings": True, "head_dim": 32}, False),
    "llama-1-kv-head": ("llama", {"num_key_value_heads": 1, "head_dim": 32}, False),
    "mistral-sliding-window": ("mistral", {"sliding_window": 4096}, False),
    "qwen2-yarn": ("qwen2", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                  "original_max_position_embeddings": 128}}, False),
    "llama-linear-rope": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                         "rope_theta": 10000.0}}, False),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_exports_match_peft(tmp_path, name):
    family, shape, with_onnx = VARIANTS[name]
    hf = build_model(family, tmp_path / "hf", shape=shape, seed=3)
    lora = build_lora(hf, tmp_path / "lora", r=8, alpha=16)
    ref = hf_model(hf, [(lora, 1.0)])
    base = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path
    adapter = export_adapter_gguf(lora, tmp_path / "a.gguf").path
    with Runtime.open(base, adapters=[adapter], exact=True) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(rt.logits(ids) - hf_logits(ref, ids)).max()) < 1e-4
    if with_onnx:
        onnx_base = export_base_onnx(hf, tmp_path / "onnx").path
        onnx_adapter = export_adapter_onnx(lora, tmp_path / "a.onnx_adapter", base=onnx_base).path
        with Runtime.open(onnx_base, adapters=[onnx_adapter]) as rt:
            assert float(np.abs(rt.logits(ids) - hf_logits(ref, ids)).max()) < 1e-4


def test_onnx_refuses_rope_scaling_the_builder_gets_wrong(tmp_path):
    family, shape, _ = VARIANTS["llama-linear-rope"]
    hf = build_model(family, tmp_path / "hf", shape=shape)
    with pytest.raises(UnsupportedModelError, match=r"rope scaling 'linear' is not reproduced .*--format gguf"):
        export_base_onnx(hf, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_onnx_refuses_head_sizes_group_query_attention_cannot_run(tmp_path):
    # hidden 40 / 4 heads = head size 10: the builder exports it, but onnxruntime's
    # GroupQueryAttention fails at the first token; the exporter says so up front.
    hf = build_model("llama", tmp_path / "hf", shape={"hidden_size": 40, "intermediate_size": 96,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2})
    with pytest.raises(UnsupportedModelError, match=r"head size 10 is not a multiple of 8.*--format gguf"):
        export_base_onnx(hf, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    base = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path  # the GGUF path runs it
    with Runtime.open(base, exact=True) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(rt.logits(ids) - hf_logits(hf_model(hf), ids)).max()) < 1e-4
