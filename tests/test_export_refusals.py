"""Every adapter/base the exporters refuse: a clear message, and nothing left on disk."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sgedge.cli import main
from sgedge.errors import AdapterError, InputError, UnsupportedModelError
from sgedge.exporters.gguf_adapter import export_adapter_gguf
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.testing.synthetic import build_lora, build_model


def _edit_config(peft_dir: Path, **changes) -> None:
    p = peft_dir / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(changes)
    p.write_text(json.dumps(cfg))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name or p.name.startswith(".sgedge")]


def test_pickled_adapter_refused_unless_allowed(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    t = tiny("llama")
    d = _copy(t.lora1, tmp_path / "pickled")
    state = load_file(d / "adapter_model.safetensors")
    (d / "adapter_model.safetensors").unlink()
    torch.save(state, d / "adapter_model.bin")
    out = tmp_path / "out" / "a.gguf"
    out.parent.mkdir()
    with pytest.raises(AdapterError, match=r"pickle.*--allow-pickle"):
        export_adapter_gguf(d, out, base=t.hf)
    _assert_nothing_written(out)
    assert export_adapter_gguf(d, out, base=t.hf, allow_pickle=True).n_modules == 14


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_dora": True}, r"DoRA"),
        ({"modules_to_save": ["lm_head"]}, r"modules_to_save"),
        ({"peft_type": "IA3"}, r"not LoRA"),
        ({"bias": "all"}, r"biases"),
        ({"alora_invocation_tokens": [1, 2]}, r"alora_invocation_tokens is set: Activated LoRA .* train a plain"),
        ({"use_qalora": True}, r"use_qalora is set: QA-LoRA"),
        ({"target_parameters": ["mlp.experts.gate_up_proj"]}, r"target_parameters is set"),
        ({"trainable_token_indices": [5, 7]}, r"trainable_token_indices is set: trained token embeddings"),
        ({"use_bdlora": {"lora_a_is_blockdiagonal": True}}, r"use_bdlora is set"),
        ({"arrow_config": {"top_k": 2}}, r"arrow_config is set: Arrow routes"),
        ({"kasa_config": {}, "monteclora_config": {"n": 1}}, r"monteclora_config is set"),
        ({"init_lora_weights": "loftq"}, r"initialised with loftq .*modified base weights"),
        ({"init_lora_weights": "lora_ga"}, r"initialised with lora_ga"),
        ({"init_lora_weights": "pissa_niter_4"}, r"initialised with pissa_niter_4"),
    ],
)
def test_unsupported_peft_features_refused(tiny, tmp_path, change, message):
    t = tiny("llama")
    d = _copy(t.lora1, tmp_path / "ad")
    _edit_config(d, **change)
    out = tmp_path / "a.gguf"
    with pytest.raises(AdapterError, match=message):
        export_adapter_gguf(d, out, base=t.hf)
    _assert_nothing_written(out)


def test_embedding_adapter_refused(tiny, tmp_path):
    t = tiny("llama")
    with pytest.warns(UserWarning, match="save_embedding_layers"):
        d = build_lora(t.hf, tmp_path / "emb", targets=["embed_tokens", "q_proj"])
    with pytest.raises(AdapterError, match=r"embed_tokens"):
        export_adapter_gguf(d, tmp_path / "a.gguf", base=t.hf)


def test_lm_head_target_refused(tiny, tmp_path):
    t = tiny("llama")
    with pytest.warns(UserWarning, match="save_embedding_layers"):
        d = build_lora(t.hf, tmp_path / "head", targets=["lm_head", "q_proj"])
    with pytest.raises(AdapterError, match=r"whole-layer weights .* LoRA-only: .*lm_head"):
        export_adapter_gguf(d, tmp_path / "a.gguf", base=t.hf)


def test_adapter_for_other_shapes_refused(tiny, tmp_path):
    t = tiny("llama")
    other = build_model("llama", tmp_path / "wide", shape={"hidden_size": 32, "num_attention_heads": 2,
                                                          "num_key_value_heads": 1})
    d = build_lora(other, tmp_path / "wide_lora")
    out = tmp_path / "a.gguf"
    with pytest.raises(AdapterError, match=r"does not fit base .*LoRA maps 32 -> 32 features but the base layer is 64"):
        export_adapter_gguf(d, out, base=t.hf)
    _assert_nothing_written(out)


def test_adapter_for_other_family_refused(tiny, tmp_path):
    t = tiny("llama")
    with pytest.raises(AdapterError, match=r"'qkv_proj' is not a linear layer sgedge adapts in llama"):
        export_adapter_gguf(tiny("phi3").lora1, tmp_path / "a.gguf", base=t.hf)


def test_adapter_without_base_refused(tiny, tmp_path):
    d = _copy(tiny("llama").lora1, tmp_path / "ad")
    _edit_config(d, base_model_name_or_path="some-org/some-model")
    with pytest.raises(InputError, match=r"pass --base MODEL_DIR"):
        export_adapter_gguf(d, tmp_path / "a.gguf")


def test_unknown_architecture_refused(tiny, tmp_path):
    d = _copy(tiny("llama").hf, tmp_path / "gpt2ish")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "b.gguf"
    with pytest.raises(UnsupportedModelError, match=r"unsupported architecture GPT2LMHeadModel; sgedge supports: .*LlamaForCausalLM"):
        export_base_gguf(d, out, dtype="f32")
    _assert_nothing_written(out)


def test_unknown_pre_tokenizer_refused(tiny, tmp_path):
    d = _copy(tiny("qwen2").hf, tmp_path / "odd")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
    (d / "tokenizer.json").write_text(json.dumps(tj))
    out = tmp_path / "b.gguf"
    with pytest.raises(UnsupportedModelError, match=r"pre-tokenizer .*--pre-tokenizer NAME"):
        export_base_gguf(d, out, dtype="f32")
    _assert_nothing_written(out)


def test_adapter_can_bind_to_exported_gguf_base(tiny, tmp_path):
    t = tiny("qwen3")
    a = export_adapter_gguf(t.lora1, tmp_path / "a.gguf", base=t.gguf)
    b = export_adapter_gguf(t.lora1, tmp_path / "b.gguf", base=t.hf)
    assert a.fingerprint == b.fingerprint
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_unigram_tokenizer_refused(tiny, tmp_path):
    d = _copy(tiny("mistral").hf, tmp_path / "uni")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"] = {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0]]}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    out = tmp_path / "b.gguf"
    with pytest.raises(UnsupportedModelError, match=r"tokenizer model type 'Unigram' is not supported"):
        export_base_gguf(d, out, dtype="f32")
    _assert_nothing_written(out)


@pytest.mark.parametrize("init", ["eva", "mica", "orthogonal", "gaussian", False])
def test_initialisations_that_leave_the_base_alone_export(tiny, tmp_path, init):
    # EVA, MiCA and orthogonal set only A and B (PEFT never touches the base weights for
    # them), so the trained adapter is plain LoRA on the unchanged base.
    t = tiny("llama")
    d = _copy(t.lora1, tmp_path / "ad")
    _edit_config(d, init_lora_weights=init)
    assert export_adapter_gguf(d, tmp_path / "a.gguf", base=t.hf).n_modules == 14


# -- hostile or damaged inputs (issue 25): one clear error each, never a traceback ------
def _copy_lora(t, tmp_path):
    return shutil.copytree(t.lora1, tmp_path / "lora")


@pytest.mark.parametrize("change,message", [
    ({"lora_alpha": 0}, r"lora_alpha must be a finite number greater than 0, not 0"),
    ({"lora_alpha": "16"}, r"lora_alpha must be a finite number"),
    ({"r": "eight"}, r"r must be a whole number from 1 to 65536, not 'eight'"),
    ({"rank_pattern": {"(a+)+$": 4}}, r"uses regular-expression features sgedge does not evaluate"),
    ({"alpha_pattern": ["q_proj"]}, r"alpha_pattern must be an object"),
    ({"use_rslora": "yes"}, r"use_rslora must be true or false"),
])
def test_a_damaged_adapter_config_is_refused(tiny, tmp_path, capsys, change, message):
    t = tiny("qwen2")
    lora = _copy_lora(t, tmp_path)
    cfg = json.loads((lora / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
    assert main(["export", "adapter", str(lora), "--base", str(t.hf), "-o", str(tmp_path / "a.gguf")]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "a.gguf").exists()


def test_nan_weights_and_a_damaged_safetensors_are_refused(tiny, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    t = tiny("qwen2")
    lora = _copy_lora(t, tmp_path)
    st = lora / "adapter_model.safetensors"
    weights = load_file(st)
    first = sorted(weights)[0]
    weights[first][0, 0] = np.nan
    save_file(weights, st)
    assert main(["export", "adapter", str(lora), "--base", str(t.hf), "-o", str(tmp_path / "a.gguf")]) == 1
    assert "has NaN or infinite weights" in capsys.readouterr().err
    st.write_bytes(st.read_bytes()[:100])
    assert main(["export", "adapter", str(lora), "--base", str(t.hf), "-o", str(tmp_path / "a.gguf")]) == 1
    assert "is not a readable safetensors file" in capsys.readouterr().err


def _copy_model(t, tmp_path):
    return shutil.copytree(t.hf, tmp_path / "hf")


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tiny, tmp_path, capsys):
    t = tiny("qwen2")
    hf = _copy_model(t, tmp_path)
    tj = json.loads((hf / "tokenizer.json").read_text())
    tj["added_tokens"].append({"id": 10**12, "content": "<huge>", "special": True})
    (hf / "tokenizer.json").write_text(json.dumps(tj))
    assert main(["export", "base", str(hf), "-o", str(tmp_path / "b.gguf")]) == 1
    assert "token id 1000000000000 is not inside the model's vocabulary" in capsys.readouterr().err
    tj["added_tokens"][-1] = {"id": 3, "content": next(iter(tj["model"]["vocab"])), "special": False}
    (hf / "tokenizer.json").write_text(json.dumps(tj))
    assert main(["export", "base", str(hf), "-o", str(tmp_path / "b.gguf")]) == 1
    assert "twice (under two ids)" in capsys.readouterr().err
    assert not (tmp_path / "b.gguf").exists()


def test_a_byte_fallback_tokenizer_without_its_byte_tokens_is_refused(tiny, tmp_path, capsys):
    t = tiny("phi3")
    hf = _copy_model(t, tmp_path)
    tj = json.loads((hf / "tokenizer.json").read_text())
    tj["model"]["vocab"] = {(f"x{k}" if k.startswith("<0x") else k): v for k, v in tj["model"]["vocab"].items()}
    (hf / "tokenizer.json").write_text(json.dumps(tj))
    assert main(["export", "base", str(hf), "-o", str(tmp_path / "b.gguf")]) == 1
    assert re.search(r"byte fallback but lacks \d+ of its 256 byte tokens \(<0x00> first\)", capsys.readouterr().err)


@pytest.mark.parametrize("change,message", [
    ({"num_attention_heads": 0}, r"num_attention_heads must be a whole number from 1"),
    ({"architectures": [{}]}, r"architectures must be a list of class names"),
    ({"rope_theta": ""}, r"rope_theta must be a finite number"),
    ({"vocab_size": 10**12}, r"vocab_size must be a whole number"),
])
def test_a_damaged_config_is_refused(tiny, tmp_path, capsys, change, message):
    t = tiny("qwen2")
    hf = _copy_model(t, tmp_path)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, **change}))
    assert main(["export", "base", str(hf), "-o", str(tmp_path / "b.gguf")]) == 1
    assert re.search(message, capsys.readouterr().err)
