"""Tiny random Hugging Face models, tokenizers and PEFT adapters, built offline.

Used by the tests, the benchmarks and (later) the demo builder: no hub, no download.
A model is a real `transformers` model of the requested family with random weights,
saved with a `tokenizers` BPE trained on a few built-in lines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sgedge.exporters.peft_io import build_lora, quiet, save_peft  # noqa: F401 (re-exported for tests)

CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you today? I'm fine, thanks.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 123 2024 3.14159 -7 1,000,000.",
    "Safety adapters keep the base model frozen and put refusals in a small LoRA.",
    "Unicode: café naïve résumé — “quotes” ‘single’ … 東京 北京 Ελληνικά русский 😀",
    "Code: def f(x): return x * 2  # comment\n\tif a != b: print('ok')",
    "Punctuation: (a) [b] {c} <d> @e #f $g %h ^i &j *k _l +m =n |o ~p `q` \\r /s",
    "Can you help me bake bread? Mix flour, water, salt and yeast, then knead.",
    "I can't help with that request, but here is a safer alternative.",
    "Whitespace   with  several    spaces and\nnew\nlines\n\nand tabs\t\tend.",
    "don't won't it's we're they've I'll you'd SHE'S Don'T",
)

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# Pre-tokenizer regexes as published in the tokenizer.json of well-known models.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Tokenizer style per family, as the real models of that family ship them.
TOKENIZER_STYLE = {
    "llama": "llama3",
    "mistral": "spm",
    "qwen2": "qwen2",
    "qwen3": "qwen2",
    "phi3": "phi3",
}


def _byte_level_tokenizer(style: str, vocab_size: int, corpus: Sequence[str] = CORPUS * 4) -> tuple[Any, dict[str, Any]]:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif style == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:
        pattern = {"llama3": LLAMA3_PATTERN, "o200k": O200K_PATTERN}.get(style, QWEN2_PATTERN)
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    if style == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
        names = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "pad_token": "<|end_of_text|>"}
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        names = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens(specials)
    if style == "llama3":
        from tokenizers import processors

        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id(specials[0]))]
        )
    return tok, {**names, "chat_template": CHATML_TEMPLATE}


def _spm_tokenizer(vocab_size: int, phi3: bool = False) -> tuple[Any, dict[str, Any]]:
    """A Llama-2 / Mistral / Phi-3 style tokenizer.json: metaspace BPE with byte fallback."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    trainer_tok.train_from_iterator(CORPUS * 4, trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    specials = ["<unk>", "<s>", "</s>"]
    vocab: dict[str, int] = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # As Llama 2 / Mistral / Phi-3 ship it: the normalizer prepends and escapes spaces.
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", 1)]
    )
    names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    if not phi3:
        return tok, {**names, "chat_template": INST_TEMPLATE}
    # Phi-3's chat tokens strip the whitespace that follows them (rstrip), in HF and llama.cpp.
    chat = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"]
    tok.add_special_tokens([AddedToken(t, rstrip=True, special=True, normalized=False) for t in chat])
    return tok, {**names, "eos_token": "<|end|>", "chat_template": PHI3_TEMPLATE}


def save_tokenizer(out_dir: Path, style: str, vocab_size: int = 400, corpus: Sequence[str] | None = None) -> Any:
    """Train and save a tokenizer of `style` (llama3, qwen2, o200k, gpt2, smollm, spm, phi3) to `out_dir`.

    `corpus` (byte-level styles only) replaces the built-in lines the BPE is trained on.
    """
    from transformers import PreTrainedTokenizerFast

    if style in ("spm", "phi3"):
        tok, extra = _spm_tokenizer(vocab_size, phi3=style == "phi3")
    else:
        tok, extra = _byte_level_tokenizer(style, vocab_size, *([corpus] if corpus is not None else []))
    chat_template = extra.pop("chat_template")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **extra)
    hf.chat_template = chat_template
    hf.save_pretrained(out_dir)
    return hf


def _config(family: str, vocab_size: int, shape: Mapping[str, Any], tok: Any) -> Any:
    import transformers

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    common.update(shape)
    cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
        "phi3": transformers.Phi3Config,
    }[family]
    if family == "qwen3":
        common.setdefault("head_dim", common["hidden_size"] // common["num_attention_heads"])
    if family == "phi3":
        common.setdefault("original_max_position_embeddings", common["max_position_embeddings"])
        common.setdefault("sliding_window", None)
    if family == "mistral":
        common.setdefault("sliding_window", None)
    return cls(**common)


def build_model(
    family: str,
    out_dir: str | Path,
    *,
    shape: Mapping[str, Any] | None = None,
    tokenizer_style: str | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    init_std: float = 0.08,
) -> Path:
    """Save a random `family` model (config, safetensors weights, tokenizer) to `out_dir`.

    `shape` overrides config keys (hidden_size, num_hidden_layers, ...). `vocab_size`
    larger than the trained tokenizer pads the embedding, as real checkpoints often do.
    """
    import torch
    import transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    style = tokenizer_style or TOKENIZER_STYLE[family]
    tok = save_tokenizer(out, style)
    torch.manual_seed(seed)
    cfg = _config(family, max(vocab_size or 0, len(tok)), shape or {}, tok)
    cfg.initializer_range = init_std
    with quiet():
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        # Random norms and biases too, so that exporters that drop or misplace them fail.
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.1 * torch.randn_like(p))
    model.eval()
    with quiet():
        model.save_pretrained(out)
    return out
