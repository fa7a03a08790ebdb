"""Prompt token ids from the GGUF equal the Hugging Face tokenizer's, per family."""

from __future__ import annotations

import pytest
from conftest import FAMILIES

from sgedge.runtime.gguf_backend import GgufBackend

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
    be = GgufBackend(t.gguf, n_ctx=512)
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
    from transformers import AutoTokenizer

    from sgedge.runtime.api import Runtime

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


def test_o200k_split_is_recognised_as_gpt_4o(tmp_path):
    # Phi-4-mini ships OpenAI's o200k split regex (Split + ByteLevel without regex): the
    # export names it llama.cpp's "gpt-4o" pre-tokenizer without --pre-tokenizer, and the
    # tokens equal transformers' (cased words, contractions, digits in threes, "/").
    from transformers import AutoTokenizer

    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.formats.gguf_meta import read_gguf_info
    from sgedge.testing.synthetic import build_model

    hf = build_model("phi3", tmp_path / "hf", tokenizer_style="o200k")
    base = export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path
    assert read_gguf_info(base).get("tokenizer.ggml.pre") == "gpt-4o"
    tok = AutoTokenizer.from_pretrained(hf)
    extra = ["HelloWorld CamelCaseWords HTTPServer don'T", "path/to/file\n/usr/bin", "1234567 12 1"]
    be = GgufBackend(base, n_ctx=512)
    try:
        bad = [(t, tok(t).input_ids, be.tokenize(t, add_special=True)) for t in STRINGS + extra]
        bad = [b for b in bad if b[1] != b[2]]
        assert not bad, "\n".join(f"{t!r}: hf={r} sgedge={o}" for t, r, o in bad)
    finally:
        be.close()


REPLIES = [
    "Sure, here is how: mix flour and water.",  # SentencePiece: the first piece starts with "▁"
    " leading space kept when the text has two",
    "unicode across tokens: café 東京 😀 — “quotes”",
    "digits 1,000,000 and\nnew lines\n\n",
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", ["gguf", "onnx"])
def test_reply_text_equals_hf_decode(tiny, tiny_onnx, family, backend):
    # What generate() streams for a reply's tokens, joined, is transformers' decode of them.
    # onnxruntime-genai's own stream decoder kept the "▁" of a SentencePiece reply's first
    # piece (" Sure, ..." on Mistral and Phi-3), which HF's decoder strips.
    from transformers import AutoTokenizer

    from sgedge.runtime.onnx_backend import OnnxBackend

    t = tiny(family)
    tok = AutoTokenizer.from_pretrained(t.hf)
    be = GgufBackend(t.gguf, n_ctx=512) if backend == "gguf" else OnnxBackend(tiny_onnx(family).base)
    try:
        for text in REPLIES + [f"before {tok.eos_token} after"]:
            ids = tok(text, add_special_tokens=False).input_ids
            step = be.text_stream()
            ours = "".join(step(i) for i in ids) + step(None)
            assert ours == tok.decode(ids, skip_special_tokens=True), (text, ids)
    finally:
        be.close()


@pytest.mark.parametrize("family", ["mistral", "phi3"])
def test_reply_of_invalid_bytes_streams_without_error(tiny, tiny_onnx, family):
    # A random model wrote "I", a lone lead byte, a stray byte and a word: tokenizers'
    # DecodeStream raised ("Invalid prefix encountered while decoding stream") mid-reply.
    from transformers import AutoTokenizer

    from sgedge.runtime.onnx_backend import OnnxBackend

    t = tiny(family)
    tok = AutoTokenizer.from_pretrained(t.hf)
    ids = tok("Sure", add_special_tokens=False).input_ids
    ids += [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in (0x49, 0xD2, 0x7F, 0xE2, 0x80)]
    ids += tok("words after", add_special_tokens=False).input_ids + [tok.convert_tokens_to_ids("<0xE2>")]
    be = OnnxBackend(tiny_onnx(family).base)
    try:
        step = be.text_stream()
        ours = "".join(step(i) for i in ids) + step(None)
    finally:
        be.close()
    assert ours == tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("backend", ["gguf", "onnx"])
def test_text_held_back_at_the_end_of_a_reply_is_given_out(tiny, tiny_onnx, monkeypatch, backend):
    # A reply that ends inside a character (or a byte-fallback run) is held by the text
    # stream until its end: generate() must ask for it (step(None)), whole or streamed.
    from sgedge.runtime.api import Runtime
    from sgedge.runtime.onnx_backend import OnnxBackend

    cls = GgufBackend if backend == "gguf" else OnnxBackend
    monkeypatch.setattr(cls, "text_stream", lambda self: lambda token: "held" if token is None else "")
    model = tiny("llama").gguf if backend == "gguf" else tiny_onnx("llama").base
    with Runtime.open(model) as rt:
        assert rt.generate("Hello", raw=True, max_tokens=3).text == "held"
        assert "".join(rt.stream("Hello", raw=True, max_tokens=3)) == "held"
