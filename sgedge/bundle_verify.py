"""Verify a bundle before anything runs: manifest, signature, and file hashes.

The manifest is read once and parsed from the bytes whose signature is checked. Every
file is opened once (`sgedge.pinned`): hashed from the open file, then handed to the
engine by a path naming that same open file, so a file renamed over a checked one is
never what runs. Adapters are hashed on every start (small, safety-relevant). The base
can be large: its hash is cached per file identity (device, inode, size, mtime, ctime)
in a folder only the user can write, ~/.cache/sgedge (or $SGEDGE_CACHE_DIR); a cache
folder others can write is not used. `verify="full"` re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sgedge._fs import atomic_path
from sgedge.errors import SgedgeError
from sgedge.manifest import Artifact, Manifest, read_manifest
from sgedge.pinned import IntegrityError, PinnedFile, Pins, identity
from sgedge.signing import SignatureError, verify_signature

VERIFY_MODES = ("cached", "full")
__all__ = ["IntegrityError", "HashCache", "Verified", "verify_bundle", "check_bundle_files", "sha256_file"]


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


def private_dir(path: Path) -> bool:
    """Whether `path` is a folder only this user can write (owned by the user, no group or
    other write). A cache there is trusted as the user's own; elsewhere it is not used.
    (Windows has no such modes: the user profile's folder is taken as private.)"""
    if os.name != "posix":
        return path.is_dir()
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def ensure_private_dir(path: Path) -> bool:
    """Create `path` (mode 0700) if missing; whether it is private (see private_dir)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return False
    return private_dir(path)


class HashCache:
    """sha256 per file identity, kept where only the user can write. An attacker who can
    replace a bundle's base cannot make it pass: the key holds the ctime, which any
    rewrite or replacement changes and no writer can set back."""

    def __init__(self) -> None:
        self.path = _cache_file()
        self.usable = private_dir(self.path.parent)
        self.entries: dict[str, str] = {}
        if self.usable:
            try:
                st = os.lstat(self.path)
                if stat.S_ISREG(st.st_mode) and (os.name != "posix" or st.st_uid == os.getuid()
                                                  and not st.st_mode & 0o022):
                    loaded = json.loads(self.path.read_text())
                    if isinstance(loaded, dict):
                        self.entries = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}
            except (OSError, ValueError):
                pass
        self.dirty = False

    @staticmethod
    def key(path: Path, st: os.stat_result | None = None) -> str:
        st = st if st is not None else os.stat(path)
        return f"v2|{os.path.abspath(path)}|" + "|".join(map(str, identity(st)))

    def sha256(self, path: Path) -> str:
        with PinnedFile(path) as pinned:
            return self.pinned_sha256(pinned)

    def pinned_sha256(self, pinned: PinnedFile) -> str:
        k = self.key(pinned.path, os.fstat(pinned.fd))
        if k not in self.entries:
            self.entries[k] = pinned.sha256()
            self.dirty = True
        return self.entries[k]

    def save(self) -> None:
        if not self.dirty:
            return
        if not ensure_private_dir(self.path.parent):
            return  # a cache others could write is never used: hashing costs time, not safety
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.entries))
                os.chmod(tmp, 0o600)
        except OSError:
            pass  # a read-only home only costs speed, never safety


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    signed_by: str | None
    base_hashed: int  # base files hashed now (not from cache)
    pins: Pins = field(default_factory=Pins)  # the checked files, open: load them through pins.engine_path

    def close(self) -> None:
        self.pins.close()


def _folder_extras(bundle: Path, art: Artifact) -> list[str]:
    """Files inside a folder artifact that the manifest does not list (an engine reading
    the folder could load them)."""
    root = bundle / art.path
    if not root.is_dir():
        return []
    listed = {f.path for f in art.files}
    return sorted(p.relative_to(bundle).as_posix() for p in root.rglob("*")
                  if not p.is_dir() and p.relative_to(bundle).as_posix() not in listed)


def check_files(bundle: Path, artifacts: Iterable[tuple[str, Artifact]], cache: HashCache | None,
                pins: Pins) -> list[str]:
    problems = []
    for what, art in artifacts:
        problems += [f"{what}: {x} is in the artifact's folder but not in the manifest" for x in
                     _folder_extras(bundle, art)[:3]]
        for f in art.files:
            try:
                p = pins.pin(bundle / f.path)
            except IntegrityError as e:
                problems.append(f"{what}: {f.path} is missing" if "missing" in str(e) else f"{what}: {e}")
                continue
            if p.size != f.size:
                problems.append(f"{what}: {f.path} has {p.size} bytes, the manifest says {f.size}")
                continue
            digest = cache.pinned_sha256(p) if cache is not None else p.sha256()
            if digest != f.sha256:
                problems.append(f"{what}: {f.path} does not match its sha256 (modified or corrupt)")
    return problems


def check_signature(bundle: Path, manifest: Manifest, data: bytes, trusted_key: str | Path | None) -> str | None:
    """The key id that signed `data` (the manifest's bytes), None when unchecked; raises
    when the check fails or the manifest requires one and no key was given."""
    if trusted_key is not None:
        return verify_signature(bundle, data, trusted_key)
    if manifest.require_signature:
        raise SignatureError(f"bundle {bundle} requires a signature check: pass the publisher's key "
                             "(--trusted-key PUB / trusted_key=...)")
    return None


def check_bundle_files(bundle: str | Path, manifest: Manifest, signed_by: str | None = None, *,
                       verify: str = "cached", formats: Iterable[str] | None = None,
                       adapters: Iterable[str] | None = None, base: bool = True) -> Verified:
    """Hash every file of `formats` that `manifest` lists (read once, from the bytes its
    signature covered); the files stay open in the result's pins for the engine."""
    bundle = Path(bundle)
    if verify not in VERIFY_MODES:
        raise SgedgeError(f"verify must be one of {', '.join(VERIFY_MODES)}")
    fmts = list(formats) if formats is not None else list(manifest.base.formats)
    names = list(adapters) if adapters is not None else list(manifest.adapters)
    adapter_arts = [(f"adapter {n!r}", manifest.adapters[n].formats[fmt])
                    for n in names for fmt in fmts if fmt in manifest.adapters[n].formats]
    missing_fmt = [f"adapter {n!r} has no {fmt} file" for n in names for fmt in fmts
                   if fmt not in manifest.adapters[n].formats]
    pins = Pins()
    try:
        problems = missing_fmt + check_files(bundle, adapter_arts, None, pins)
        cache = None if verify == "full" else HashCache()
        before = len(cache.entries) if cache else 0
        base_arts = [(f"base ({fmt})", manifest.base.formats[fmt]) for fmt in fmts
                     if fmt in manifest.base.formats and base]
        problems += check_files(bundle, base_arts, cache, pins)
        hashed = sum(len(a.files) for _, a in base_arts) if cache is None else len(cache.entries) - before
        if cache is not None:
            cache.save()
        if problems:
            raise IntegrityError(f"bundle {bundle} failed verification: " + "; ".join(problems[:6]))
    except BaseException:
        pins.close()
        raise
    return Verified(manifest, signed_by, hashed, pins)


def verify_bundle(bundle: str | Path, *, trusted_key: str | Path | None = None, verify: str = "cached",
                  formats: Iterable[str] | None = None, adapters: Iterable[str] | None = None) -> Verified:
    """Raise a clear error unless the bundle is intact (and signed, when required). The
    result holds the checked files open (`Verified.close()`, or let them be collected)."""
    bundle = Path(bundle)
    if verify not in VERIFY_MODES:
        raise SgedgeError(f"verify must be one of {', '.join(VERIFY_MODES)}")
    manifest, data = read_manifest(bundle)
    signed_by = check_signature(bundle, manifest, data, trusted_key)
    return check_bundle_files(bundle, manifest, signed_by, verify=verify, formats=formats, adapters=adapters)
