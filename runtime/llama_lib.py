"""Thin layer over llama-cpp-python's low-level bindings: import, logging, stderr.

llama.cpp logs through a callback; sgedge keeps the recent lines in memory (so that a
failed load can say why) and prints them only when asked (`-v`). A few messages are
written straight to stderr by native code; `native_stderr_silenced` hides those.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from sgedge.errors import BackendError

_recent: collections.deque[str] = collections.deque(maxlen=64)
_state = {"verbose": False, "installed": False}
_callback = None  # keep a reference: ctypes callbacks must outlive their registration


def lib() -> ModuleType:
    """The `llama_cpp` module, initialised once with sgedge's log handling."""
    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendError(
            "the GGUF backend needs llama-cpp-python: pip install 'sgedge[runtime]'"
        ) from e
    if not _state["installed"]:
        global _callback

        @llama_cpp.llama_log_callback
        def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            line = text.decode("utf-8", "replace")
            _recent.append(line)
            if _state["verbose"]:
                sys.stderr.write(line)

        _callback = _log
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _state["installed"] = True
        _close_devnull_at_exit()
    return llama_cpp


def _close_devnull_at_exit() -> None:
    """llama-cpp-python opens two /dev/null files at import and never closes them; at exit
    they are collected with 'ResourceWarning: unclosed file' (shown under pytest and -W)."""
    import atexit

    utils = sys.modules.get("llama_cpp._utils")
    files = [getattr(utils, n, None) for n in ("outnull_file", "errnull_file")] if utils else []
    atexit.register(lambda: [f.close() for f in files if f is not None and not f.closed])


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = verbose


def recent_errors() -> str:
    """The last few llama.cpp log lines that look like errors, joined (for messages)."""
    lines = [ln.strip() for ln in _recent if ln.strip()]
    errs = [ln for ln in lines if any(w in ln.lower() for w in ("error", "failed", "invalid", "mismatch"))]
    return "; ".join((errs or lines)[-3:])


@contextlib.contextmanager
def native_stderr_silenced(active: bool = True) -> Iterator[None]:
    """Redirect file descriptor 2 to /dev/null (native code writes there directly)."""
    if not active or _state["verbose"]:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def physical_cores() -> int:
    """Physical core count (llama.cpp decodes fastest with one thread per core)."""
    try:
        cores = set()
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
        if core is not None:
            cores.add((phys, core))
        if cores:
            return min(len(cores), os.cpu_count() or len(cores))
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2) if (os.cpu_count() or 1) > 1 else 1
