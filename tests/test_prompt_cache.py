"""The prompt cache (GGUF and ONNX): a chat's next turn computes only what is new, never reuses
keys/values across an adapter change, and answers as a fresh context does."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sgedge.runtime.api import Runtime

CHAT = [{"role": "user", "content": "How do I make bread?"}]


def turn2(reply: str) -> list[dict[str, str]]:
    return [*CHAT, {"role": "assistant", "content": reply}, {"role": "user", "content": "And then what?"}]




@pytest.fixture(scope="module", params=["gguf", "onnx"])
def pair(request, tiny, tiny_onnx):
    """Two runtimes on one base + adapters a1, a2: with the prompt cache, and without."""
    if request.param == "gguf":
        t = tiny("llama")
        base, a1, a2, opts = t.gguf, t.a1, t.a2, {"exact": True}
    else:
        o = tiny_onnx("llama")
        base, a1, a2, opts = o.base, o.a1, o.a2, {}
    with Runtime.open(base, adapters=[a1, a2], prompt_cache=True, **opts) as cached, \
            Runtime.open(base, adapters=[a1, a2], **opts) as fresh:
        yield cached, fresh


def test_next_turn_reuses_the_previous_prompt_and_reply(pair):
    cached, fresh = pair
    first = cached.generate(CHAT, max_tokens=12)
    follow = turn2(first.text)
    second = cached.generate(follow, max_tokens=12)
    # Everything the context holds that the new prompt starts with: the first prompt and
    # the reply's tokens (the last one of a cut reply was never computed), as far as the
    # template re-encodes them alike.
    held = [*first.prompt_tokens, *(first.tokens[:-1] if first.finish_reason == "length" else first.tokens)]
    assert second.timings.cached_tokens == min(len(os.path.commonprefix([held, second.prompt_tokens])), len(second.prompt_tokens) - 1)
    assert second.timings.cached_tokens >= len(first.prompt_tokens)
    assert second.tokens == fresh.generate(follow, max_tokens=12).tokens
    assert fresh.generate(follow, max_tokens=12).timings.cached_tokens == 0  # off unless asked for


def test_an_adapter_change_never_reuses_keys_and_values(pair):
    cached, fresh = pair
    for adapters in ([("a1", 1.0)], [("a1", 0.5)], [("a2", 1.0)], [], [("a1", 1.0), ("a2", 0.5)], [("a1", 1.0)]):
        r = cached.generate(CHAT, max_tokens=8, adapters=adapters)
        same = cached.generate(CHAT, max_tokens=8, adapters=adapters)
        assert r.timings.cached_tokens == 0, adapters  # the run before used other adapters
        assert same.timings.cached_tokens == len(same.prompt_tokens) - 1  # the last token is always computed
        want = fresh.generate(CHAT, max_tokens=8, adapters=adapters).tokens
        assert r.tokens == want and same.tokens == want, adapters


def test_the_kept_keys_and_values_give_the_fresh_logits(tiny):
    # Teacher-forced check of what the cache keeps: the first reply token's logits after
    # a reused prefix equal a fresh context's (f32, exact), to float rounding.
    t = tiny("qwen2")
    with Runtime.open(t.gguf, adapters=[t.a1], exact=True, prompt_cache=True) as rt:
        be = rt._backend
        seen = {}
        decode = be._decode

        def spy(tokens):
            decode(tokens)
            seen["logits"] = np.ctypeslib.as_array(be._llama.llama_get_logits_ith(be._ctx, -1),
                                                   shape=(be.n_vocab,)).copy()

        be._decode = spy
        first = rt.generate(CHAT, max_tokens=10)
        follow = turn2(first.text)
        second = rt.generate(follow, max_tokens=1)
        assert second.timings.cached_tokens > len(first.prompt_tokens) // 2
        kept = seen["logits"]
        ids = rt.encode_prompt(follow)
        ref = rt.logits(ids)[-1]  # a fresh, whole computation (and it empties the cache)
        assert float(np.abs(kept - ref).max()) < 1e-4
        assert rt.generate(follow, max_tokens=1).timings.cached_tokens == 0


def test_a_reply_cut_by_a_stop_string_leaves_a_usable_cache(pair):
    cached, fresh = pair
    full = fresh.generate(CHAT, max_tokens=24, adapters=[("a1", 1.0)])
    assert len(full.text) > 4
    cut = cached.generate(CHAT, max_tokens=24, adapters=[("a1", 1.0)], stop=full.text[2:4])
    assert cut.text == full.text[:full.text.index(full.text[2:4])] and cut.finish_reason == "stop"
    again = cached.generate(turn2(cut.text), max_tokens=10, adapters=[("a1", 1.0)])
    assert again.timings.cached_tokens >= len(cut.prompt_tokens)
    assert again.tokens == fresh.generate(turn2(cut.text), max_tokens=10, adapters=[("a1", 1.0)]).tokens


def test_a_failed_generation_empties_the_cache(pair):
    cached, _ = pair
    cached.generate(CHAT, max_tokens=4)
    with pytest.raises(Exception, match="do not fit the context"):
        cached.generate(CHAT, max_tokens=cached.context_size)
    # Refused before anything ran: the cache is intact and still used.
    assert cached.generate(CHAT, max_tokens=4).timings.cached_tokens > 0
    be = cached._backend
    if cached.backend == "gguf":
        real = be._llama

        class Failing:
            def __getattr__(self, name):
                if name == "llama_decode":
                    return lambda *a: 1
                return getattr(real, name)

        be._llama = Failing()
        try:
            with pytest.raises(Exception, match="decode failed"):
                cached.generate(turn2("x"), max_tokens=4)
        finally:
            be._llama = real
    else:
        live = be._live.gen

        class Failing:
            def __getattr__(self, name):
                if name == "append_tokens":
                    def fail(*a):
                        raise RuntimeError("injected")
                    return fail
                return getattr(live, name)

        be._live.gen = Failing()
        with pytest.raises(Exception, match="onnxruntime-genai failed .*injected"):
            cached.generate(turn2("x"), max_tokens=4)
    assert cached.generate(CHAT, max_tokens=4).timings.cached_tokens == 0


def test_onnx_caches_greedy_generations_only(tiny_onnx):
    # A sampled generation carries its random state in the generator: never reused.
    o = tiny_onnx("qwen2")
    with Runtime.open(o.base, adapters=[o.a1], prompt_cache=True) as rt, Runtime.open(o.base, adapters=[o.a1]) as fresh:
        assert not rt.notes
        for _ in range(2):
            r = rt.generate(CHAT, max_tokens=5, temperature=0.8, seed=3)
            assert r.timings.cached_tokens == 0
            assert r.tokens == fresh.generate(CHAT, max_tokens=5, temperature=0.8, seed=3).tokens
        rt.generate(CHAT, max_tokens=5)
        again = rt.generate(CHAT, max_tokens=5)
        assert again.timings.cached_tokens == len(again.prompt_tokens) - 1
        assert again.tokens == fresh.generate(CHAT, max_tokens=5).tokens
        # A reply up to the whole context, from a rewound generator, as a fresh one gives it.
        n = rt.context_size - len(again.prompt_tokens)
        long = rt.generate(CHAT, max_tokens=n)
        assert long.timings.cached_tokens > 0 and long.tokens == fresh.generate(CHAT, max_tokens=n).tokens


def test_onnx_reuses_its_generator_from_zero_without_the_cache(tiny_onnx):
    # Making an og generator costs more than a short reply on small models; rewound to 0,
    # the last one computes what a new one would, bit for bit.
    import numpy as np

    o = tiny_onnx("phi3")
    with Runtime.open(o.base, adapters=[o.a1]) as rt:
        be = rt._backend
        first = rt.generate(CHAT, max_tokens=6)
        kept = be._live.gen
        prompts = ["a b c", "How do I make bread?", "x" * 40]
        for p in prompts:
            r = rt.generate(p, max_tokens=6)
            assert be._live.gen is kept and r.timings.cached_tokens == 0
        ids = rt.encode_prompt("How do I make bread?")
        kept.rewind_to(0)
        kept.append_tokens(ids)
        reused = np.asarray(kept.get_output("logits"), dtype=np.float32)[0].copy()
        new = be._generator(len(ids) + 1)
        new.append_tokens(ids)
        assert np.array_equal(reused, np.asarray(new.get_output("logits"), dtype=np.float32)[0])
        be._live = None  # the test moved the kept generator; start clean
        with Runtime.open(o.base, adapters=[o.a1]) as other:
            assert [rt.generate(p, max_tokens=6).tokens for p in prompts] == \
                [other.generate(p, max_tokens=6).tokens for p in prompts]
        assert first.tokens == rt.generate(CHAT, max_tokens=6).tokens
