"""The engine interface `Runtime` depends on.

Implemented by the GGUF engine (`gguf_backend.GgufBackend`, llama.cpp), the ONNX
engine (`onnx_backend.OnnxBackend`, ONNX Runtime GenAI) and the pool of fused copies
(`pool.PoolBackend`, which routes each generation to one of the other two). An engine
owns its native handles; `Runtime` serialises the calls into it (one generation at a
time) and frees it with `close()`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sgedge.runtime.types import Sampling, Timings


class ResidentAdapter(Protocol):
    """An adapter an engine holds: at least the file it was loaded from."""

    path: Path


class Backend(Protocol):
    name: str  # "gguf" (llama.cpp) or "onnx" (ONNX Runtime GenAI): as in --backend, the manifest and JSON
    path: Path  # the base model (a .gguf file or an ONNX folder)
    device: str
    n_ctx: int  # tokens of context: prompt and reply together

    @property
    def adapters(self) -> Mapping[str, ResidentAdapter]: ...

    def load_adapter(self, path: Path, name: str | None = None, *, allow_unbound: bool = False) -> str:
        """Check `path` belongs to the base (fail closed), keep it resident; its name."""
        ...

    def unload_adapter(self, name: str) -> None: ...

    def set_active(self, active: Sequence[tuple[str, float]]) -> None:
        """The adapters (name, scale) the next generation runs with; empty: the bare base."""
        ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]: ...

    def chat_template(self) -> str | None: ...

    def bos_text(self) -> str: ...

    def eos_text(self) -> str: ...

    def generate(self, prompt: Sequence[int], sampling: Sampling,
                 timings: Timings) -> Generator[tuple[int, str], None, None]:
        """(token, text piece) until the end of generation or `sampling.max_tokens`;
        token -1 carries text held back until the end."""
        ...

    def logits(self, tokens: Sequence[int]) -> Any:
        """Teacher-forced logits, one row per token (numpy)."""
        ...

    def close(self) -> None: ...
