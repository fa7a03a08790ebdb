"""sgedge: swappable LoRA safety adapters for local LLMs.

The top-level package is the contract (names, formats, errors, CLI) and imports only
numpy and the standard library. Heavy code lives in ``sgedge.exporters`` (torch) and
``sgedge.runtime`` (llama.cpp / ONNX Runtime, never torch), imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sgedge.errors import (
    AdapterError,
    AdapterMismatchError,
    BackendError,
    InputError,
    SgedgeError,
    UnsupportedModelError,
)

__version__ = "0.1.0"
# What a caller of the runtime receives: the runtime, its results, its errors.
_LAZY = {"Runtime": "sgedge.runtime.api", "EngineOptions": "sgedge.runtime.options",
         "GenerationResult": "sgedge.runtime.types",
         "ActiveAdapter": "sgedge.runtime.types", "Timings": "sgedge.runtime.types",
         "PoolMember": "sgedge.runtime.pool", "ReloadResult": "sgedge.runtime.reload"}
__all__ = ["ActiveAdapter", "EngineOptions", "GenerationResult", "PoolMember", "ReloadResult", "Runtime", "Timings",
           "AdapterError", "AdapterMismatchError", "BackendError", "InputError", "SgedgeError",
           "UnsupportedModelError", "__version__"]

if TYPE_CHECKING:
    from sgedge.runtime.api import Runtime
    from sgedge.runtime.options import EngineOptions
    from sgedge.runtime.pool import PoolMember
    from sgedge.runtime.reload import ReloadResult
    from sgedge.runtime.types import ActiveAdapter, GenerationResult, Timings


def __getattr__(name: str) -> Any:
    # Lazy so that `import sgedge` stays light (no llama.cpp load until needed).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sgedge' has no attribute {name!r}")
