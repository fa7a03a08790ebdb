"""Create and update bundles: export the base once, add or patch safety adapters and
policies without touching the base.

Every change is atomic. `create` builds in a temporary folder renamed into place.
`add_adapter` writes the new adapter files under fresh names, then swaps the manifest
(os.replace), then removes the files it replaced: an interruption at any point leaves
the previous bundle intact and verifiable.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import sgedge
from sgedge._fs import make_temp_dir
from sgedge.bundle_verify import sha256_file
from sgedge.errors import InputError
from sgedge.manifest import (
    FORMATS,
    AdapterEntry,
    Artifact,
    BaseEntry,
    FileEntry,
    Manifest,
    PolicyItem,
    adapter_case_clashes,
    adapter_name_problem,
    read_manifest,
    write_manifest,
)

_GGUF_DTYPES = {"f32": "f32", "fp32": "f32", "f16": "f16", "fp16": "f16", "bf16": "bf16", "q8_0": "q8_0",
                "q4_k_m": "q4_k_m", "int4": "q4_k_m"}
_ONNX_DTYPES = {"f32": "fp32", "fp32": "fp32", "f16": "fp16", "fp16": "fp16", "int4": "int4", "q4_k_m": "int4",
                "q8_0": "fp32", "bf16": "fp32"}


def dtypes_for(dtype: str | None, gguf_dtype: str | None, onnx_dtype: str | None) -> tuple[str, str]:
    """One --dtype spelling for both formats; --gguf-dtype / --onnx-dtype set them apart."""
    g = gguf_dtype or (_GGUF_DTYPES.get(dtype) if dtype else "f16")
    o = onnx_dtype or (_ONNX_DTYPES.get(dtype) if dtype else "fp32")
    if g is None or o is None:
        raise InputError(f"unknown --dtype {dtype!r}; use f32/fp32, f16/fp16, q8_0, q4_k_m or int4")
    return g, o


def _artifact(root: Path, rel: str, dtype: str = "") -> Artifact:
    p = root / rel
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return Artifact(rel, tuple(FileEntry(q.relative_to(root).as_posix(), sha256_file(q), q.stat().st_size)
                               for q in files), dtype)


def _export_adapter(root: Path, name: str, peft_dir: Path, fmts: Sequence[str], tag: str,
                    on_note: Callable[[str], None] | None = None, gguf_dtype: str = "f32") -> AdapterEntry:
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.peft_adapter import binding_note

    (root / "adapters").mkdir(exist_ok=True)
    formats: dict[str, Artifact] = {}
    meta = None
    for fmt in fmts:
        if fmt == "gguf":
            rel = f"adapters/{name}{tag}.gguf"
            r = export_adapter_gguf(peft_dir, root / rel, base=root / "base.gguf", dtype=gguf_dtype)
            meta = (r.fingerprint, r.rank, r.alpha, r.targets)
        else:
            rel = f"adapters/{name}{tag}.onnx_adapter"
            o = export_adapter_onnx(peft_dir, root / rel, base=root / "base_onnx")
            meta = meta or (o.fingerprint, o.rank, 0.0, ())
        formats[fmt] = _artifact(root, rel)
    assert meta is not None
    note = binding_note(peft_dir, meta[0])
    if note and on_note:
        on_note(f"adapter {name!r}: {note}")
    if meta[2] == 0.0 or not meta[3]:
        from sgedge.exporters.peft_adapter import load_peft_adapter

        a = load_peft_adapter(peft_dir, allow_pickle=False)
        meta = (meta[0], a.rank, a.lora_alpha, tuple(sorted({m.leaf for m in a.modules})))
    return AdapterEntry(name, meta[0], meta[1], meta[2], tuple(meta[3]), formats)


def _own_gguf_base(src: Path, dest: Path, adapters: Mapping[str, str | Path]) -> tuple[str, str, str]:
    """Copy the user's GGUF base into the bundle as it is: (fingerprint, family, dtype).
    Its fingerprint is its import's (the one the adapters were trained on)."""
    from sgedge.exporters.gguf_adapter import base_spec_from_gguf
    from sgedge.exporters.peft_adapter import recorded_base
    from sgedge.formats.gguf_meta import read_gguf_info

    recorded = [r[0] for r in (recorded_base(d) for d in adapters.values()) if r]
    shutil.copyfile(src, dest)
    spec = base_spec_from_gguf(dest, want=recorded[0] if recorded else None)
    types = read_gguf_info(dest).types
    weights = [t for n, t in types.items() if n.endswith(".weight") and t not in ("F32",)]
    dtype = max(set(weights), key=weights.count).lower() if weights else "f32"
    return spec.fingerprint, spec.family.name, dtype


def _slot_targets(spec: str | Sequence[str], adapters: Mapping[str, str | Path]) -> list[str] | None:
    """--onnx-lora-targets: None (every projection), the adapters' own targets, or a list."""
    if isinstance(spec, str) and spec == "all":
        return None
    if isinstance(spec, str) and spec == "adapters":
        from sgedge.exporters.peft_adapter import load_peft_adapter

        if not adapters:
            raise InputError("--onnx-lora-targets adapters needs at least one --adapter")
        return sorted({m.leaf for d in adapters.values() for m in load_peft_adapter(d).modules})
    targets = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    if not targets:
        raise InputError("--onnx-lora-targets: give all, adapters or a comma-separated list of projections")
    return targets


def create_bundle(
    out: str | Path,
    base: str | Path,
    adapters: Mapping[str, str | Path],
    policies: Mapping[str, Sequence[PolicyItem]],
    *,
    default_policy: str | None = None,
    formats: Sequence[str] = ("gguf",),
    gguf_dtype: str = "f16",
    onnx_dtype: str = "fp32",
    onnx_ep: str = "cpu",
    onnx_lora_targets: str | Sequence[str] = "all",
    adapter_dtype: str = "f32",
    allow_no_adapter: bool = False,
    require_signature: bool = False,
    descriptions: Mapping[str, str] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Manifest:
    """Export base and adapters into a new bundle folder `out` (all or nothing).
    `on_note` receives what an export says the runtime will do differently from
    transformers (e.g. a sliding window llama.cpp does not apply). `onnx_lora_targets`:
    "all" (slots on every projection, so any later adapter fits), "adapters" (the
    projections these adapters target: faster, but a later add-adapter needing others is
    refused) or a list of projections. `adapter_dtype`: f32 or f16 for the GGUF adapters
    (f16 halves them; the ONNX adapters take the type of their base's LoRA slots)."""
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.exporters.onnx_base import export_base_onnx

    out = Path(out)
    if out.exists():
        raise InputError(f"{out} exists; choose a new folder (update a bundle with add-adapter / set-policy)")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
    if not adapters and not allow_no_adapter:
        raise InputError("a bundle needs at least one --adapter (or --allow-no-adapter for a bare base)")
    problems = [p for p in map(adapter_name_problem, adapters) if p] + adapter_case_clashes(adapters)
    if problems:
        raise InputError("; ".join(problems))
    # Validate the policy table before spending minutes on exports.
    for key, items in policies.items():
        for it in items:
            if it.adapter not in adapters:
                raise InputError(f"policy {key!r} names adapter {it.adapter!r}, which is not among --adapter "
                                 f"({', '.join(adapters) or 'none'})")
    if default_policy is not None and default_policy not in policies:
        raise InputError(f"--default-policy {default_policy!r} is not one of the policies ({', '.join(policies)})")
    if "onnx" not in formats and onnx_lora_targets != "all":
        raise InputError("--onnx-lora-targets applies to bundles with --formats onnx")
    slot_targets = _slot_targets(onnx_lora_targets, adapters) if "onnx" in formats else None
    gguf_file = Path(base).is_file()
    if gguf_file and list(formats) != ["gguf"]:
        raise InputError(f"{base} is a GGUF file, which becomes the bundle's gguf base as it is; an ONNX base is "
                         "exported from a Hugging Face folder: `sgedge import` the file and pass that folder as --base "
                         "(or use --formats gguf)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    try:
        base_formats: dict[str, Artifact] = {}
        fingerprint = family = ""
        if gguf_file:
            fingerprint, family, dtype = _own_gguf_base(Path(base), tmp / "base.gguf", adapters)
            base_formats["gguf"] = _artifact(tmp, "base.gguf", dtype)
        elif "gguf" in formats:
            r = export_base_gguf(base, tmp / "base.gguf", dtype=gguf_dtype)
            fingerprint, family = r.fingerprint, r.family
            for note in r.notes if on_note else ():
                on_note(f"GGUF base: {note}")
            base_formats["gguf"] = _artifact(tmp, "base.gguf", gguf_dtype)
        if "onnx" in formats:
            o = export_base_onnx(base, tmp / "base_onnx", dtype=onnx_dtype, ep=onnx_ep, lora_targets=slot_targets)
            fingerprint, family = o.fingerprint, o.family
            base_formats["onnx"] = _artifact(tmp, "base_onnx", onnx_dtype)
        entries = {}
        for name, peft_dir in adapters.items():
            e = _export_adapter(tmp, name, Path(peft_dir), list(base_formats), "", on_note, adapter_dtype)
            entries[name] = replace(e, description=(descriptions or {}).get(name, ""))
        manifest = Manifest(BaseEntry(fingerprint, family, base_formats), entries,
                            {k: tuple(v) for k, v in policies.items()}, default_policy, allow_no_adapter,
                            require_signature, f"sgedge {sgedge.__version__}")
        write_manifest(tmp, manifest)
        os.replace(tmp, out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TAGGED = re.compile(r"[A-Za-z0-9][\w.-]*\.[0-9a-f]{8}\.(gguf|onnx_adapter)")


def sweep_orphans(bundle: Path, manifest: Manifest) -> list[str]:
    """Remove adapter files an interrupted `add-adapter` left (written under a tagged
    name, never named by the manifest). Files of any other name are left alone."""
    named = {f.path for a in manifest.adapters.values() for art in a.formats.values() for f in art.files}
    gone = []
    folder = bundle / "adapters"
    for p in folder.iterdir() if folder.is_dir() else []:
        rel = f"adapters/{p.name}"
        if p.is_file() and _TAGGED.fullmatch(p.name) and rel not in named:
            p.unlink(missing_ok=True)
            gone.append(rel)
    return gone


def add_adapter(bundle: str | Path, name: str, peft_dir: str | Path, *, description: str = "",
                version: str | None = None, on_note: Callable[[str], None] | None = None) -> AdapterEntry:
    """Add a safety adapter, or replace one of the same name (a patch); the base is untouched."""
    bundle = Path(bundle)
    manifest, _ = read_manifest(bundle)
    sweep_orphans(bundle, manifest)
    problems = [p for p in [adapter_name_problem(name)] if p]
    problems += adapter_case_clashes({*(n for n in manifest.adapters if n != name), name})
    if problems:
        raise InputError("; ".join(problems) + " (to replace an adapter, give its exact name)")
    tag = "." + uuid.uuid4().hex[:8]
    entry = _export_adapter(bundle, name, Path(peft_dir), list(manifest.base.formats), tag, on_note)
    old = manifest.adapters.get(name)
    new_version = version or (str(int(old.version) + 1) if old and old.version.isdigit() else "1")
    entry = replace(entry, description=description or (old.description if old else ""), version=new_version)
    try:
        write_manifest(bundle, replace(manifest, adapters={**manifest.adapters, name: entry}))
    except BaseException:
        for art in entry.formats.values():
            for f in art.files:
                (bundle / f.path).unlink(missing_ok=True)
        raise
    if old is not None:
        for art in old.formats.values():
            for f in art.files:
                (bundle / f.path).unlink(missing_ok=True)
    return entry


def set_policy(bundle: str | Path, key: str, items: Sequence[PolicyItem], *, default: bool = False) -> Manifest:
    bundle = Path(bundle)
    manifest, _ = read_manifest(bundle)
    unknown = [it.adapter for it in items if it.adapter not in manifest.adapters]
    if unknown:
        raise InputError(f"policy {key!r} names unknown adapter(s) {', '.join(unknown)} "
                         f"(bundle has: {', '.join(manifest.adapters)})")
    clash = [k for k in manifest.policies if k != key and k.casefold() == key.casefold()]
    if clash:
        raise InputError(f"policy {key!r} would stand next to {clash[0]!r}: keys match ignoring case; "
                         f"use {clash[0]!r} to change that policy")
    new = replace(manifest, policies={**manifest.policies, key: tuple(items)},
                  default_policy=key if default else manifest.default_policy)
    write_manifest(bundle, new)
    return new
