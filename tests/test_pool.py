"""Pool mode: a fused base per policy, each request on its policy's copy (runtime/pool.py).

Bounds as test_fused.py's: on f32 bases the pool's replies are the dynamic path's tokens
and its logits within 1e-4 (merging in float changes only rounding); on q8_0 the merged
tensors are requantized: relative logit error < 0.1 against an adapter effect above it.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import PROMPT

from sgedge.cli import main
from sgedge.errors import InputError
from sgedge.exporters.bundle import create_bundle
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.manifest import PolicyItem
from sgedge.runtime.api import Runtime
from sgedge.runtime.pool import parse_size

PROMPTS = ["Hello there", "The capital of", "Once upon a time", "Tell me about"]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b - b.mean(-1, keepdims=True)))


@pytest.fixture
def bundle(tiny, tmp_path):
    t = tiny("llama")
    path = tmp_path / "b"
    create_bundle(path, t.hf, {"std": t.lora1, "strict": t.lora2},
                  {"US": (PolicyItem("std"),), "EU": (PolicyItem("strict"), PolicyItem("std", 0.5)),
                   "KIDS": (PolicyItem("strict", 1.5),)},
                  default_policy="US", gguf_dtype="f32", allow_no_adapter=True)
    return path


def test_pool_replies_equal_the_dynamic_path_on_f32(bundle):
    with Runtime.open(bundle, exact=True) as dyn, Runtime.open(bundle, exact=True, mode="pool") as pool:
        assert pool.mode == "pool"
        members = {m.label: m for m in pool.pool}
        assert set(members) == {"US", "EU", "KIDS"} and all(m.fused for m in members.values())
        assert all(m.path is not None and m.path.is_file() for m in members.values())
        # Alternating policies per request, as a server would see them.
        for i, prompt in enumerate(PROMPTS * 2):
            policy = ["US", "EU", "KIDS", []][i % 4]
            want = dyn.generate(prompt, raw=True, max_tokens=8, policy=policy)
            got = pool.generate(prompt, raw=True, max_tokens=8, policy=policy)
            assert got.tokens == want.tokens, f"request {i} ({policy!r})"
            assert got.mode == "pool" and got.adapters == want.adapters
        ids = dyn.encode_prompt(PROMPT, raw=True)
        for policy in ("US", "EU", "KIDS", []):
            assert float(np.abs(pool.logits(ids, policy=policy) - dyn.logits(ids, policy=policy)).max()) < 1e-4
        # A set no policy names runs on the dynamic engine, with the same result.
        mix = [("std", 0.25), ("strict", 0.75)]
        assert pool.generate(PROMPT, raw=True, max_tokens=8, adapters=mix).tokens == \
            dyn.generate(PROMPT, raw=True, max_tokens=8, adapters=mix).tokens


def test_the_pool_routes_each_policy_to_its_fused_copy(bundle):
    with Runtime.open(bundle, exact=True, mode="pool") as rt:
        pool = rt._backend
        us, eu = pool.member_for([("std", 1.0)]), pool.member_for([("strict", 1.0), ("std", 0.5)])
        assert us is not pool.dynamic and eu is not pool.dynamic and us is not eu
        assert pool.member_for([]) is pool.dynamic, "GGUF: the bare base needs no copy"
        assert pool.member_for([("std", 0.3)]) is pool.dynamic
        assert us.adapters == {} and eu.adapters == {}, "members run no LoRA"


def test_a_policy_outside_the_memory_budget_still_runs(bundle):
    with Runtime.open(bundle, mode="pool", exact=True) as full:
        one = full.pool[0].estimate_bytes
    with Runtime.open(bundle, exact=True) as dyn, Runtime.open(bundle, exact=True, mode="pool", pool_memory=one) as rt:
        fused = [m.label for m in rt.pool if m.fused]
        outside = [m for m in rt.pool if not m.fused]
        assert fused == ["US"], "the start-up policy is admitted first"
        assert {m.label for m in outside} == {"EU", "KIDS"}
        assert all("outside the memory budget" in m.why and m.path is None for m in outside)
        assert sorted(n.split()[2] for n in rt.notes if n.startswith("pool:")) == ["EU", "KIDS"]
        for policy in ("EU", "KIDS", "US"):
            assert rt.generate(PROMPT, raw=True, max_tokens=6, policy=policy).tokens == \
                dyn.generate(PROMPT, raw=True, max_tokens=6, policy=policy).tokens
    with Runtime.open(bundle, region="EU", mode="pool", pool_memory=0) as rt:
        assert [m.fused for m in rt.pool] == [False, False, False] and rt.pool[0].label == "EU"
        assert rt.generate(PROMPT, raw=True, max_tokens=4).finish_reason in ("stop", "length")


def test_nothing_is_fused_for_a_policy_that_cannot_fit(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SGEDGE_CACHE_DIR", str(tmp_path / "cache"))
    with Runtime.open(bundle, mode="pool", pool_memory="1K") as rt:
        assert not any(m.fused for m in rt.pool)
        assert all("needs at least" in m.why for m in rt.pool)
    fused = tmp_path / "cache" / "fused"
    assert not fused.exists() or not any(fused.iterdir()), "no fused file built for nothing"


def test_pool_on_quantized_base_stays_within_requantization(tiny, tmp_path):
    t = tiny("qwen2")
    q8 = export_base_gguf(t.hf, tmp_path / "q8.gguf", dtype="q8_0").path
    from sgedge.exporters.gguf_adapter import export_adapter_gguf

    a = export_adapter_gguf(t.lora1, tmp_path / "a.gguf", base=t.hf).path
    with Runtime.open(q8, adapters=[a]) as dyn, Runtime.open(q8, adapters=[a], mode="pool") as pool:
        assert [m.label for m in pool.pool if m.fused] == ["default"]
        ids = dyn.encode_prompt(PROMPT, raw=True)
        d, p, bare = dyn.logits(ids), pool.logits(ids), dyn.logits(ids, adapters=[])
        assert _rel(p, d) < 0.1 < _rel(bare, d)
        assert float(np.abs(pool.logits(ids, adapters=[]) - bare).max()) == 0.0, "bare: the same engine"


def test_pool_reload_refuses_nothing_and_rebuilds_changed_policies(tiny, tmp_path):
    from sgedge.exporters.bundle import add_adapter

    t = tiny("llama")
    path = tmp_path / "b"
    create_bundle(path, t.hf, {"std": t.lora1}, {"US": (PolicyItem("std"),)}, default_policy="US",
                  gguf_dtype="f32")
    with Runtime.open(path, exact=True, mode="pool") as rt:
        before = rt.generate(PROMPT, raw=True, max_tokens=6).tokens
        old = rt._backend.member_for([("std", 1.0)])
        add_adapter(path, "std", t.lora2)  # the publisher ships a new std
        rt.reload()
        new = rt._backend.member_for(rt._engine_names([("std", 1.0)]))
        assert new is not rt._backend.dynamic and new is not old, "the new adapter got its own fused copy"
        assert [m.label for m in rt.pool if m.fused] == ["US"]
        with Runtime.open(path, exact=True) as dyn:
            want = dyn.generate(PROMPT, raw=True, max_tokens=6).tokens
        assert rt.generate(PROMPT, raw=True, max_tokens=6).tokens == want != before


def test_pool_arguments_are_checked(bundle, tiny):
    with pytest.raises(InputError, match="applies to mode='pool'"):
        Runtime.open(bundle, pool_memory="1G")
    with pytest.raises(InputError, match="cannot read the memory size"):
        Runtime.open(bundle, mode="pool", pool_memory="lots")
    assert parse_size("2G") == 2 << 30 and parse_size("512M") == 512 << 20 and parse_size("1.5k") == 1536
    assert parse_size("100") == 100 and parse_size(None) is None and parse_size("2GiB") == 2 << 30
    with pytest.raises(InputError):
        parse_size("-1G")


def test_cli_runs_pool_mode(bundle, capsys):
    argv = ["run", "--bundle", str(bundle), "--mode", "pool", "--region", "EU", "--max-tokens", "4", "--json", "Hi"]
    assert main(argv) == 0
    assert '"mode": "pool"' in capsys.readouterr().out
    assert main(["run", "--bundle", str(bundle), "--mode", "pool", "--pool-memory", "x", "Hi"]) != 0
    assert "cannot read the memory size" in capsys.readouterr().err
    assert main(["run", "--bundle", str(bundle), "--fused", "--mode", "pool", "Hi"]) != 0
    assert "contradict" in capsys.readouterr().err


def test_onnx_pool_matches_the_dynamic_path_and_fuses_the_bare_base_too(tiny, tmp_path):
    pytest.importorskip("onnxruntime_genai")
    t = tiny("llama")
    path = tmp_path / "o"
    create_bundle(path, t.hf, {"std": t.lora1, "strict": t.lora2},
                  {"US": (PolicyItem("std"),), "EU": (PolicyItem("strict"), PolicyItem("std", 0.5))},
                  default_policy="US", formats=("onnx",), allow_no_adapter=True)
    with Runtime.open(path) as dyn, Runtime.open(path, mode="pool") as pool:
        assert pool.backend == "onnx"
        labels = {m.label: m for m in pool.pool}
        # ONNX: the bare base is a member too (fusing nothing removes the empty LoRA slots).
        assert set(labels) == {"US", "EU", "bare"} and all(m.fused and m.path.is_dir() for m in labels.values())
        ids = dyn.encode_prompt(PROMPT, raw=True)
        for policy in ("US", "EU", "US", []):
            assert pool.generate(PROMPT, raw=True, max_tokens=6, policy=policy).tokens == \
                dyn.generate(PROMPT, raw=True, max_tokens=6, policy=policy).tokens
            assert float(np.abs(pool.logits(ids, policy=policy) - dyn.logits(ids, policy=policy)).max()) < 1e-3


def test_serve_in_pool_mode_answers_each_policy_from_its_copy(bundle):
    from test_serve import call, running

    with Runtime.open(bundle, exact=True) as dyn, Runtime.open(bundle, exact=True, mode="pool") as rt, \
            running(rt) as srv:
        status, health = call(srv, "GET", "/health")
        assert status == 200 and health["mode"] == "pool"
        assert [p["policy"] for p in health["pool"]] == ["US", "EU", "KIDS"]  # GGUF: bare needs no copy
        for policy in ("EU", "US", "KIDS", "EU"):
            status, body = call(srv, "POST", "/v1/completions", {"model": policy, "prompt": PROMPT, "max_tokens": 6})
            want = dyn.generate(PROMPT, raw=True, max_tokens=6, policy=policy).text
            assert status == 200 and body["choices"][0]["text"] == want


def test_open_bundle_and_open_model_take_one_options_object(bundle, tiny):
    from sgedge import EngineOptions

    opts = EngineOptions(exact=True, mode="pool", n_ctx=256)
    with Runtime.open_bundle(bundle, "EU", options=opts) as rt, Runtime.open(bundle, "EU", exact=True, n_ctx=256,
                                                                             mode="pool") as kw:
        assert rt.mode == kw.mode == "pool" and rt.policy == "EU" and rt.context_size == 256
        assert rt.generate(PROMPT, raw=True, max_tokens=6).tokens == kw.generate(PROMPT, raw=True, max_tokens=6).tokens
    t = tiny("llama")
    with Runtime.open_model(t.gguf, [t.a1], options=EngineOptions(exact=True)) as rt:
        assert [a.name for a in rt.active] == ["a1"]
    with pytest.raises(InputError, match="either as options="):
        Runtime.open(bundle, options=opts, threads=1)
    with pytest.raises(InputError, match="is not a bundle"):
        Runtime.open_bundle(t.gguf)
    with pytest.raises(InputError, match="unknown mode"):
        EngineOptions(mode="turbo")
