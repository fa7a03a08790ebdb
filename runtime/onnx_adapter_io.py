"""ONNX Runtime adapter files (`onnxruntime.AdapterFormat`): read, compose, write.

ONNX Runtime can neither scale an adapter nor activate two at once, so sgedge composes
them into one: each scale folded into B, several adapters concatenated along the rank
axis (A's columns, B's rows), so that x A B = sum_i s_i x A_i B_i.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sgedge._fs import atomic_path
from sgedge.errors import AdapterMismatchError

ADAPTER_VERSION = 1


def write_adapter(path: Path, params: dict[str, np.ndarray], model_version: int) -> None:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(ADAPTER_VERSION)
    fmt.set_model_version(model_version)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in params.items()})
    with atomic_path(path) as tmp:
        fmt.export_adapter(str(tmp))


def fingerprint_tag(fingerprint: str) -> int:
    """The base binding an .onnx_adapter stores in its int32 model_version field."""
    return int(fingerprint.split(":", 1)[-1][:7], 16)


def _read(path: Path):
    import onnxruntime as ort

    try:
        return ort.AdapterFormat.read_adapter(str(path))
    except Exception as e:
        raise AdapterMismatchError(f"{path} is not an ONNX Runtime adapter file ({e})") from e


def read_adapter_shapes(path: Path) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(model_version, parameter shapes), without copying the weights."""
    fmt = _read(path)
    return int(fmt.get_model_version()), {k: tuple(v.shape()) for k, v in fmt.get_parameters().items()}


def compose(adapters: list[tuple[Path, float]]) -> tuple[int, dict[str, np.ndarray]]:
    """(model_version, parameters) of one adapter equal to the scaled sum of `adapters`.
    The files' buffers are viewed, not copied, until the concatenation makes the result."""
    parts: dict[str, list[np.ndarray]] = {}
    version = 0
    keep = []  # the readers own the memory the views point into
    for path, scale in adapters:
        fmt = _read(path)
        keep.append(fmt)
        version = int(fmt.get_model_version())
        for pname, value in fmt.get_parameters().items():
            arr = value.numpy()
            if pname.endswith("lora_B.MatMul.weight") and scale != 1.0:
                arr = arr * np.asarray(scale, dtype=arr.dtype)
            parts.setdefault(pname, []).append(arr)
    composed = {
        pname: np.concatenate(arrs, axis=1 if pname.endswith("lora_A.MatMul.weight") else 0)
        for pname, arrs in parts.items()
    }
    del parts, keep
    return version, composed
