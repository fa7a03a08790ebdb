"""Verify a bundle before anything runs: manifest, signature, and file hashes.

Adapters are hashed on every start (they are small and safety-relevant). The base can
be large: its hash is cached per file, keyed on (path, size, mtime, inode), in
~/.cache/sgedge (or $SGEDGE_CACHE_DIR); `verify="full"` re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sgedge._fs import atomic_path
from sgedge.errors import SgedgeError
from sgedge.manifest import Artifact, Manifest, read_manifest
from sgedge.signing import SignatureError, verify_signature

VERIFY_MODES = ("cached", "full")


class IntegrityError(SgedgeError):
    """A bundle file is missing, or its bytes are not the ones the manifest names."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    """sgedge's cache folder: $SGEDGE_CACHE_DIR, else ~/.cache/sgedge."""
    return Path(os.environ.get("SGEDGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sgedge"))


def _cache_file() -> Path:
    return cache_root() / "hash-cache.json"


class HashCache:
    def __init__(self) -> None:
        self.path = _cache_file()
        try:
            self.entries: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    @staticmethod
    def key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def sha256(self, path: Path) -> str:
        k = self.key(path)
        if k not in self.entries:
            self.entries[k] = sha256_file(path)
            self.dirty = True
        return self.entries[k]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.entries))
        except OSError:
            pass  # a read-only home only costs speed, never safety


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    signed_by: str | None
    base_hashed: int  # base files hashed now (not from cache)


def check_files(bundle: Path, artifacts: Iterable[tuple[str, Artifact]], cache: HashCache | None) -> list[str]:
    problems = []
    for what, art in artifacts:
        for f in art.files:
            p = bundle / f.path
            if not p.is_file():
                problems.append(f"{what}: {f.path} is missing")
                continue
            if p.stat().st_size != f.size:
                problems.append(f"{what}: {f.path} has {p.stat().st_size} bytes, the manifest says {f.size}")
                continue
            digest = cache.sha256(p) if cache is not None else sha256_file(p)
            if digest != f.sha256:
                problems.append(f"{what}: {f.path} does not match its sha256 (modified or corrupt)")
    return problems


def verify_bundle(bundle: str | Path, *, trusted_key: str | Path | None = None, verify: str = "cached",
                  formats: Iterable[str] | None = None, adapters: Iterable[str] | None = None) -> Verified:
    """Raise a clear error unless the bundle is intact (and signed, when required)."""
    bundle = Path(bundle)
    if verify not in VERIFY_MODES:
        raise SgedgeError(f"verify must be one of {', '.join(VERIFY_MODES)}")
    manifest, data = read_manifest(bundle)
    signed_by = None
    if trusted_key is not None:
        signed_by = verify_signature(bundle, data, trusted_key)
    elif manifest.require_signature:
        raise SignatureError(f"bundle {bundle} requires a signature check: pass the publisher's key "
                             "(--trusted-key PUB / trusted_key=...)")
    fmts = list(formats) if formats is not None else list(manifest.base.formats)
    names = list(adapters) if adapters is not None else list(manifest.adapters)
    adapter_arts = [(f"adapter {n!r}", manifest.adapters[n].formats[fmt])
                    for n in names for fmt in fmts if fmt in manifest.adapters[n].formats]
    missing_fmt = [f"adapter {n!r} has no {fmt} file" for n in names for fmt in fmts
                   if fmt not in manifest.adapters[n].formats]
    problems = missing_fmt + check_files(bundle, adapter_arts, None)
    cache = None if verify == "full" else HashCache()
    before = len(cache.entries) if cache else 0
    base_arts = [(f"base ({fmt})", manifest.base.formats[fmt]) for fmt in fmts if fmt in manifest.base.formats]
    problems += check_files(bundle, base_arts, cache)
    hashed = sum(len(a.files) for _, a in base_arts) if cache is None else len(cache.entries) - before
    if cache is not None:
        cache.save()
    if problems:
        raise IntegrityError(f"bundle {bundle} failed verification: " + "; ".join(problems[:6]))
    return Verified(manifest, signed_by, hashed)
