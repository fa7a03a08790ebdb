"""Fused mode: a fixed policy's adapters merged into a cached base, run at bare-base cost.

Measure (this test): f32 base, fused vs dynamic teacher-forced logits, exact mode:
max diff < 1e-4 (merging in float changes only rounding). q8_0: the merged tensors are
requantized, so fused and dynamic differ by quantization: relative logit error bound
0.1 against an adapter effect of ~0.5 (measured 0.03 on the SmolLM2-135M shape). ONNX:
fp32 merges exactly (< 1e-4); int4 is dequantized, merged and quantized again (bound in
its test).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import PROMPT

from sgedge.cli import main
from sgedge.errors import AdapterMismatchError, InputError
from sgedge.exporters.bundle import add_adapter, create_bundle
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.manifest import PolicyItem
from sgedge.runtime.api import Runtime
from sgedge.testing.synthetic import build_lora


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b - b.mean(-1, keepdims=True)))


def test_fused_equals_dynamic_on_f32(tiny):
    t = tiny("llama")
    active = [(t.a1, 1.0), (t.a2, 0.5)]
    with Runtime.open(t.gguf, adapters=active, exact=True) as dyn, \
         Runtime.open(t.gguf, adapters=active, exact=True, mode="fused") as fused:
        assert fused.mode == "fused" and [a.name for a in fused.active] == ["a1", "a2"]
        assert fused.fused_path is not None and fused.fused_path.is_file()
        ids = dyn.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(fused.logits(ids) - dyn.logits(ids)).max()) < 1e-4
        res = fused.generate(PROMPT, raw=True, max_tokens=8)
        assert res.mode == "fused" and [a.scale for a in res.adapters] == [1.0, 0.5]
        with pytest.raises(InputError, match=r"runs one fused policy \(a1:1 \+ a2:0.5\)"):
            fused.generate(PROMPT, adapters=[("a1", 1.0)])


def test_fused_q8_0_stays_close_and_is_cached(tiny, tmp_path):
    t = tiny("qwen2")
    q8 = export_base_gguf(t.hf, tmp_path / "q8.gguf", dtype="q8_0").path
    from sgedge.exporters.gguf_adapter import export_adapter_gguf

    a = export_adapter_gguf(t.lora1, tmp_path / "a.gguf", base=t.hf).path
    with Runtime.open(q8, adapters=[a]) as dyn, Runtime.open(q8, adapters=[a], mode="fused") as fused:
        ids = dyn.encode_prompt(PROMPT, raw=True)
        d, f, bare = dyn.logits(ids), fused.logits(ids), dyn.logits(ids, adapters=[])
        assert _rel(f, d) < 0.1 < _rel(bare, d)
        first = fused.fused_path
    mtime = first.stat().st_mtime_ns
    with Runtime.open(q8, adapters=[a], mode="fused") as again:
        assert again.fused_path == first and first.stat().st_mtime_ns == mtime, "reused from the cache"
    first.write_bytes(first.read_bytes()[:-1] + b"\0")  # corrupt the cached file
    with Runtime.open(q8, adapters=[a], mode="fused") as rebuilt:
        assert rebuilt.fused_path.stat().st_mtime_ns != mtime, "a corrupt cache entry is rebuilt"


def test_fused_refuses_adapters_of_another_base(tiny):
    with pytest.raises(AdapterMismatchError):
        Runtime.open(tiny("llama").gguf, adapters=[tiny("qwen2").a1], mode="fused")


def test_bundle_fuse_cache_follows_adapter_updates(tiny, tmp_path, capsys):
    t = tiny("llama")
    bundle = tmp_path / "b"
    create_bundle(bundle, t.hf, {"std": t.lora1, "strict": t.lora2},
                  {"US": (PolicyItem("std"),), "EU": (PolicyItem("strict"), PolicyItem("std", 0.5))},
                  default_policy="US", gguf_dtype="f32")
    assert main(["bundle", "fuse", str(bundle), "--policy", "EU"]) == 0
    assert "policy EU: fused base" in capsys.readouterr().out
    argv = ["run", "--bundle", str(bundle), "--region", "EU", "--max-tokens", "6", "--json", "Hello"]
    assert main(argv) == 0
    dynamic = json.loads(capsys.readouterr().out)
    assert main([*argv, "--fused"]) == 0
    fused = json.loads(capsys.readouterr().out)
    assert fused["mode"] == "fused" and fused["adapters"] == dynamic["adapters"]
    before = {p.name for p in (bundle / ".fused").glob("*.gguf")}
    add_adapter(bundle, "strict", build_lora(t.hf, tmp_path / "p", r=4, seed=9))
    with Runtime.open(bundle, "EU", mode="fused") as rt:
        assert rt.fused_path.name not in before, "a new adapter means a new fused file"
    assert main(["bundle", "fuse", str(bundle), "--policy", "XX"]) == 1


def test_onnx_fused_bakes_the_composed_adapter(tiny, tiny_onnx):
    import onnx

    o = tiny_onnx("qwen3")
    with Runtime.open(o.base, adapters=[(o.a1, 1.0), (o.a2, 0.5)]) as dyn, \
         Runtime.open(o.base, adapters=[(o.a1, 1.0), (o.a2, 0.5)], mode="fused") as fused:
        ids = dyn.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(fused.logits(ids) - dyn.logits(ids)).max()) < 1e-4
        graph = onnx.load(str(fused.fused_path / "model.onnx"), load_external_data=False).graph
        assert not [i.name for i in graph.input if ".lora_" in i.name], "no adapter inputs left"
        assert fused.generate(PROMPT, max_tokens=6).tokens == dyn.generate(PROMPT, max_tokens=6).tokens


def test_onnx_fused_merges_used_slots_and_drops_unused_ones(tiny, tiny_onnx, tmp_path):
    import onnx

    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.runtime.fuse import fuse_onnx

    t, o = tiny("llama"), tiny_onnx("llama")
    qv = export_adapter_onnx(build_lora(t.hf, tmp_path / "qv", targets=["q_proj", "v_proj"]),
                             tmp_path / "qv.onnx_adapter", base=o.base).path
    with Runtime.open(o.base, adapters=[qv]) as dyn:
        ids = dyn.encode_prompt(PROMPT, raw=True)
        want = dyn.logits(ids)
    with Runtime.open(o.base, adapters=[qv], mode="fused") as fused:
        assert float(np.abs(fused.logits(ids) - want).max()) < 1e-4
        graph = onnx.load(str(fused.fused_path / "model.onnx"), load_external_data=False).graph
        assert not [n.name for n in graph.node if "lora" in n.name], "q/v merged into the weights, the rest dropped"
    # Not merged (the fallback for projections that are neither a float MatMul nor an
    # int4 MatMulNBits): the used slots stay as constant LoRA branches, and only they do.
    fuse_onnx(o.base, [(qv, 1.0)], tmp_path / "baked", merge=False)
    graph = onnx.load(str(tmp_path / "baked" / "model.onnx"), load_external_data=False).graph
    lora_nodes = [n.name for n in graph.node if "lora" in n.name]
    assert lora_nodes and all(("q_proj" in n or "v_proj" in n) for n in lora_nodes)
    with Runtime.open(tmp_path / "baked") as baked:
        assert float(np.abs(baked.logits(ids) - want).max()) < 1e-4


@pytest.mark.parametrize("dtype", ["fp16", "int4"])
def test_onnx_fused_fp16_merges_and_int4_keeps_an_exact_branch(tmp_path, monkeypatch, dtype):
    # fp16: W += A @ B in float32, stored fp16 (one fp16 rounding of the merged weight).
    # int4: merging would mean a second int4 rounding (0.38 of the logit spread against
    # 0.64 for the adapter's effect on the SmolLM2 shape), so the branch stays, as
    # constants, and fused equals dynamic.
    import onnx

    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx
    from sgedge.testing.synthetic import build_model

    monkeypatch.setenv("SGEDGE_CACHE_DIR", str(tmp_path / "cache"))
    hf = build_model("qwen2", tmp_path / "hf", seed=4)
    base = export_base_onnx(hf, tmp_path / dtype, dtype=dtype).path
    adapter = export_adapter_onnx(build_lora(hf, tmp_path / "lora", r=8, alpha=16, seed=11),
                                  tmp_path / "a.onnx_adapter", base=base).path
    with Runtime.open(base, adapters=[adapter]) as dyn, Runtime.open(base) as bare:
        ids = dyn.encode_prompt(PROMPT, raw=True)
        want, plain = dyn.logits(ids), bare.logits(ids)
    with Runtime.open(base, adapters=[adapter], mode="fused") as fused:
        got = fused.logits(ids)
        graph = onnx.load(str(fused.fused_path / "model.onnx"), load_external_data=False).graph
    lora_nodes = [n.name for n in graph.node if "lora" in n.name]
    assert not [i.name for i in graph.input if ".lora_" in i.name]
    if dtype == "int4":
        assert len(lora_nodes) == 2 * 4 * 3, "a constant branch (A, B, Add) on each of 4 slots x 2 layers"
        assert float(np.abs(got - want).max()) < 1e-4
    else:
        assert not lora_nodes
        assert _rel(got, want) < 0.05 * _rel(want, plain)


def test_onnx_fused_without_adapter_runs_a_slot_free_graph(tiny, tiny_onnx, tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("SGEDGE_CACHE_DIR", str(tmp_path / "cache"))
    o = tiny_onnx("llama")
    with Runtime.open(o.base) as dyn, Runtime.open(o.base, mode="fused") as fused:
        assert fused.fused_path is not None and fused.active == [] and fused.mode == "fused"
        graph = onnx.load(str(fused.fused_path / "model.onnx"), load_external_data=False).graph
        assert not [n.name for n in graph.node if "lora" in n.name], "every empty LoRA branch removed"
        assert not [i.name for i in graph.input if ".lora_" in i.name]
        ids = dyn.encode_prompt(PROMPT, raw=True)
        assert float(np.abs(fused.logits(ids) - dyn.logits(ids)).max()) < 1e-5
        assert fused.generate(PROMPT, max_tokens=6).tokens == dyn.generate(PROMPT, max_tokens=6).tokens
        with pytest.raises(InputError, match="adapter"):
            fused.generate(PROMPT, max_tokens=2, adapters=[("a1", 1.0)])


def test_bundle_fuse_reports_an_onnx_folder_and_bare_fused_bundles(tiny, tmp_path, capsys):
    import onnx

    t = tiny("llama")
    onnx_bundle, gguf_bundle = tmp_path / "o", tmp_path / "g"
    policies = {"US": (PolicyItem("std"),)}
    create_bundle(onnx_bundle, t.hf, {"std": t.lora1}, policies, default_policy="US", formats=("onnx",),
                  allow_no_adapter=True)
    create_bundle(gguf_bundle, t.hf, {"std": t.lora1}, policies, default_policy="US", gguf_dtype="f32",
                  allow_no_adapter=True)
    assert main(["bundle", "fuse", str(onnx_bundle), "--policy", "US"]) == 0
    out = capsys.readouterr().out
    assert "policy US: fused base" in out and float(out.rsplit("(", 1)[1].split(" MB")[0]) > 0.1, out
    # The bare base of a bundle that allows it, fused: ONNX drops the empty slots, GGUF runs the base file.
    with Runtime.open(onnx_bundle, no_adapter=True, mode="fused") as bare:
        assert bare.active == [] and bare.fused_path is not None
        graph = onnx.load(str(bare.fused_path / "model.onnx"), load_external_data=False).graph
        assert not [n.name for n in graph.node if "lora" in n.name]
    with Runtime.open(gguf_bundle, no_adapter=True, mode="fused") as bare:
        assert bare.active == [] and bare.fused_path is None


def test_onnx_fusing_without_the_onnx_package_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from sgedge.runtime.fuse import fuse_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # as with the runtime extra alone
    with pytest.raises(InputError, match="needs the onnx package: pip install onnx"):
        fuse_onnx(tmp_path / "base", [], tmp_path / "out")
