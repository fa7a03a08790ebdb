"""Binding between adapters and the base they were exported against.

The base fingerprint is a sha256 over the base's weights exactly as stored in its
safetensors files (tensor names, dtypes, shapes and bytes), so it does not depend on
the export format or dtype: a q8_0 GGUF and an ONNX export of one base share it.
Exported files carry it in their metadata under the keys below.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from sgedge.errors import InputError

FINGERPRINT_PREFIX = "sha256:"

# GGUF metadata keys written by sgedge (base and adapter files).
KEY_PRODUCER = "sgedge.producer"
KEY_BASE_FINGERPRINT = "sgedge.base.fingerprint"
KEY_BASE_ARCH = "sgedge.base.architecture"
KEY_FAMILY = "sgedge.base.family"
KEY_ADAPTER_TARGETS = "sgedge.adapter.targets"
# JSON list of the token ids transformers' generate() stops at (generation_config.json's
# eos_token_id); llama.cpp recognises most of them as end-of-generation by their text only.
KEY_STOP_TOKENS = "sgedge.stop_token_ids"
KEY_ADAPTER_RANK = "sgedge.adapter.rank"
# sha256 of the GGUF file an adapter's base was imported from (`sgedge import`): the
# adapter then also runs on that file as it is, which carries no sgedge fingerprint.
KEY_BASE_SOURCE_SHA256 = "sgedge.base.source_sha256"

# Said when an adapter fits a base's shapes but carries another base's fingerprint: the
# base may be a fine-tune of the adapter's own.
TRANSFER_HINT = (". If this base is a fine-tune of the adapter's own, move the adapter to it with `sgedge transfer` "
                 "and export it against this base")

_CHUNK = 16 << 20


def _safetensors_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"{model_dir} has no *.safetensors weights; save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    return files


def _read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InputError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 << 20:
            raise InputError(f"{path} is not a safetensors file (header size {n})")
        header = json.loads(f.read(n))
    return header, 8 + n


def tensor_line(name: str, dtype: str, shape: list[int], nbytes: int) -> bytes:
    """What the fingerprint hashes before a tensor's bytes (safetensors dtype names)."""
    return f"{name}|{dtype}|{list(shape)}|{nbytes}\n".encode()


def base_fingerprint(model_dir: str | Path) -> str:
    """Fingerprint of a Hugging Face model directory's weights (independent of sharding)."""
    model_dir = Path(model_dir)
    entries: list[tuple[str, Path, int, dict]] = []
    for path in _safetensors_files(model_dir):
        header, data_start = _read_header(path)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            entries.append((name, path, data_start, info))
    entries.sort(key=lambda e: e[0])
    h = hashlib.sha256()
    for name, path, data_start, info in entries:
        begin, end = info["data_offsets"]
        h.update(tensor_line(name, info["dtype"], info["shape"], end - begin))
        with open(path, "rb") as f:
            f.seek(data_start + begin)
            left = end - begin
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise InputError(f"{path} is truncated (tensor {name})")
                h.update(chunk)
                left -= len(chunk)
    return FINGERPRINT_PREFIX + h.hexdigest()
