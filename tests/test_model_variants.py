"""Config variants real checkpoints use (tied embeddings, Llama 3.1 rope, explicit
head_dim, one KV head, yarn / linear rope, sliding window, Phi-4-mini's partial rotary, bf16 sharded weights):
exports stay exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import PROMPT, assert_greedy_matches, hf_logits, hf_model

from sgedge.errors import UnsupportedModelError
from sgedge.exporters.gguf_adapter import export_adapter_gguf
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.exporters.onnx_adapter import export_adapter_onnx
from sgedge.exporters.onnx_base import export_base_onnx
from sgedge.runtime.api import Runtime
from sgedge.testing.synthetic import build_lora, build_model

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0}
VARIANTS = {
    "llama3-rope": ("llama", {"rope_parameters": LLAMA3_ROPE}, True),
    "qwen2-tied": ("qwen2", {"tie_word_embeddings": True}, True),
    "qwen3-tied-head-dim": ("qwen3", {"tie_word_embeddings": True, "head_dim": 32}, False),
    "llama-1-kv-head": ("llama", {"num_key_value_heads": 1, "head_dim": 32}, False),
    "mistral-sliding-window": ("mistral", {"sliding_window": 4096}, False),
    "qwen2-yarn": ("qwen2", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                  "original_max_position_embeddings": 128}}, True),
    "qwen3-yarn-betas": ("qwen3", {"rope_parameters": {"rope_type": "yarn", "factor": 8.0, "rope_theta": 1e6,
                                                        "original_max_position_embeddings": 64,
                                                        "beta_fast": 16.0, "beta_slow": 2.0}}, True),
    "phi3-partial-rotary-tied": ("phi3", {"hidden_size": 256, "partial_rotary_factor": 0.75,
                                          "tie_word_embeddings": True}, True),
    "llama-linear-rope": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                         "rope_theta": 10000.0}}, True),
    "llama-attention-and-mlp-bias": ("llama", {"attention_bias": True, "mlp_bias": True}, True),
}


def _onnx_with_adapter(hf, tmp_path):
    """A rank-8 LoRA for `hf`, the transformers + PEFT reference, and their ONNX exports."""
    lora = build_lora(hf, tmp_path / "lora", r=8, alpha=16)
    ref = hf_model(hf, [(lora, 1.0)])
    onnx_base = export_base_onnx(hf, tmp_path / "onnx").path
    return lora, ref, onnx_base, export_adapter_onnx(lora, tmp_path / "a.onnx_adapter", base=onnx_base).path


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


def test_onnx_refuses_rope_that_follows_the_sequence_length(tmp_path):
    # Dynamic NTK rope changes with the sequence, which fixed cos/sin tables cannot do.
    # (linear and YaRN: the builder ignores or fails on them, so sgedge writes
    # transformers' own tables into the graph; exact in test_variant_exports_match_peft.)
    hf = build_model("llama", tmp_path / "hf", shape={"rope_parameters": {"rope_type": "dynamic", "factor": 2.0,
                                                                          "rope_theta": 10000.0}})
    with pytest.raises(UnsupportedModelError, match=r"rope scaling 'dynamic' is not reproduced .*--format gguf"):
        export_base_onnx(hf, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("family,shape,message", [
    ("llama", {"hidden_size": 40, "intermediate_size": 96}, r"head size 10 is not a multiple of 16"),
    ("llama", {"hidden_size": 96}, r"head size 24 is not a multiple of 16"),
    ("phi3", {"partial_rotary_factor": 0.5}, r"rotary dimension 8 \(partial_rotary_factor of head size 16\) is not a multiple of 16"),
])
def test_onnx_refuses_head_sizes_group_query_attention_cannot_run(tmp_path, family, shape, message):
    # The builder exports these, but onnxruntime's GroupQueryAttention fails at the
    # first token (head size 24: "head_size shall be a multiple of 16"; 8 rotated
    # dimensions: "cos_cache dimension 1 must be ... a multiple of 8"); the exporter
    # says so up front.
    hf = build_model(family, tmp_path / "hf", shape={"num_attention_heads": 4, "num_key_value_heads": 2, **shape})
    with pytest.raises(UnsupportedModelError, match=message + r".*--format gguf"):
        export_base_onnx(hf, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    base = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path  # the GGUF path runs it
    with Runtime.open(base, exact=True) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(rt.logits(ids) - hf_logits(hf_model(hf), ids)).max()) < 1e-4


def _legacy_rope_config(model_dir, kind="longrope"):
    """Rewrite a config the way Phi-3.5 / Phi-4-mini ship it (transformers 4): top-level
    rope_theta and original_max_position_embeddings, rope_scaling with "type" (early
    Phi-3 128k configs said "su")."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["original_max_position_embeddings"] = rope.pop("original_max_position_embeddings")
    rope.pop("rope_type")
    cfg["rope_scaling"] = {**rope, "type": kind}
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("config_style", ["transformers-5", "legacy"])
def test_phi3_longrope_matches_peft_on_short_and_long_prompts(tmp_path, config_style):
    # Phi-3 128k / Phi-3.5 / Phi-4-mini rope: per-frequency short and long factors and an
    # attention factor (here sqrt(1 + ln 4 / ln 256)). transformers uses the long factors
    # once the sequence passes the original context (256 here); ONNX Runtime GenAI does
    # the same, llama.cpp once the context (n_ctx) does, so GGUF is checked at n_ctx 256
    # with a short prompt and at n_ctx 1024 with a prompt longer than 256 tokens.
    shape = {"max_position_embeddings": 1024, "original_max_position_embeddings": 256,
             "partial_rotary_factor": 0.75, "hidden_size": 256,
             "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                                 "long_factor": [1.0 + 3 * i for i in range(24)],
                                 "short_factor": [1.0 + 0.5 * i for i in range(24)]}}
    hf = build_model("phi3", tmp_path / "hf", shape=shape, seed=3)
    if config_style == "legacy":
        _legacy_rope_config(hf)
    lora = build_lora(hf, tmp_path / "lora", r=8, alpha=16)
    ref = hf_model(hf, [(lora, 1.0)])
    base = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path
    adapter = export_adapter_gguf(lora, tmp_path / "a.gguf").path
    onnx_base = export_base_onnx(hf, tmp_path / "onnx").path
    onnx_adapter = export_adapter_onnx(lora, tmp_path / "a.onnx_adapter", base=onnx_base).path
    for n_ctx, text in ((256, PROMPT), (1024, PROMPT * 12)):
        with Runtime.open(base, adapters=[adapter], exact=True, n_ctx=n_ctx) as rt:
            ids = rt.encode_prompt(text, raw=True)
            assert (len(ids) > 256) == (n_ctx > 256)
            want = hf_logits(ref, ids)
            assert float(np.abs(rt.logits(ids) - want).max()) < 1e-4, n_ctx
        with Runtime.open(onnx_base, adapters=[onnx_adapter], n_ctx=n_ctx) as rt:
            assert float(np.abs(rt.logits(ids) - want).max()) < 1e-4, n_ctx


def test_phi3_su_rope_exports_as_longrope(tmp_path):
    # Early Phi-3 128k configs name LongRoPE "su" (transformers 5 itself no longer loads
    # them with a top-level original_max_position_embeddings, so no reference run here):
    # the GGUF export is the LongRoPE one.
    from sgedge.formats.gguf_meta import read_gguf_info

    shape = {"max_position_embeddings": 1024, "original_max_position_embeddings": 256,
             "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                                 "long_factor": [2.0] * 8, "short_factor": [1.5] * 8}}
    hf = build_model("phi3", tmp_path / "hf", shape=shape)
    _legacy_rope_config(hf, "longrope")
    longrope = read_gguf_info(export_base_gguf(hf, tmp_path / "l.gguf", dtype="f32").path)
    _legacy_rope_config_kind(hf, "su")
    su = read_gguf_info(export_base_gguf(hf, tmp_path / "s.gguf", dtype="f32").path)
    assert su.shapes == longrope.shapes and "rope_factors_long.weight" in su.shapes
    assert su.get("phi3.rope.scaling.attn_factor") == longrope.get("phi3.rope.scaling.attn_factor") > 1.0


def _legacy_rope_config_kind(model_dir, kind):
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["rope_scaling"]["type"] = kind
    path.write_text(json.dumps(cfg))


def test_onnx_refuses_longrope_attention_factor_the_builder_ignores(tmp_path):
    shape = {"max_position_embeddings": 1024, "original_max_position_embeddings": 256,
             "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "attention_factor": 1.5,
                                 "long_factor": [2.0] * 8, "short_factor": [1.0] * 8}}
    hf = build_model("phi3", tmp_path / "hf", shape=shape)
    with pytest.raises(UnsupportedModelError, match=r"scales attention by 1\.5 where .* 1\.11803.*--format gguf"):
        export_base_onnx(hf, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    base = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path  # GGUF honours it
    with Runtime.open(base, exact=True, n_ctx=256) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(rt.logits(ids) - hf_logits(hf_model(hf), ids)).max()) < 1e-4


SLIDING = {
    "mistral": {"sliding_window": 16},
    "phi3": {"sliding_window": 16},
    "qwen2-last-layer": {"sliding_window": 16, "use_sliding_window": True, "max_window_layers": 1},
}


@pytest.mark.parametrize("name", list(SLIDING))
def test_sliding_window_onnx_applies_it_gguf_says_it_does_not(tmp_path, name):
    # transformers lets each token see the last 16 only. ONNX Runtime GenAI does too once
    # the config names the sliding layers (the exporter adds `layer_types` for Mistral
    # and Phi-3, whose configs leave it out): exact over a 28-token prompt and 40 greedy
    # tokens past the window. llama.cpp attends to everything: exact within the window,
    # different past it, and the export says so.
    family = name.split("-")[0]
    hf = build_model(family, tmp_path / "hf", shape=SLIDING[name], seed=3)
    lora, ref, onnx_base, onnx_adapter = _onnx_with_adapter(hf, tmp_path)
    with Runtime.open(onnx_base, adapters=[onnx_adapter]) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert len(ids) > 16
        want = hf_logits(ref, ids)
        assert float(np.abs(rt.logits(ids) - want).max()) < 1e-4
        res = rt.generate("Hi", raw=True, max_tokens=40)
        assert len(res.prompt_tokens) + len(res.tokens) > 32
        assert assert_greedy_matches(ref, res.prompt_tokens, res.tokens, 1e-3) == len(res.tokens)
    gguf = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32")
    assert len(gguf.notes) == 1 and "last 16 tokens" in gguf.notes[0] and "--format onnx" in gguf.notes[0]
    adapter = export_adapter_gguf(lora, tmp_path / "a.gguf").path
    with Runtime.open(gguf.path, adapters=[adapter], exact=True) as rt:
        diff = np.abs(rt.logits(ids) - want).max(axis=-1)
    assert float(diff[:16].max()) < 1e-4 and float(diff[16:].max()) > 1e-2


def test_no_sliding_window_note_where_the_window_never_binds(tmp_path):
    # Phi-3.5 / Phi-4-mini carry a window longer than their context; Qwen2.5 ships one it
    # does not use (transformers 4 layout: sliding_window set, use_sliding_window false,
    # no layer_types), and the same config with use_sliding_window true does bind.
    hf = build_model("phi3", tmp_path / "phi3", shape={"max_position_embeddings": 512, "sliding_window": 1024})
    assert export_base_gguf(hf, tmp_path / "phi3.gguf", dtype="f32").notes == ()
    hf = build_model("qwen2", tmp_path / "qwen2", shape={"max_position_embeddings": 512})
    cfg = json.loads((hf / "config.json").read_text())
    cfg.pop("layer_types", None)
    for use, notes in ((False, 0), (True, 1)):
        cfg.update(sliding_window=16, use_sliding_window=use, max_window_layers=1)
        (hf / "config.json").write_text(json.dumps(cfg))
        assert len(export_base_gguf(hf, tmp_path / f"qwen2-{use}.gguf", dtype="f32").notes) == notes


def test_export_cli_prints_the_sliding_window_note(tmp_path, capsys):
    from sgedge.cli import main

    hf = build_model("mistral", tmp_path / "hf", shape={"sliding_window": 16})
    assert main(["export", "base", str(hf), "-o", str(tmp_path / "b.gguf"), "--dtype", "f32", "-q"]) == 0
    err = capsys.readouterr().err
    assert "note: transformers attends to the last 16 tokens (sliding window) in 2 of 2 layers" in err


@pytest.mark.parametrize("family", ["phi3", "qwen2"])
def test_generation_stops_where_transformers_stops(tmp_path, family):
    # generation_config.json may list several end ids (Phi-3: <|endoftext|>, <|assistant|>,
    # <|end|>), some of which llama.cpp does not know by their text. Make a token the model
    # is about to produce one of them: transformers, GGUF and ONNX all stop right before it.
    import torch
    import transformers

    hf = build_model(family, tmp_path / "hf", seed=5)
    with Runtime.open(export_base_gguf(hf, tmp_path / "free.gguf", dtype="f32").path, exact=True) as rt:
        free = rt.generate(PROMPT, raw=True, max_tokens=24)
    stop_at = next(i for i, t in enumerate(free.tokens) if i >= 2 and t not in free.tokens[:i])
    gen_path = hf / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen["eos_token_id"] = [gen["eos_token_id"], free.tokens[stop_at]]
    gen_path.write_text(json.dumps(gen))
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    with torch.no_grad():
        out = model.generate(torch.tensor([free.prompt_tokens]), max_new_tokens=24, do_sample=False)
    assert out[0, len(free.prompt_tokens):].tolist() == free.tokens[:stop_at + 1]  # HF emits the stop id, then ends
    for base in (export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path, export_base_onnx(hf, tmp_path / "onnx").path):
        with Runtime.open(base, **({"exact": True} if base.suffix == ".gguf" else {})) as rt:
            res = rt.generate(PROMPT, raw=True, max_tokens=24)
        assert res.tokens == free.tokens[:stop_at] and res.finish_reason == "stop", base.name


def test_bundle_create_passes_the_sliding_window_note_on(tmp_path, capsys):
    from sgedge.cli import main

    hf = build_model("mistral", tmp_path / "hf", shape={"sliding_window": 16})
    lora = build_lora(hf, tmp_path / "lora", r=4)
    assert main(["bundle", "create", str(tmp_path / "b"), "--base", str(hf), "--adapter", f"std={lora}",
                 "--policy", "US=std", "--default-policy", "US", "--gguf-dtype", "f32"]) == 0
    err = capsys.readouterr().err
    assert "note: GGUF base: transformers attends to the last 16 tokens" in err


def test_yarn_attention_factor_onnx_exact_gguf_refused(tmp_path):
    # An explicit YaRN attention_factor: llama.cpp's YaRN cannot take it (refused, with
    # the way out); the ONNX export writes transformers' own tables, so it is exact.
    shape = {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                 "original_max_position_embeddings": 128, "attention_factor": 1.3}}
    hf = build_model("qwen2", tmp_path / "hf", shape=shape, seed=3)
    with pytest.raises(UnsupportedModelError, match=r"YaRN with attention_factor .*--format onnx"):
        export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32")
    assert not (tmp_path / "b.gguf").exists()
    base = export_base_onnx(hf, tmp_path / "onnx").path
    with Runtime.open(base) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(rt.logits(ids) - hf_logits(hf_model(hf), ids)).max()) < 1e-4


@pytest.mark.parametrize("family", ["qwen2", "phi3"])
def test_bf16_sharded_checkpoint_exports_exactly(tmp_path, family):
    """Published checkpoints are bf16 and sharded (model.safetensors.index.json): both
    exporters read them as the weights transformers upcasts, and the fingerprint follows
    the weights, not the sharding."""
    import shutil

    import torch
    import transformers

    from sgedge.binding import base_fingerprint

    src = build_model(family, tmp_path / "f32")
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    out = tmp_path / "bf16"
    model.save_pretrained(out, max_shard_size="200KB")
    for f in src.iterdir():
        if not f.name.startswith("model") and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    assert len(list(out.glob("*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    one = tmp_path / "one"
    model.save_pretrained(one)
    assert base_fingerprint(out) == base_fingerprint(one)
    ids = [5, 17, 33, 8, 90, 12]
    want = hf_logits(hf_model(out), ids)
    for path in (export_base_gguf(out, tmp_path / "b.gguf", dtype="f32").path,
                 export_base_onnx(out, tmp_path / "onnx").path):
        with Runtime.open(path, exact=True) as rt:
            assert float(np.abs(np.asarray(rt.logits(ids)) - want).max()) < 1e-4, path


@pytest.mark.parametrize("family,shape,message", [
    ("llama", {"hidden_act": "gelu_pytorch_tanh"}, r"hidden_act 'gelu_pytorch_tanh': llama.cpp's llama graph computes SiLU"),
    ("mistral", {"hidden_act": "gelu"}, r"hidden_act 'gelu': llama.cpp's llama graph"),
    ("qwen2", {"hidden_act": "relu"}, r"hidden_act 'relu': llama.cpp's qwen2 graph"),
    ("phi3", {"hidden_act": "gelu_new"}, r"hidden_act 'gelu_new': llama.cpp's phi3 graph"),
    ("qwen3", {"attention_bias": True}, r"qwen3 with biases \(model.layers.0.self_attn.\w_proj.bias, 8 in all; "
                                         r"attention_bias in config.json\): llama.cpp's qwen3 graph has no bias"),
])
def test_what_llama_cpp_would_run_wrong_is_refused_and_onnx_runs_it(tmp_path, family, shape, message):
    # llama.cpp hard-codes SwiGLU, and its qwen3 graph has no q/k/v biases: the first would
    # run with the wrong activation (logits off by ~1), the second fail at load. The ONNX
    # builder honours both, so the refusal points there, and the ONNX export is exact.
    hf = build_model(family, tmp_path / "hf", shape=shape, seed=3)
    with pytest.raises(UnsupportedModelError, match=message + r".*--format onnx"):
        export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32")
    assert not (tmp_path / "b.gguf").exists()
    _, ref, onnx_base, onnx_adapter = _onnx_with_adapter(hf, tmp_path)
    with Runtime.open(onnx_base, adapters=[onnx_adapter]) as rt:
        ids = rt.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(rt.logits(ids) - hf_logits(ref, ids)).max()) < 1e-4
