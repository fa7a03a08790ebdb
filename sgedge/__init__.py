"""sgedge: swappable LoRA safety adapters for local LLMs.

The top-level package is the contract (names, formats, errors, CLI) and imports only
numpy and the standard library. Heavy code lives in ``sgedge.exporters`` (torch) and
``sgedge.runtime`` (llama.cpp / ONNX Runtime, never torch), imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sgedge.errors import SgedgeError

__version__ = "0.1.0"
__all__ = ["Runtime", "SgedgeError", "__version__"]

if TYPE_CHECKING:
    from sgedge.runtime.api import Runtime


def __getattr__(name: str) -> Any:
    # Lazy so that `import sgedge` stays light (no llama.cpp load until needed).
    if name == "Runtime":
        from sgedge.runtime.api import Runtime

        return Runtime
    raise AttributeError(f"module 'sgedge' has no attribute {name!r}")
