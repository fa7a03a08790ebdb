"""How the engine runs, as one typed value: `Runtime.open_bundle(..., options=...)`,
`Runtime.open_model(..., options=...)` (or the same names as keywords of `Runtime.open`)."""

from __future__ import annotations

from dataclasses import dataclass

from sgedge.errors import InputError

BACKENDS = ("gguf", "onnx")
MODES = ("dynamic", "fused", "pool")


@dataclass(frozen=True)
class EngineOptions:
    backend: str | None = None  # "gguf" | "onnx"; None: from the model (a bundle: the first format that loads)
    device: str = "auto"  # gguf: cpu | gpu | auto; onnx: cpu | cuda | dml | gpu | auto
    gpu_layers: int | None = None  # layers to offload (None: all when a GPU is used; -1 all)
    threads: int | None = None  # None / 0: one per core other processes leave free (runtime/threads.py)
    n_ctx: int = 4096  # tokens of context (0: the model's trained context)
    exact: bool = False  # f32 KV cache, no flash attention: numerics over speed
    prompt_cache: bool = False  # keep the last prompt's keys/values for a prompt that starts with them
    mode: str = "dynamic"  # dynamic | fused | pool (docs/modes.md)
    pool_memory: int | None = None  # bytes the pool's fused copies may take (None: no cap)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.n_ctx < 0:
            raise InputError(f"n_ctx (--ctx) must be >= 0, 0 meaning the model's trained context (got {self.n_ctx})")
        if self.threads is not None and self.threads < 0:
            raise InputError(f"threads must be >= 1, or 0 / None for the automatic count (got {self.threads})")
        if self.gpu_layers is not None and self.gpu_layers < -1:
            raise InputError(f"gpu_layers must be -1 (all), 0 or a layer count (got {self.gpu_layers})")
        if self.pool_memory is not None and self.mode != "pool":
            raise InputError("pool_memory (--pool-memory) applies to mode='pool' (--mode pool)")
        if self.pool_memory is not None and self.pool_memory < 0:
            raise InputError(f"pool_memory must be >= 0 bytes (got {self.pool_memory})")
