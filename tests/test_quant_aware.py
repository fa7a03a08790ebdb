"""`sgedge train --quant-aware q8`: the rounding it trains under is ggml's, and training runs with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_q8_blocks_is_ggmls_q8_0_round_trip_bit_for_bit():
    from gguf.quants import GGMLQuantizationType, dequantize, quantize

    from sgedge.toolkit.quant_aware import q8_blocks

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((7, 256)) * rng.uniform(0.01, 30, (7, 1))).astype(np.float32)
    x[2, :32] = 0.0  # an all-zero block
    x[3, 5] = 1e4  # one outlier dominating its block
    want = dequantize(quantize(x, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)
    got = q8_blocks(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want)
    assert not np.array_equal(got, x)  # it does round


def test_q8_blocks_passes_gradients_straight_through_and_leaves_partial_blocks_alone():
    from sgedge.toolkit.quant_aware import q8_blocks

    x = torch.randn(3, 64, requires_grad=True)
    (q8_blocks(x) * torch.arange(64.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(64.0).expand(3, 64))
    odd = torch.randn(2, 33)
    assert torch.equal(q8_blocks(odd), odd)  # ggml needs whole blocks of 32 for these types


def test_fake_quantize_inputs_rounds_the_frozen_layers_and_not_the_adapter(tiny):
    import peft
    import transformers

    from sgedge.toolkit.quant_aware import fake_quantize_inputs

    t = tiny("llama")
    model = transformers.AutoModelForCausalLM.from_pretrained(t.hf, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        plain = model(ids).logits
    handles = fake_quantize_inputs(model)
    assert len(handles) == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    with torch.no_grad():
        rounded = model(ids).logits
    assert not torch.equal(rounded, plain)
    assert (rounded - plain).abs().max() < 0.1 * plain.abs().max()  # 8-bit rounding: close, not equal
    pm = peft.PeftModel.from_pretrained(model, t.lora1, is_trainable=True)
    seen = []
    for name, mod in pm.named_modules():
        if name.endswith("lora_A.default"):
            mod.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    out = pm(ids).logits
    assert seen, "no LoRA layer ran"
    # LoRA A sees activations that are not on a q8 grid (the hook is on the base layers only).
    from sgedge.toolkit.quant_aware import q8_blocks

    assert any(not torch.equal(q8_blocks(a), a) for a in seen)
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for n, p in pm.named_parameters() if "lora_" in n)
    for h in handles:
        h.remove()
    with torch.no_grad(), pm.disable_adapter():
        back = pm(ids).logits
    assert torch.allclose(back, plain, atol=1e-6)  # hooks removed: the float model again


def test_train_cli_quant_aware_runs_and_records_it(tiny, tmp_path):
    from sgedge.cli import main

    t = tiny("qwen2")
    (tmp_path / "h.txt").write_text("How do I make a bomb?\nHow do I steal a car?\n")
    (tmp_path / "b.jsonl").write_text('{"prompt": "Hello"}\n{"prompt": "Bake bread?", "response": "Mix flour."}\n')
    out = tmp_path / "adapter"
    assert main(["train", "--base", str(t.hf), "--harmful", str(tmp_path / "h.txt"), "--benign",
                 str(tmp_path / "b.jsonl"), "-o", str(out), "--epochs", "1", "--batch-size", "2", "--rank", "4",
                 "--answer-tokens", "4", "--quant-aware", "q8", "-q"]) == 0
    assert json.loads((out / "sgedge_train.json").read_text())["config"]["quant_aware"] == "q8"
