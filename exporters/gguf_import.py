"""GGUF file -> Hugging Face model folder (`sgedge import`).

Most people who run local models hold GGUF files, not safetensors folders. An import
gives such a file the form every other sgedge tool takes: config.json,
model.safetensors, tokenizer files, generation_config.json, and sgedge_import.json,
which names the GGUF it came from (sha256) and the fingerprint of the weights written.

Who does what, and why:
- weights: gguf-py reads and dequantizes each tensor (every type it knows), one at a
  time; sgedge's own name table (the exporter's, read backwards) and the inverse of its
  q/k rope permutation give the Hugging Face tensors. transformers' GGUF loader would
  dequantize too, but holds the whole model, marks it "quantized" (no save_pretrained)
  and takes a minute where this takes seconds.
- config: written here from the GGUF metadata per family: transformers' GGUF config
  table for these architectures drops rope scaling and partial rotary dims, which
  decide the numbers.
- tokenizer: transformers' GGUF tokenizer builder (maintained upstream, covers
  byte-level and SentencePiece vocabularies and special tokens); sgedge only restores
  the pre-tokenizer of the names llama.cpp knows and that builder does not (`smollm`)
  and refuses names neither knows rather than tokenize differently.

The import of a file is deterministic: the same file gives the same fingerprint.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import sgedge
from sgedge import binding
from sgedge._fs import make_temp_dir, normalize_modes
from sgedge.errors import InputError, UnsupportedModelError
from sgedge.exporters.gguf_import_meta import (
    HF_CLASS,
    hf_config,
    read_family,
    write_generation_config,
    write_tokenizer,
)
from sgedge.families import Family

IMPORT_DTYPES = ("float32", "bfloat16")
IMPORT_RECORD = "sgedge_import.json"
# Tensors that are settings, not weights: they go back into config.json.
ROPE_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
_SHARD_BYTES = 2 << 30


@dataclass(frozen=True)
class ImportResult:
    path: Path
    family: str
    dtype: str
    fingerprint: str
    source_sha256: str
    n_tensors: int
    size_bytes: int


def _reader(src: Path) -> Any:
    import gguf

    from sgedge.formats.gguf_meta import read_gguf_info

    info = read_gguf_info(src)  # a clear error for what is not a GGUF file at all
    if info.is_adapter:
        raise InputError(f"{src} is a LoRA adapter, not a base model; import the base it belongs to")
    try:
        return gguf.GGUFReader(str(src))
    except (ValueError, OSError, IndexError, KeyError, TypeError, OverflowError, struct.error) as e:
        raise InputError(f"{src} is not a readable GGUF file ({e})") from e


def _hf_names(config: dict[str, Any]) -> list[str]:
    """The state-dict names transformers gives a model of this config (built on the meta
    device: no memory, no weights)."""
    import torch
    import transformers

    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return list(model.state_dict())


def _plan(reader: Any, fam: Family, config: dict[str, Any]) -> dict[str, str]:
    """GGUF tensor name -> HF tensor name; raises listing every tensor without a place."""
    import gguf

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == fam.gguf_arch)
    tmap = gguf.get_tensor_name_map(arch, int(config["num_hidden_layers"]))
    wanted = {}
    for hf in _hf_names(config):
        if config["tie_word_embeddings"] and hf == "lm_head.weight":
            continue
        g = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if g is not None:
            wanted[g] = hf
    have = [t.name for t in reader.tensors if t.name not in ROPE_TENSORS]
    extra = [n for n in have if n not in wanted]
    missing = [wanted[g] for g in wanted if g not in set(have)]
    problems = ([f"{len(extra)} tensor(s) have no place in {HF_CLASS[fam.name]}: {', '.join(extra[:6])}"] if extra else [])
    problems += [f"{len(missing)} weight(s) are missing: {', '.join(missing[:6])}"] if missing else []
    if problems:
        raise UnsupportedModelError("the GGUF file does not match its architecture: " + "; ".join(problems))
    return {g: wanted[g] for g in have}


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of hf_model.permute_rows: llama.cpp's interleaved rope rows -> HF's halves."""
    if w.shape[0] % (2 * n_head):
        raise UnsupportedModelError(f"cannot un-permute {w.shape[0]} rows from {n_head} rope heads")
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(reader: Any, fam: Family, config: dict[str, Any], plan: dict[str, str],
             by_hf_name: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, float32 array) per tensor, dequantized and un-permuted, one at a time, in
    file order (or sorted by HF name, the fingerprint's order)."""
    import gguf

    tensors = [t for t in reader.tensors if t.name in plan]
    if by_hf_name:
        tensors.sort(key=lambda t: plan[t.name])
    for t in tensors:
        hf = plan[t.name]
        try:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(int(d) for d in reversed(t.shape))
            data = np.asarray(data, dtype=np.float32).reshape(shape)
        except NotImplementedError as e:
            raise UnsupportedModelError(f"{t.name}: gguf-py cannot dequantize type {t.tensor_type.name} ({e})") from e
        except (ValueError, TypeError, IndexError) as e:
            raise InputError(f"{t.name}: its data does not match its type and shape ({e}); the file is corrupt") from e
        if not np.isfinite(data).all():
            raise InputError(f"{t.name} holds NaN or infinite values; the file is corrupt")
        leaf = hf.rsplit(".", 2)[-2] if hf.count(".") >= 2 else ""
        heads_key = fam.permute_heads.get(leaf)
        if heads_key is not None and hf.endswith(".weight"):
            data = unpermute_rows(data, int(config[heads_key]))
        yield hf, np.array(data, dtype=np.float32, order="C", copy=True) if not data.flags.writeable \
            else np.ascontiguousarray(data)


def _write_weights(tensors: Iterator[tuple[str, np.ndarray]], out: Path, dtype: str, total: int,
                   progress: Callable[[int, int], None] | None) -> int:
    """Shards of at most 2 GB (one shard in memory at a time), with an index when there are several."""
    import torch
    from safetensors.torch import save_file

    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    shards: list[dict[str, Any]] = [{}]
    size = n = 0
    names: list[list[str]] = [[]]

    def flush(final: bool) -> None:
        idx = len(names)
        path = out / f"model-{idx:05d}.safetensors.tmp"
        save_file(shards[-1], str(path), metadata={"format": "pt"})
        if not final:
            shards.append({})
            names.append([])

    for name, arr in tensors:
        t = torch.from_numpy(arr).to(tdtype)
        if size and size + t.nbytes > _SHARD_BYTES:
            flush(False)
            size = 0
        shards[-1][name] = t
        names[-1].append(name)
        size += t.nbytes
        n += 1
        if progress:
            progress(n, total)
    flush(True)
    count = len(names)
    weight_map = {}
    for i, group in enumerate(names, 1):
        final = "model.safetensors" if count == 1 else f"model-{i:05d}-of-{count:05d}.safetensors"
        (out / f"model-{i:05d}.safetensors.tmp").rename(out / final)
        weight_map.update({name: final for name in group})
    if count > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1))
    return n


def import_gguf(src: str | Path, out: str | Path, *, dtype: str = "float32",
                progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Write the Hugging Face folder of GGUF file `src` at `out` (a new folder; written
    beside it and renamed into place, so a failure leaves nothing)."""
    from sgedge.bundle_verify import sha256_file

    if dtype not in IMPORT_DTYPES:
        raise InputError(f"unknown import dtype {dtype!r}; choose one of {', '.join(IMPORT_DTYPES)}")
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists; give a new folder (nothing was written)")
    reader, fam, config, plan = _prepare(src)
    config["torch_dtype"] = dtype
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    try:
        write_tokenizer(src, tmp, reader)
        n = _write_weights(_tensors(reader, fam, config, plan), tmp, dtype, len(plan), progress)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_generation_config(reader, tmp)
        fingerprint = binding.base_fingerprint(tmp)
        source_sha = sha256_file(src)
        record = {"schema_version": 1, "producer": f"sgedge {sgedge.__version__}",
                  "source": {"file": src.name, "sha256": source_sha, "size": src.stat().st_size},
                  "family": fam.name, "dtype": dtype, "fingerprint": fingerprint}
        (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        normalize_modes(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.iterdir())
    return ImportResult(out, fam.name, dtype, fingerprint, source_sha, n, size)


def _prepare(src: Path) -> tuple[Any, Family, dict[str, Any], dict[str, str]]:
    reader = _reader(src)
    fam = read_family(reader, src)
    try:
        config = hf_config(reader, fam, {t.name for t in reader.tensors})
        return reader, fam, config, _plan(reader, fam, config)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        # Metadata of the wrong type or size (a hostile or broken file): one clear line.
        raise UnsupportedModelError(f"{src}: its metadata does not describe a model sgedge can import ({e})") from e


_PRINTS: dict[tuple[str, int, int], dict[str, str]] = {}


def import_fingerprints(src: str | Path, *, memo: bool = True) -> dict[str, str]:
    """{dtype: fingerprint} of what `import_gguf` would write, computed without writing:
    how a GGUF file that carries no sgedge metadata gets its base fingerprint. Kept per
    file identity for the process (a bundle exports several adapters against one base)
    unless memo=False."""
    st = Path(src).stat()
    key = (str(Path(src).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _PRINTS or not memo:
        _PRINTS[key] = _import_fingerprints(Path(src))
    return dict(_PRINTS[key])


def _import_fingerprints(src: Path) -> dict[str, str]:
    import hashlib

    import torch

    reader, fam, config, plan = _prepare(src)
    hashes = {d: hashlib.sha256() for d in IMPORT_DTYPES}
    for name, arr in _tensors(reader, fam, config, plan, by_hf_name=True):
        for dtype, h in hashes.items():
            if dtype == "float32":
                raw, st = arr.astype("<f4").tobytes(), "F32"
            else:
                raw, st = torch.from_numpy(arr).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes(), "BF16"
            h.update(binding.tensor_line(name, st, list(arr.shape), len(raw)))
            h.update(raw)
    return {d: binding.FINGERPRINT_PREFIX + h.hexdigest() for d, h in hashes.items()}


def read_import_record(model_dir: str | Path) -> dict[str, Any] | None:
    """sgedge_import.json of an imported folder, if its weights are still the imported ones."""
    path = Path(model_dir) / IMPORT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
        source = record["source"]
        if not (isinstance(source, dict) and isinstance(source.get("sha256"), str)
                and isinstance(record.get("fingerprint"), str)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record
