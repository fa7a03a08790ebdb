"""Tokenizer -> GGUF vocabulary metadata that llama.cpp tokenizes identically.

Two tokenizer families are covered, as Hugging Face ships them in tokenizer.json:
- byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM...): llama.cpp model "gpt2" with merges
  and a pre-tokenizer name (`tokenizer.ggml.pre`) chosen from the pre-tokenizer's
  structure; an unknown one is refused rather than guessed.
- SentencePiece style (Llama 2, Mistral, Phi-3): metaspace BPE with byte fallback;
  llama.cpp model "llama", which merges by score, so BPE merge ranks become scores. (Models that ship tokenizer.model ship tokenizer.json too; it is the one read.)
Special tokens, add_bos/eos and the chat template come from gguf-py's SpecialVocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgedge import strict_json
from sgedge.errors import UnsupportedModelError

# Byte-level BPE pre-tokenizers llama.cpp knows, keyed on the regex that
# tokenizer.json's Split pre-tokenizer carries.
_SPLIT_REGEX_TO_PRE = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen35",
    # OpenAI's o200k split (Phi-4-mini, GPT-4o-style tokenizers)
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+": "gpt-4o",
}
KNOWN_PRE = ("gpt-2", "smollm", *sorted(set(_SPLIT_REGEX_TO_PRE.values())))

# llama.cpp token types (gguf.TokenType values).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class Vocab:
    model: str  # "gpt2" or "llama"
    pre: str
    tokens: list[bytes]
    scores: list[float] | None
    types: list[int]
    merges: list[str]
    add_space_prefix: bool = False


def _byte_level_pre(pre_tok: dict[str, Any] | None) -> str | None:
    """The llama.cpp pre-tokenizer of a byte-level one; None when not recognised (also
    when the structure is not a tokenizers pre-tokenizer at all)."""
    try:
        return _recognise_pre(pre_tok)
    except (AttributeError, TypeError, KeyError, IndexError):
        return None


def _recognise_pre(pre_tok: dict[str, Any] | None) -> str | None:
    """Name of the llama.cpp pre-tokenizer equivalent to tokenizer.json's, or None."""
    if pre_tok is None:
        return None
    kind = pre_tok.get("type")
    if kind == "ByteLevel" and pre_tok.get("use_regex", True):
        return "gpt-2"
    if kind != "Sequence":
        return None
    parts = pre_tok.get("pretokenizers", [])
    kinds = [p.get("type") for p in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        split = parts[0]
        if split.get("behavior") == "Isolated" and not split.get("invert"):
            return _SPLIT_REGEX_TO_PRE.get(split.get("pattern", {}).get("Regex", ""))
    return None


def _added_tokens(tj: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    return {t["id"]: (t["content"], bool(t.get("special"))) for t in tj.get("added_tokens", [])}


def _check_shape(tj: dict[str, Any], n_vocab: int) -> None:
    """The parts of tokenizer.json the export reads, of the right types, and every token
    id inside the model's vocabulary (an id of 10^12 would otherwise grow the token list
    until memory runs out)."""
    def bad(what: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"tokenizer.json: {what}; save the tokenizer again with save_pretrained")

    model = tj.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise bad("'model.vocab' must be an object mapping tokens to ids")
    ids = list(model["vocab"].values())
    added = tj.get("added_tokens", [])
    if not isinstance(added, list) or not all(
            isinstance(t, dict) and isinstance(t.get("content"), str) for t in added):
        raise bad("'added_tokens' must be a list of objects with 'id' and 'content'")
    ids += [t.get("id") for t in added]
    bad_ids = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_vocab]
    if bad_ids:
        wrong = bad_ids[0]
        raise bad(f"token id {wrong!r} is not inside the model's vocabulary of {n_vocab} (config vocab_size): "
                  "the tokenizer belongs to another model")
    merges = model.get("merges", [])
    if not isinstance(merges, list) or not all(
            isinstance(m, str) and " " in m or isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m)
            for m in merges):
        raise bad("'model.merges' must be a list of 'left right' strings or [left, right] pairs")


def check_vocab(vocab: Vocab) -> None:
    """What llama.cpp needs of a vocabulary not to abort: every token once, and for
    SentencePiece the 256 byte tokens its fallback looks up."""
    seen: set[bytes] = set()
    for t in vocab.tokens:
        if t in seen:
            raise UnsupportedModelError(f"tokenizer.json names the token {t.decode('utf-8', 'replace')!r} twice "
                                        "(under two ids); llama.cpp needs each token once")
        seen.add(t)
    if vocab.model == "llama":
        missing = [b for b in range(256) if f"<0x{b:02X}>".encode() not in seen and not (b < 128 and bytes([b]) in seen)]
        if missing:
            raise UnsupportedModelError(
                f"the tokenizer uses byte fallback but lacks {len(missing)} of its 256 byte tokens (<0x{missing[0]:02X}> "
                "first); llama.cpp would stop the process at the first character it cannot spell")


def _fill(n: int) -> tuple[list[bytes], list[int]]:
    return [f"[PAD{i}]".encode() for i in range(n)], [_UNUSED] * n


def _gpt2_vocab(tj: dict[str, Any], n_vocab: int, pre: str) -> Vocab:
    model = tj["model"]
    added = _added_tokens(tj)
    size = max(n_vocab, len(model["vocab"]), max(added, default=-1) + 1)
    tokens, types = _fill(size)
    for text, i in model["vocab"].items():
        tokens[i], types[i] = text.encode(), _NORMAL
    for i, (text, special) in added.items():
        tokens[i], types[i] = text.encode(), _CONTROL if special else _USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise UnsupportedModelError("tokenizer.json has a BPE model without merges; llama.cpp needs them")
    return Vocab("gpt2", pre, tokens, None, types, merges)


def _spm_from_bpe(tj: dict[str, Any], n_vocab: int) -> Vocab:
    model = tj["model"]
    added = _added_tokens(tj)
    size = max(n_vocab, len(model["vocab"]), max(added, default=-1) + 1)
    tokens, types = _fill(size)
    scores = [-10000.0] * size
    vocab: dict[str, int] = model["vocab"]
    for text, i in vocab.items():
        tokens[i], types[i], scores[i] = text.encode(), _NORMAL, 0.0
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types[i] = _BYTE
    # llama.cpp's SentencePiece tokenizer merges the bigram whose result scores
    # highest, HF BPE the merge of lowest rank: score = -(rank + 1) makes them agree.
    for rank, m in enumerate(model.get("merges", [])):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        i = vocab.get(left + right)
        if i is not None and scores[i] == 0.0:
            scores[i] = -float(rank + 1)
    unk = model.get("unk_token")
    if unk in vocab:
        types[vocab[unk]] = _UNKNOWN
    for i, (text, special) in added.items():
        tokens[i], scores[i] = text.encode(), 0.0
        types[i] = _UNKNOWN if text == unk else (_CONTROL if special else _USER_DEFINED)
    return Vocab("llama", "default", tokens, scores, types, [], _adds_space_prefix(tj))


def _adds_space_prefix(tj: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer.json prepends '▁' to the text."""
    def walk(node: Any) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        inner = node.get("normalizers") or node.get("pretokenizers") or []
        return [node] + [n for child in inner for n in walk(child)]

    for node in walk(tj.get("normalizer")) + walk(tj.get("pre_tokenizer")):
        if node.get("type") == "Prepend":
            return True
        if node.get("type") == "Metaspace" and node.get("prepend_scheme", "always") != "never":
            return True
    return False


def read_vocab(model_dir: Path, n_vocab: int, pre_override: str | None = None) -> Vocab:
    """Build the GGUF vocabulary of the tokenizer in `model_dir` (config vocab size `n_vocab`)."""
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise UnsupportedModelError(
            f"{model_dir} has no tokenizer.json; save the fast tokenizer with "
            "AutoTokenizer.from_pretrained(...).save_pretrained() next to the model"
        )
    tj = strict_json.read(tj_path, error=UnsupportedModelError)
    model = tj.get("model", {})
    if not isinstance(model, dict):
        raise UnsupportedModelError(f"{tj_path}: 'model' must be an object")
    kind = model.get("type")
    if kind != "BPE":
        raise UnsupportedModelError(
            f"tokenizer model type {kind!r} is not supported; sgedge exports BPE tokenizers "
            "(byte-level, or SentencePiece-style with byte fallback)"
        )
    _check_shape(tj, n_vocab)
    try:
        return _build(tj, model, n_vocab, pre_override)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
        raise UnsupportedModelError(f"{tj_path} does not have the structure of a tokenizers tokenizer.json "
                                    f"({type(e).__name__}: {str(e)[:120]}); save the tokenizer again with "
                                    "save_pretrained") from None


def _build(tj: dict[str, Any], model: dict[str, Any], n_vocab: int, pre_override: str | None) -> Vocab:
    if model.get("byte_fallback"):
        vocab = _spm_from_bpe(tj, n_vocab)
        check_vocab(vocab)
        return vocab
    normalizer = tj.get("normalizer")
    if normalizer is not None and (not isinstance(normalizer, dict) or normalizer.get("type") != "NFC"):
        raise UnsupportedModelError(
            f"byte-level BPE tokenizer with a {normalizer.get('type') if isinstance(normalizer, dict) else normalizer} normalizer is not supported by llama.cpp"
        )
    pre = pre_override or _byte_level_pre(tj.get("pre_tokenizer"))
    if pre is None:
        raise UnsupportedModelError(
            "the tokenizer's pre-tokenizer is not one llama.cpp is known to reproduce; if you know the "
            f"matching llama.cpp name, pass --pre-tokenizer NAME (sgedge recognises: {', '.join(KNOWN_PRE)})"
        )
    vocab = _gpt2_vocab(tj, n_vocab, pre)
    check_vocab(vocab)
    return vocab


def add_vocab(writer: Any, model_dir: Path, vocab: Vocab) -> None:
    """Write `vocab` plus special tokens and chat template to a gguf.GGUFWriter."""
    import gguf

    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    if vocab.model == "llama":
        writer.add_add_space_prefix(vocab.add_space_prefix)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(vocab.tokens))
    special.add_to_gguf(writer, quiet=True)
