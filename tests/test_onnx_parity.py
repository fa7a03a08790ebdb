"""ONNX exports run by sgedge (ONNX Runtime GenAI) reproduce transformers + PEFT.

| check                      | bound | measured |
| teacher-forced logits fp32 | max abs diff < 1e-4 | ~3e-6 |
| greedy tokens fp32         | each token the reference argmax, or a near-tie within 1e-3 | exact |
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FAMILIES
from reference import CASES, PROMPT, assert_greedy_matches, hf_logits, hf_model, peft_case

from sgedge.runtime.api import Runtime

TOL = 1e-4


@pytest.fixture(scope="module")
def runtimes(tiny, tiny_onnx):
    opened = {}

    def get(family):
        if family not in opened:
            o = tiny_onnx(family)
            opened[family] = (tiny(family), o, Runtime.open(o.base, adapters=[o.a1, o.a2]))
        return opened[family]

    yield get
    for *_, rt in opened.values():
        rt.close()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_matches_peft(runtimes, family, case):
    t, _, rt = runtimes(family)
    res = rt.generate(PROMPT, raw=True, max_tokens=20, adapters=CASES[case])
    ref = hf_model(t.hf, peft_case(t, case))
    assert assert_greedy_matches(ref, res.prompt_tokens, res.tokens, 1e-3) == len(res.tokens)
    ids = res.prompt_tokens + res.tokens
    ours = rt.logits(ids, adapters=CASES[case])
    diff = float(np.abs(ours - hf_logits(ref, ids)).max())
    assert diff < TOL, f"max |logit diff| {diff:.2e}"
    if case != "none":
        assert float(np.abs(rt.logits(ids, adapters=[]) - ours).max()) > 1000 * TOL


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3"])
def test_gguf_and_onnx_give_the_same_tokens(runtimes, family):
    t, _, onnx_rt = runtimes(family)
    with Runtime.open(t.gguf, adapters=[t.a1, t.a2], exact=True) as gguf_rt:
        for case in ("none", "stacked"):
            # ignore_eos: llama.cpp also stops at tokens it detects as end-of-generation by name.
            a = gguf_rt.generate(PROMPT, raw=True, max_tokens=16, adapters=CASES[case], ignore_eos=True)
            b = onnx_rt.generate(PROMPT, raw=True, max_tokens=16, adapters=CASES[case], ignore_eos=True)
            assert a.prompt_tokens == b.prompt_tokens
            if a.tokens != b.tokens:
                # Allowed only where the two engines' float rounding meets a near-tie.
                i = next(j for j, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=True)) if x != y)
                row = onnx_rt.logits(a.prompt_tokens + a.tokens[:i], adapters=CASES[case])[-1]
                assert abs(float(row[a.tokens[i]] - row[b.tokens[i]])) < 1e-4, (a.tokens, b.tokens)


def test_stock_onnxruntime_genai_and_ort_load_the_adapter(runtimes):
    import onnxruntime as ort
    import onnxruntime_genai as og

    _, o, rt = runtimes("qwen3")
    ours = rt.generate(PROMPT, raw=True, max_tokens=12, adapters=[("a1", 1.0)], ignore_eos=True)
    lora = ort.LoraAdapter()
    lora.Load(str(o.a1))
    model = og.Model(str(o.base))
    adapters = og.Adapters(model)
    adapters.load(str(o.a1), "safety")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ours.prompt_tokens) + 12, do_sample=False,
                              min_length=len(ours.prompt_tokens) + 12)
    gen = og.Generator(model, params)
    gen.set_active_adapter(adapters, "safety")
    gen.append_tokens(ours.prompt_tokens)
    stock = []
    while not gen.is_done():
        gen.generate_next_token()
        stock.append(int(gen.get_next_tokens()[0]))
    assert stock == ours.tokens
