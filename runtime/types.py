"""Plain result types shared by the backends and the public API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_REPEAT_PENALTY = 10.0


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = 0
    ignore_eos: bool = False  # benchmarks: always produce max_tokens
    # Structured output: ("json_object", "") or ("json_schema", the schema as JSON text);
    # the engine constrains every token to it (llama.cpp grammar, ONNX Runtime guidance).
    response_format: tuple[str, str] | None = None
    # Divides the positive logits (multiplies the negative) of every token already in the
    # prompt or the reply, as Hugging Face's repetition_penalty: 1 = off. Both engines apply
    # it over the whole sequence (llama.cpp's penalties sampler, ONNX Runtime GenAI's option).
    repeat_penalty: float = 1.0

    def __post_init__(self) -> None:
        import math

        from sgedge.errors import InputError

        def whole(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def number(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        if not whole(self.max_tokens) or not 1 <= self.max_tokens <= 1 << 31:
            raise InputError(f"max_tokens must be a whole number of at least 1 (got {self.max_tokens!r})")
        if not number(self.temperature) or self.temperature < 0:
            raise InputError(f"temperature must be a finite number >= 0 (got {self.temperature!r})")
        if not number(self.top_p) or not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1] (got {self.top_p!r})")
        if not whole(self.top_k) or not 0 <= self.top_k <= 1 << 31:
            raise InputError(f"top_k must be a whole number >= 0 (got {self.top_k!r})")
        if not number(self.repeat_penalty) or not 0 < self.repeat_penalty <= MAX_REPEAT_PENALTY:
            raise InputError(f"repeat_penalty must be in (0, {MAX_REPEAT_PENALTY:g}] (1 = off; got {self.repeat_penalty!r})")
        if not whole(self.seed):
            raise InputError(f"seed must be a whole number (got {self.seed!r})")


@dataclass(frozen=True)
class ActiveAdapter:
    name: str
    scale: float


@dataclass
class Timings:
    load_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose keys/values were kept from the previous generation

    def as_dict(self) -> dict[str, float]:
        return {
            "load_s": round(self.load_s, 6),
            "prefill_s": round(self.prefill_s, 6),
            "decode_s": round(self.decode_s, 6),
            "prefill_tok_s": round((self.prompt_tokens - self.cached_tokens) / self.prefill_s, 3)
            if self.prefill_s else 0.0,
            "cached_tokens": self.cached_tokens,
            "decode_tok_s": round(self.generated_tokens / self.decode_s, 3) if self.decode_s else 0.0,
        }


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    prompt_tokens: list[int]
    adapters: list[ActiveAdapter]
    backend: str
    finish_reason: str
    timings: Timings = field(default_factory=Timings)
    mode: str = "dynamic"  # "fused": the adapters are merged into the loaded weights; "pool": see runtime/pool.py
    bundle: str | None = None  # the bundle version (manifest sha256, 12 digits) that produced it

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "adapters": [asdict(a) for a in self.adapters],
            "backend": self.backend,
            "finish_reason": self.finish_reason,
            "mode": self.mode,
            "timings": self.timings.as_dict(),
            **({"bundle": self.bundle} if self.bundle is not None else {}),
        }


def shared_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens `a` and `b` share, at most `limit` (the prompt caches)."""
    n, limit = 0, min(limit, len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n
