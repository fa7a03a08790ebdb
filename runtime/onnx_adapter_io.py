"""Write ONNX Runtime adapter files (`onnxruntime.AdapterFormat`), atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sgedge._fs import atomic_path

ADAPTER_VERSION = 1


def write_adapter(path: Path, params: dict[str, np.ndarray], model_version: int) -> None:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(ADAPTER_VERSION)
    fmt.set_model_version(model_version)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in params.items()})
    with atomic_path(path) as tmp:
        fmt.export_adapter(str(tmp))
