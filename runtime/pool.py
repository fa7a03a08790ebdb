"""Pool mode: switch policy per request at the speed of a fused base.

llama.cpp (like vLLM and onnxruntime-genai) runs an active LoRA adapter as extra matmuls
on every projection of every token: 0.70-0.79x of the bare base's decode speed on a CPU.
A fused base (fuse.py) costs nothing per token but holds one policy. The pool keeps one
fused base per policy in use, each loaded with its own context, beside the dynamic engine
(the base with every adapter resident): a request whose adapter set has a member runs on
it; any other set (a policy outside the memory budget, a per-call `adapters=` mix) runs on
the dynamic engine, as in dynamic mode. Replies are the fused mode's: the same tokens as
the dynamic path on float bases, within quantization rounding on quantized ones.

Members come from `ensure_fused`: built once, cached in the user's private cache under a
key of the base's and the adapters' sha256 and scales, and checked against their recorded
digests whenever they are opened. Adapters reach the pool only after the dynamic engine has
checked their binding to the base, so a member holds nothing the bundle did not sign.

Memory: a member costs about its model file (the base's size: merged tensors are quantized
back to the base's type) plus its context's key/value cache. `pool_memory` caps the sum;
members are admitted in order (the start-up policy first) while they fit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgedge.errors import InputError

Key = tuple[tuple[str, float], ...]  # the engine's adapter names with their scales


@dataclass(frozen=True)
class PoolMember:
    """One policy's place in the pool, as `Runtime.pool` reports it."""

    label: str  # the policy key(s) it serves, e.g. "US, default"
    adapters: Key  # public adapter names and scales
    fused: bool  # False: outside the budget, runs on the dynamic engine
    estimate_bytes: int  # model file + key/value cache
    path: Path | None = None  # the fused model (a file, or an ONNX folder)
    build_s: float = 0.0  # 0 when taken from the cache
    load_s: float = 0.0
    why: str = ""  # for a member that is not fused


def parse_size(text: str | int | None) -> int | None:
    """'2G', '512M', '300000000' -> bytes; None stays None (no cap)."""
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text < 0:
            raise InputError(f"pool_memory must be >= 0 bytes (got {text})")
        return text
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    number = s[:-1] if s[-1:] in "KMGT" else s
    try:
        value = float(number)
    except ValueError:
        raise InputError(f"cannot read the memory size {text!r}: give bytes or a number with K, M or G "
                         "(e.g. 2G, 512M)") from None
    if value < 0 or value != value:
        raise InputError(f"a memory size is >= 0 (got {text!r})")
    return int(value * mult)


def model_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def kv_bytes(backend: Any, exact: bool = False) -> int:
    """The key/value cache a llama.cpp context of `backend.n_ctx` tokens allocates when it
    is made (f16; f32 when exact). ONNX Runtime GenAI allocates its cache per generation,
    not per loaded model: 0 there."""
    n_ctx = int(getattr(backend, "n_ctx", 0) or 0)
    info = getattr(backend, "info", None)
    if info is None:
        return 0
    width = 0  # the K and V projections' output rows, summed over layers
    for name, shape in info.shapes.items():
        if name.startswith("blk.") and name.endswith((".attn_k.weight", ".attn_v.weight")):
            width += int(shape[0])
        elif name.startswith("blk.") and name.endswith(".attn_qkv.weight"):
            n_embd = int(info.get(f"{info.arch}.embedding_length", 0) or 0)
            width += max(0, int(shape[0]) - n_embd)
    return n_ctx * width * (4 if exact else 2)


class PoolBackend:
    """The dynamic engine plus fused members; routes each generation by its adapter set.
    Implements the backend interface Runtime uses (the dynamic engine answers everything
    that is not a generation: tokens, template, adapters)."""

    def __init__(self, dynamic: Any) -> None:
        self.dynamic = dynamic
        self.name = dynamic.name
        self._members: dict[Key, Any] = {}
        self._route: Any = dynamic
        self._entries: list[tuple[Key, PoolMember]] = []  # in admission order, fused or not
        self._lock = threading.Lock()
        # Admits new candidates [(label, public set)] with a name mapping and a check, as
        # start-up did (set by Runtime; reload() calls it for a new bundle's policies).
        self.refill: Callable[..., None] | None = None

    @property
    def members(self) -> list[PoolMember]:
        return [m for _, m in self._entries]

    # -- the dynamic engine's face -----------------------------------------------------
    def __getattr__(self, name: str) -> Any:  # path, device, meta, n_ctx, tokenize, chat_template...
        if name == "dynamic":  # not yet set (during unpickling or a failed __init__)
            raise AttributeError(name)
        return getattr(self.dynamic, name)

    @property
    def adapters(self) -> dict[str, Any]:
        return self.dynamic.adapters

    def load_adapter(self, path: Path, name: str | None = None, **kw: Any) -> str:
        return self.dynamic.load_adapter(path, name, **kw)

    def unload_adapter(self, name: str) -> None:
        """Free an adapter, and every member fused from it."""
        with self._lock:
            stale = [k for k in self._members if any(n == name for n, _ in k)]
            for k in stale:
                be = self._members.pop(k)
                if self._route is be:
                    self._route = self.dynamic
                be.close()
            self._entries = [(k, m) for k, m in self._entries if not any(n == name for n, _ in k)]
        self.dynamic.unload_adapter(name)

    # -- routing ------------------------------------------------------------------------
    def member_for(self, active: Sequence[tuple[str, float]]) -> Any:
        """The engine that runs `active`: its fused member, else the dynamic engine."""
        return self._members.get(tuple((n, float(s)) for n, s in active), self.dynamic)

    def set_active(self, active: Sequence[tuple[str, float]]) -> None:
        be = self.member_for(active)
        if be is self.dynamic:
            self.dynamic.set_active(active)
        self._route = be

    def generate(self, prompt: Sequence[int], sampling: Any, timings: Any) -> Generator[tuple[int, str], None, None]:
        return self._route.generate(prompt, sampling, timings)

    def logits(self, tokens: Sequence[int]) -> Any:
        return self._route.logits(tokens)

    # -- members ------------------------------------------------------------------------
    def _outside(self, label: str, public: Key, key: Key, need: int, left: int, what: str) -> None:
        self._entries.append((key, PoolMember(label, public, False, need, why=(
            f"outside the memory budget ({what} {need / 2**20:.0f} MiB, {max(0, left) / 2**20:.0f} MiB left): "
            "runs on the dynamic engine"))))

    def add(self, label: str, public: Key, key: Key, *, fuse: Callable[[], tuple[Path, float]],
            load: Callable[[Path], Any], cost: Callable[[Path | None], int], budget: int | None, used: int) -> int:
        """Admit the member for `key` if it fits; returns the bytes used. `cost(path)` is a
        member's memory for its model at `path`: checked on the unfused base (None) first (a
        lower bound: nothing is built for a policy that cannot fit), then on the fused
        file (merged tensors of a Q4/Q5 base are kept as q8_0, so it can be larger)."""
        if key in self._members:
            return used
        self._entries = [(k, m) for k, m in self._entries if k != key]  # tried before: try again
        left = (budget - used) if budget is not None else None
        need = cost(None)
        if left is not None and need > left:
            self._outside(label, public, key, need, left, "needs at least")
            return used
        path, build_s = fuse()
        need = cost(path)
        if left is not None and need > left:
            self._outside(label, public, key, need, left, "its fused model needs")
            return used
        t0 = time.perf_counter()
        be = load(path)
        with self._lock:
            self._members[key] = be
            self._entries.append((key, PoolMember(label, public, True, need, path, build_s,
                                                  time.perf_counter() - t0)))
        return used + need

    def close_members(self) -> None:
        """Free the fused members (a failed start-up; the dynamic engine's owner frees it)."""
        with self._lock:
            members, self._members, self._route = list(self._members.values()), {}, self.dynamic
        for be in members:
            be.close()

    def close(self) -> None:
        try:
            for be in self._members.values():
                be.close()
        finally:
            self._members.clear()
            self.dynamic.close()


def fill(pool: PoolBackend, candidates: Sequence[tuple[str, Key]], *, fuse_base: Path, kind: str,
         names: Callable[[Key], Key], budget: int | None, make_backend: Callable[[Path], Any],
         cache_dir: Path, exact: bool = False, check: Callable[[], None] | None = None) -> None:
    """Admit `candidates` [(label, public adapter set)] in order while they fit `budget`.
    Sets that name the same adapters share a member (their labels are joined); the bare
    base needs none on GGUF (no adapter is no LoRA cost there). `names` maps public adapter
    names to the engine's; `check` runs after each build (a bundle's pins: the files
    fused are still the ones verified)."""
    from sgedge.runtime.fuse import ensure_fused

    labels: dict[Key, list[str]] = {}
    for label, public in candidates:
        if public or kind == "onnx":  # ONNX: fusing nothing removes the empty LoRA slots
            labels.setdefault(tuple((n, float(s)) for n, s in public), []).append(label)
    used = sum(m.estimate_bytes for m in pool.members if m.fused)
    kv = kv_bytes(pool.dynamic, exact)
    for public, labs in labels.items():
        key = names(public)
        files = [(pool.dynamic.adapters[n].path, s) for n, s in key]

        def fuse(files: list[tuple[Path, float]] = files) -> tuple[Path, float]:
            fused = ensure_fused(fuse_base, files, cache_dir)
            return fused.path, fused.seconds

        def load(path: Path) -> Any:
            be = make_backend(path)
            if check is not None:
                try:
                    check()
                except BaseException:
                    be.close()
                    raise
            return be

        used = pool.add(", ".join(labs), public, key, fuse=fuse, load=load, budget=budget, used=used,
                        cost=lambda path: model_bytes(path or fuse_base) + kv)
