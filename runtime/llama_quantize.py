"""Quantization through llama.cpp itself (`llama_model_quantize`), not a re-implementation."""

from __future__ import annotations

import ctypes
from pathlib import Path

from sgedge.errors import BackendError, InputError


def quantize_gguf(src: Path, dst: Path, dtype: str | int, *, threads: int | None = None) -> None:
    """Quantize `src` to `dst` as `dtype` ("q8_0", "q4_k_m", or a llama.cpp file type id,
    e.g. a base's general.file_type); tensors already of their target type are copied."""
    from sgedge.runtime.llama_lib import lib, native_stderr_silenced, physical_cores, recent_errors

    llama = lib()
    ftypes = {"q8_0": llama.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama.LLAMA_FTYPE_MOSTLY_Q4_K_M}
    if isinstance(dtype, str) and dtype not in ftypes:
        raise InputError(f"llama.cpp quantization type {dtype!r} is not offered; choose {', '.join(ftypes)}")
    params = llama.llama_model_quantize_default_params()
    params.ftype = ftypes[dtype] if isinstance(dtype, str) else int(dtype)
    params.nthread = threads or physical_cores()
    with native_stderr_silenced():
        rc = llama.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise BackendError(f"llama.cpp could not quantize {src} to {dtype} ({recent_errors() or f'code {rc}'})")
