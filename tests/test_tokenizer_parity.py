"""Prompt token ids from the GGUF equal the Hugging Face tokenizer's, per family."""

from __future__ import annotations

import pytest
from conftest import FAMILIES
from sgedge.runtime.llama_backend import LlamaBackend

STRINGS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "multiple   spaces\tand\ttabs\nand\n\nnewlines",
    "digits 0123456789 and 3.14159, 1,000,000; -42",
    "Punctuation!? (yes) [no] {maybe} <tag> 'quoted' \"double\" ... --- ;:",
    "unicode: café naïve 東京 Ελληνικά русский 😀 — “quotes”",
    "contractions: don't won't it's we're they've I'll you'd SHE'S",
    "unseen words: zyzzyva quixotic xylophone",
    "",
]


def _specials(tok) -> list[str]:
    eos = tok.eos_token
    return [f"{s}user\nhi{eos}" for s in ("<|im_start|>",) if s in tok.get_vocab()] + [
        f"text then {eos} and more",
        f"{eos}{eos}",
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_tokens_equal_hf(tiny, family):
    from transformers import AutoTokenizer

    t = tiny(family)
    tok = AutoTokenizer.from_pretrained(t.hf)
    be = LlamaBackend(t.gguf, n_ctx=512)
    try:
        mismatches = []
        for text in STRINGS + _specials(tok):
            ref = tok(text).input_ids
            ours = be.tokenize(text, add_special=True)
            if ours != ref:
                mismatches.append((text, ref, ours))
        assert not mismatches, "\n".join(f"{t!r}: hf={r} sgedge={o}" for t, r, o in mismatches)
    finally:
        be.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_prompt_equals_hf_chat_template(tiny, family):
    from sgedge.runtime.api import Runtime
    from transformers import AutoTokenizer

    t = tiny(family)
    tok = AutoTokenizer.from_pretrained(t.hf)
    conversations = [
        [{"role": "user", "content": "How do I bake bread? Step 1, please."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Café 東京 😀?"}],
    ]
    with Runtime.open(t.gguf, n_ctx=512) as rt:
        for messages in conversations:
            ref = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ref = ref["input_ids"] if isinstance(ref, dict) or hasattr(ref, "keys") else ref
            assert rt.encode_prompt(messages) == list(ref)
