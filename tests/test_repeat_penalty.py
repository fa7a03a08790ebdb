"""repeat_penalty on both backends: greedy decoding with it equals Hugging Face's
RepetitionPenaltyLogitsProcessor applied to the engine's own logits, step by step, over
the prompt and the reply; bad values are refused everywhere they can be given."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sgedge.errors import InputError
from sgedge.runtime.api import Runtime
from sgedge.runtime.types import Sampling

CHAT = [{"role": "user", "content": "How do I make bread? Tell me step by step."}]


def hf_penalized_greedy(rt: Runtime, ids: list[int], n: int, penalty: float, adapters) -> list[int]:
    """The reference: teacher-forced logits from the engine, penalized by transformers' own processor."""
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    proc = RepetitionPenaltyLogitsProcessor(penalty)
    seq, out = list(ids), []
    for _ in range(n):
        logits = torch.from_numpy(np.asarray(rt.logits(seq, adapters=adapters)[-1], dtype=np.float32)[None].copy())
        tok = int(proc(torch.tensor([seq]), logits).argmax(-1))
        if ends(rt, tok):
            break
        out.append(tok)
        seq.append(tok)
    return out


def ends(rt: Runtime, tok: int) -> bool:
    be = rt._backend
    if rt.backend == "gguf":
        return tok in be._stop or bool(be._llama.llama_vocab_is_eog(be._vocab, tok))
    return tok in be._eos


@pytest.fixture(scope="module", params=["gguf", "onnx"])
def engine(request, tiny, tiny_onnx):
    if request.param == "gguf":
        t = tiny("llama")
        base, a1, opts = t.gguf, t.a1, {"exact": True}
    else:
        o = tiny_onnx("llama")
        base, a1, opts = o.base, o.a1, {}
    with Runtime.open(base, adapters=[a1], prompt_cache=True, **opts) as rt:
        yield rt


@pytest.mark.parametrize("penalty", [1.3, 2.0, 0.8])
def test_greedy_with_a_penalty_is_hugging_faces(engine, penalty):
    rt = engine
    for adapters in ([("a1", 1.0)], []):
        ids = rt.encode_prompt(CHAT)
        got = rt.generate(CHAT, max_tokens=24, repeat_penalty=penalty, adapters=adapters)
        assert got.tokens == hf_penalized_greedy(rt, ids, 24, penalty, adapters), (penalty, adapters)


def test_the_penalty_changes_a_looping_reply(engine):
    # Random tiny models loop under greedy decoding; a strong penalty must break the loop
    # (so that the parity test above is not comparing two unpenalized replies).
    rt = engine
    plain = rt.generate(CHAT, max_tokens=32, adapters=[])
    assert len(set(plain.tokens)) < len(plain.tokens)  # it repeats itself
    strong = rt.generate(CHAT, max_tokens=32, adapters=[], repeat_penalty=10.0)
    assert strong.tokens != plain.tokens
    assert len(set(strong.tokens)) > len(set(plain.tokens))
    # And off again: the plain reply comes back (no penalty left in a reused cache or generator).
    assert rt.generate(CHAT, max_tokens=32, adapters=[]).tokens == plain.tokens


def test_sampled_generation_takes_the_penalty_and_stays_seeded(engine):
    rt = engine
    a = rt.generate(CHAT, max_tokens=16, temperature=0.9, seed=5, repeat_penalty=1.5)
    b = rt.generate(CHAT, max_tokens=16, temperature=0.9, seed=5, repeat_penalty=1.5)
    assert a.tokens == b.tokens


def test_the_gguf_grammar_never_sees_the_prompt(tiny):
    # The penalty sampler is primed with the prompt's tokens; the grammar sampler beside it
    # must not be, or structured output would start from a broken state.
    t = tiny("qwen2")
    with Runtime.open(t.gguf, adapters=[t.a1], exact=True) as rt:
        r = rt.generate(CHAT, max_tokens=64, repeat_penalty=1.5, response_format={"type": "json_object"})
        assert r.text.lstrip().startswith("{")
        if r.finish_reason == "stop":
            assert isinstance(json.loads(r.text), dict)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), 10.5, "1.1", True, None])
def test_bad_penalties_are_refused(bad):
    with pytest.raises(InputError, match="repeat_penalty must be in"):
        Sampling(repeat_penalty=bad)


def test_the_cli_refuses_a_bad_penalty_with_a_clear_message(tiny, tmp_path):
    t = tiny("llama")
    r = subprocess.run([sys.executable, "-m", "sgedge", "run", "--model", str(t.gguf),
                        "--repeat-penalty", "0", "hi"], capture_output=True, text=True)
    assert r.returncode != 0 and "repeat_penalty must be in (0, 10]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    ok = subprocess.run([sys.executable, "-m", "sgedge", "run", "--model", str(t.gguf),
                         "--repeat-penalty", "1.3", "--max-tokens", "4", "--json", "hi"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["tokens"]) <= 4
