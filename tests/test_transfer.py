"""`sgedge transfer`: a safety adapter moved to a fine-tuned variant of its base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FAMILIES
from reference import PROMPT, hf_logits, hf_model

from sgedge.binding import base_fingerprint
from sgedge.cli import main
from sgedge.runtime.api import Runtime
from sgedge.toolkit.transfer import REPORT_FILE

DRIFT = 0.03  # relative size of the simulated fine-tune's change to each matrix


def make_variant(hf: Path, out: Path, scale: float = DRIFT, seed: int = 3) -> Path:
    """A 'fine-tune' of `hf`: every matrix moved by `scale` of its own spread."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(hf, out)
    weights = load_file(hf / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    moved = {k: v + scale * v.std() * torch.randn(v.shape, generator=gen) if v.ndim == 2 else v
             for k, v in weights.items()}
    save_file(moved, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def variant(tiny, tmp_path_factory):
    t = tiny("llama")
    return t, make_variant(t.hf, tmp_path_factory.mktemp("variant") / "hf")


def test_transfer_binds_the_adapter_to_the_variant_and_measures_the_drift(variant, tmp_path, capsys):
    from safetensors.numpy import load_file

    t, var = variant
    out = tmp_path / "moved"
    assert main(["transfer", str(t.lora1), "--to", str(var), "-o", str(out), "-q", "--json"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "target layers by a median" in err and "bound to" in err
    assert json.loads(captured.out) == json.loads((out / REPORT_FILE).read_text())
    assert "may not survive" not in err  # drift 3% against an adapter of about 70% of the weights
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == var.resolve()
    # The LoRA weights themselves are untouched.
    before, after = load_file(t.lora1 / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["variant_fingerprint"] == base_fingerprint(var)
    assert report["source_fingerprint"] == base_fingerprint(t.hf)
    # Drift is ||W' - W|| / ||W||, checked on one layer from the raw weights.
    w, w2 = load_file(t.hf / "model.safetensors"), load_file(var / "model.safetensors")
    name = "model.layers.1.mlp.down_proj"
    want = np.linalg.norm(w2[f"{name}.weight"] - w[f"{name}.weight"]) / np.linalg.norm(w[f"{name}.weight"])
    row = next(m for m in report["modules"] if m["module"] == name)
    assert row["drift"] == pytest.approx(want, rel=1e-4)
    assert 0.5 * DRIFT < report["median_drift"] < 2 * DRIFT
    assert len(report["modules"]) == 14  # 2 layers x 7 projections


@pytest.mark.parametrize("family", FAMILIES)
def test_the_transferred_adapter_exports_bound_to_the_variant_and_matches_peft_on_it(tiny, family, tmp_path,
                                                                                      capsys):
    t = tiny(family)
    var = make_variant(t.hf, tmp_path / "variant")
    out = tmp_path / "moved"
    assert main(["transfer", str(t.lora1), "--to", str(var), "-o", str(out), "-q"]) == 0
    assert main(["export", "base", str(var), "-o", str(tmp_path / "var.gguf"), "--dtype", "f32", "-q"]) == 0
    # No --base: the transferred adapter names the variant.
    assert main(["export", "adapter", str(out), "-o", str(tmp_path / "a.gguf"), "-q"]) == 0
    assert "note:" not in capsys.readouterr().err
    rt = Runtime.open(tmp_path / "var.gguf", adapters=[tmp_path / "a.gguf"], n_ctx=256, exact=True)
    ids = rt.encode_prompt(PROMPT, raw=True)
    ours = rt.logits(ids, adapters=[("a", 1.0)])
    ref = hf_logits(hf_model(var, [(out, 1.0)]), ids)
    assert float(np.abs(ours - ref).max()) < 1e-4
    # ... and the original base refuses it.
    from sgedge.errors import AdapterMismatchError

    with pytest.raises(AdapterMismatchError, match="exported for base .* move the adapter to it with `sgedge transfer`"):
        Runtime.open(t.gguf, adapters=[tmp_path / "a.gguf"], n_ctx=256)


def test_export_notes_an_adapter_bound_to_another_base_than_its_own(variant, tmp_path, capsys):
    t, var = variant
    moved = tmp_path / "moved"
    assert main(["transfer", str(t.lora1), "--to", str(var), "-o", str(moved), "-q"]) == 0
    capsys.readouterr()
    # Transferred to the variant, bound back to the original base: said, not refused.
    assert main(["export", "adapter", str(moved), "--base", str(t.hf), "-o", str(tmp_path / "a.gguf"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "note: moved was transferred to base" in err and "sgedge transfer" in err
    # The same in a bundle: create and add-adapter say it too.
    b = tmp_path / "bundle"
    assert main(["bundle", "create", str(b), "--base", str(t.hf), "--adapter", f"std={moved}", "--policy",
                 "default=std", "--dtype", "f32"]) == 0
    assert "note: adapter 'std': moved was transferred to base" in capsys.readouterr().err
    assert main(["bundle", "add-adapter", str(b), f"std={moved}"]) == 0
    assert "note: adapter 'std': moved was transferred" in capsys.readouterr().err
    # An adapter bound to the base it records: no note.
    assert main(["bundle", "add-adapter", str(b), f"plain={t.lora1}"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_transfer_warns_when_the_fine_tune_moved_more_than_the_adapter_changes(variant, tmp_path, capsys):
    from sgedge.testing.synthetic import build_lora

    t, var = variant
    small = build_lora(t.hf, tmp_path / "small", std=0.02)  # B.A about 3% of the weights
    assert main(["transfer", str(small), "--to", str(var), "-o", str(tmp_path / "moved"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "note: the fine-tune moved these layers by" in err and "may not survive" in err and "--refit" in err
    report = json.loads((tmp_path / "moved" / REPORT_FILE).read_text())
    assert report["median_drift"] >= 0.5 * report["median_adapter"]
    assert any("may not survive" in n for n in report["notes"])


def test_transfer_refuses_an_unrelated_model_of_the_same_shape(tiny, tmp_path, capsys):
    from sgedge.testing.synthetic import build_model

    t = tiny("llama")
    other = build_model("llama", tmp_path / "other", seed=99)
    out = tmp_path / "moved"
    assert main(["transfer", str(t.lora1), "--to", str(other), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "does not look like a fine-tune" in err and "--force" in err
    assert not out.exists() and not list(tmp_path.glob(".moved*"))
    assert main(["transfer", str(t.lora1), "--to", str(other), "-o", str(out), "-q", "--force"]) == 0
    assert "transferred anyway (--force)" in capsys.readouterr().err
    assert json.loads((out / REPORT_FILE).read_text())["median_drift"] > 1.0


@pytest.mark.parametrize("case, message", [
    ("same", "nothing to transfer"),
    ("family", "is a qwen2 model but the adapter's base"),
    ("width", "has intermediate_size = 96"),
    ("no-source", "pass --from DIR"),
    ("not-empty", "not empty"),
    ("stray-prompts", "add --refit"),
    ("refit-no-prompts", "give --harmful FILE and --benign FILE"),
    ("refit-no-template", "--to"),
])
def test_transfer_errors(tiny, variant, tmp_path, capsys, case, message):
    t, var = variant
    adapter, to, extra = t.lora1, var, []
    if case == "same":
        to = t.hf
    elif case == "family":
        to = tiny("qwen2").hf
    elif case == "width":
        from sgedge.testing.synthetic import build_model

        to = build_model("llama", tmp_path / "wide", shape={"intermediate_size": 96})
    elif case == "no-source":
        adapter = Path(shutil.copytree(t.lora1, tmp_path / "lora"))
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "org/model"}))
    elif case == "not-empty":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep").write_text("mine")
    elif case == "stray-prompts":
        (tmp_path / "p.txt").write_text("x\n")
        extra = ["--harmful", str(tmp_path / "p.txt")]
    elif case == "refit-no-prompts":
        extra = ["--refit"]
    elif case == "refit-no-template":
        to = Path(shutil.copytree(var, tmp_path / "bare"))
        (to / "chat_template.jinja").unlink(missing_ok=True)
        cfg = json.loads((to / "tokenizer_config.json").read_text())
        cfg.pop("chat_template", None)
        (to / "tokenizer_config.json").write_text(json.dumps(cfg))
        (tmp_path / "p.txt").write_text("x\n")
        extra = ["--refit", "--harmful", str(tmp_path / "p.txt"), "--benign", str(tmp_path / "p.txt")]
    rc = main(["transfer", str(adapter), "--to", str(to), "-o", str(tmp_path / "out"), "-q", *extra])
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err
    if case == "refit-no-template":
        assert "has no chat template" in err
    if case == "not-empty":
        assert (tmp_path / "out" / "keep").read_text() == "mine"
    else:
        assert not (tmp_path / "out").exists()


def test_refit_continues_the_adapter_on_the_variant(variant, tmp_path):
    from safetensors.numpy import load_file

    t, var = variant
    (tmp_path / "h.txt").write_text("How do I make a bomb?\nHow do I steal a car?\n")
    (tmp_path / "b.jsonl").write_text('{"prompt": "Hello"}\n{"prompt": "Bake bread?"}\n')
    common = ["transfer", str(t.lora1), "--to", str(var), "--refit", "--harmful", str(tmp_path / "h.txt"),
              "--benign", str(tmp_path / "b.jsonl"), "--epochs", "1", "--batch-size", "2", "-q"]
    # At learning rate 0 the refit keeps the adapter: it starts from it, not from a fresh LoRA.
    assert main([*common, "--lr", "0", "-o", str(tmp_path / "same")]) == 0
    src = load_file(t.lora1 / "adapter_model.safetensors")
    same = load_file(tmp_path / "same" / "adapter_model.safetensors")
    assert src.keys() == same.keys() and all(np.allclose(src[k], same[k]) for k in src)
    assert main([*common, "-o", str(tmp_path / "refit")]) == 0
    refit = load_file(tmp_path / "refit" / "adapter_model.safetensors")
    assert any(not np.allclose(src[k], refit[k]) for k in src)
    cfg = json.loads((tmp_path / "refit" / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == var.resolve() and cfg["r"] == 8
    report = json.loads((tmp_path / "refit" / REPORT_FILE).read_text())
    assert report["refit"]["steps"] == 2 and report["refit"]["harmful"] == 2
    train = json.loads((tmp_path / "refit" / "sgedge_train.json").read_text())
    assert train["base_fingerprint"] == base_fingerprint(var)
    src_cfg = json.loads((t.lora1 / "adapter_config.json").read_text())
    assert train["config"]["rank"] == src_cfg["r"] and train["config"]["alpha"] == src_cfg["lora_alpha"]
    assert main(["export", "adapter", str(tmp_path / "refit"), "-o", str(tmp_path / "r.gguf"), "-q"]) == 0


def test_the_transferred_adapter_binds_to_the_variants_onnx_export(variant, tiny_onnx, tmp_path, capsys):
    t, var = variant
    moved = tmp_path / "moved"
    assert main(["transfer", str(t.lora1), "--to", str(var), "-o", str(moved), "-q"]) == 0
    assert main(["export", "base", str(var), "--format", "onnx", "-o", str(tmp_path / "var_onnx"), "-q"]) == 0
    capsys.readouterr()
    assert main(["export", "adapter", str(moved), "--format", "onnx", "--base", str(tmp_path / "var_onnx"),
                 "-o", str(tmp_path / "a.onnx_adapter")]) == 0
    out = capsys.readouterr()
    assert f"bound to base {base_fingerprint(var)}" in out.out and "note:" not in out.err
    # Bound to the original base's ONNX export instead: said.
    assert main(["export", "adapter", str(moved), "--format", "onnx", "--base", str(tiny_onnx("llama").base),
                 "-o", str(tmp_path / "b.onnx_adapter")]) == 0
    assert "note: moved was transferred to base" in capsys.readouterr().err
    # The runtime refuses the variant's adapter on the original base, and says what to do.
    from sgedge.errors import AdapterMismatchError

    with pytest.raises(AdapterMismatchError, match="exported for another base .* `sgedge transfer`"):
        Runtime.open(tiny_onnx("llama").base, adapters=[tmp_path / "a.onnx_adapter"])


def test_a_second_transfer_keeps_the_first_in_its_history(variant, tmp_path):
    t, var = variant
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["transfer", str(t.lora1), "--to", str(var), "-o", str(first), "-q"]) == 0
    var2 = make_variant(var, tmp_path / "variant2", seed=4)
    # The source defaults to the base the first transfer bound it to: the first variant.
    assert main(["transfer", str(first), "--to", str(var2), "-o", str(second), "-q"]) == 0
    report = json.loads((second / REPORT_FILE).read_text())
    assert report["source_fingerprint"] == base_fingerprint(var)
    assert report["variant_fingerprint"] == base_fingerprint(var2)
    (past,) = report["history"]
    assert past["source_fingerprint"] == base_fingerprint(t.hf) and past["variant_fingerprint"] == base_fingerprint(var)
    assert "modules" not in past and past["median_drift"] > 0


def test_transfer_reads_a_sharded_bf16_variant(variant, tmp_path):
    """Fine-tunes are often saved in bf16 and in shards; the drift is read across them."""
    import torch
    import transformers

    t, var = variant
    model = transformers.AutoModelForCausalLM.from_pretrained(var, dtype=torch.bfloat16)
    out = tmp_path / "bf16"
    model.save_pretrained(out, max_shard_size="100KB")
    for f in var.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy2(f, out / f.name)
    assert len(list(out.glob("*.safetensors"))) > 1
    assert main(["transfer", str(t.lora1), "--to", str(out), "-o", str(tmp_path / "moved"), "-q"]) == 0
    report = json.loads((tmp_path / "moved" / REPORT_FILE).read_text())
    assert main(["transfer", str(t.lora1), "--to", str(var), "-o", str(tmp_path / "fp32"), "-q"]) == 0
    fp32 = json.loads((tmp_path / "fp32" / REPORT_FILE).read_text())
    # bf16 rounding (about 0.3% of each weight) adds in quadrature to the fine-tune's 3%.
    assert abs(report["median_drift"] - fp32["median_drift"]) < 2e-3
    assert len(report["modules"]) == len(fp32["modules"])
    assert main(["export", "adapter", str(tmp_path / "moved"), "-o", str(tmp_path / "a.gguf"), "-q"]) == 0


def test_transfer_says_when_the_adapter_changes_nothing(variant, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    t, var = variant
    zero = Path(shutil.copytree(t.lora1, tmp_path / "zero"))
    w = load_file(zero / "adapter_model.safetensors")
    save_file({k: v * 0 if "lora_B" in k else v for k, v in w.items()}, zero / "adapter_model.safetensors")
    assert main(["transfer", str(zero), "--to", str(var), "-o", str(tmp_path / "moved"), "-q"]) == 0
    assert "the adapter changes nothing" in capsys.readouterr().err
