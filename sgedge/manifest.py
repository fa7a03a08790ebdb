"""The bundle manifest, `sgedge.json`: which base, which safety adapters, which policy
applies where. Frozen dataclasses; unknown keys warn, missing keys fail; writes are
atomic (temp file + os.replace).

A policy maps a key (a region such as "EU", or an audience such as "KIDS") to a list
of adapters with a scale each. Safety fails closed: an unknown key is an error unless
the manifest names a default policy, and running the bare base needs
`allow_no_adapter`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgedge._fs import atomic_path
from sgedge.errors import InputError

MANIFEST = "sgedge.json"
SIGNATURE = "sgedge.json.sig"
SCHEMA_VERSION = 1
FORMATS = ("gguf", "onnx")
MAX_MANIFEST_BYTES = 16 << 20
FLOAT32_MAX = 3.4028234663852886e38  # larger scales are infinite where the engines apply them


class ManifestError(InputError):
    """The manifest is missing, malformed, or of an unknown schema."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the bundle root
    sha256: str
    size: int


@dataclass(frozen=True)
class Artifact:
    """One exported artifact: a single file (GGUF) or a folder of files (ONNX)."""

    path: str
    files: tuple[FileEntry, ...]
    dtype: str = ""


@dataclass(frozen=True)
class BaseEntry:
    fingerprint: str
    family: str
    formats: dict[str, Artifact]


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    base_fingerprint: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    formats: dict[str, Artifact]
    version: str = "1"
    description: str = ""


@dataclass(frozen=True)
class PolicyItem:
    adapter: str
    scale: float = 1.0


def adapter_scale(value: Any, where: str) -> float:
    """An adapter scale as a finite float (negative subtracts the adapter, 0 switches it
    off); NaN or infinity would turn every logit into NaN, so they are refused."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: scale {value!r} is not a number") from None
    if not math.isfinite(scale) or abs(scale) > FLOAT32_MAX:
        raise InputError(f"{where}: scale {value!r} is not a finite number in float32 (|scale| <= 3.4e38), "
                         "the precision the engines apply it in")
    return scale


@dataclass(frozen=True)
class Manifest:
    base: BaseEntry
    adapters: dict[str, AdapterEntry]
    policies: dict[str, tuple[PolicyItem, ...]]
    default_policy: str | None = None
    allow_no_adapter: bool = False
    require_signature: bool = False
    producer: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # -- policy resolution ----------------------------------------------------------
    def policy_key(self, key: str) -> str | None:
        """The policy key that `key` names: exact, else the one key equal to it ignoring
        case ("eu" -> "EU"; a region typed in lower case must not fall to the default
        policy; surrounding spaces, as an environment variable may carry, do not count).
        None when no key matches."""
        if key in self.policies:
            return key
        key = key.strip()
        if key in self.policies:
            return key
        folded = [k for k in self.policies if k.casefold() == key.casefold()]
        if len(folded) > 1:
            raise InputError(f"region/policy {key!r} matches {', '.join(sorted(folded))} in this bundle, which differ "
                             "only in case; give the exact key")
        return folded[0] if folded else None

    def resolve(self, key: str | None) -> tuple[str, tuple[PolicyItem, ...]]:
        """The policy for `key` (falling back to the default policy), or a clear error."""
        known = ", ".join(sorted(self.policies)) or "none"
        found = None if key is None else self.policy_key(key)
        if found is not None:
            return found, self.policies[found]
        if self.default_policy is not None:
            return self.default_policy, self.policies[self.default_policy]
        if key is None:
            raise InputError(f"choose a region/policy: this bundle has no default policy (known: {known})")
        raise InputError(f"unknown region/policy {key!r} and no default policy in this bundle (known: {known})")

    def check(self) -> None:
        """Cross-references: every policy's adapter exists, default policy exists, bindings agree."""
        problems = []
        by_case: dict[str, list[str]] = {}
        for key in self.policies:
            by_case.setdefault(key.casefold(), []).append(key)
        problems += [f"policy keys {' and '.join(sorted(ks))} differ only in case (regions and audiences match "
                     "case-insensitively)" for ks in by_case.values() if len(ks) > 1]
        for key, items in self.policies.items():
            if not items:
                problems.append(f"policy {key!r} has no adapter (use allow_no_adapter for a bare base)")
            for it in items:
                if not math.isfinite(it.scale) or abs(it.scale) > FLOAT32_MAX:
                    problems.append(f"policy {key!r} scales {it.adapter!r} by {it.scale}, not a finite number")
                if it.adapter not in self.adapters:
                    problems.append(f"policy {key!r} names unknown adapter {it.adapter!r}")
        if self.default_policy is not None and self.default_policy not in self.policies:
            problems.append(f"default policy {self.default_policy!r} is not a policy")
        problems += [p for p in map(adapter_name_problem, self.adapters) if p]
        problems += adapter_case_clashes(self.adapters)
        for a in self.adapters.values():
            if a.base_fingerprint != self.base.fingerprint:
                problems.append(f"adapter {a.name!r} is bound to another base ({a.base_fingerprint[:19]}...)")
        if problems:
            raise ManifestError("bundle manifest is inconsistent: " + "; ".join(problems))

    # -- (de)serialisation ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["policies"] = {k: [asdict(i) for i in v] for k, v in self.policies.items()}
        return {**self.extra, **d}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def parse_manifest(raw: Any) -> Manifest:
    """A checked Manifest from parsed JSON: types, ranges and cross-references
    (sgedge/manifest_schema.py has the rules)."""
    from sgedge.manifest_schema import parse

    return parse(raw)


def loads_manifest(data: bytes) -> Manifest:
    """The manifest these exact bytes hold (strict JSON: no duplicate keys, no NaN)."""
    from sgedge.manifest_schema import loads, parse

    return parse(loads(data))


def require_bundle(bundle: str | Path, hint: str = "") -> Path:
    """The manifest path of `bundle`, or ManifestError when the folder is no bundle
    (`hint` is added when the path exists, e.g. where else a model goes)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        extra = f" ({hint})" if hint and Path(bundle).exists() else ""
        raise ManifestError(f"{bundle} is not an sgedge bundle (no {MANIFEST}){extra}")
    return path


def read_manifest(bundle: str | Path) -> tuple[Manifest, bytes]:
    """(manifest, the exact bytes read) — the bytes are what a signature covers."""
    path = require_bundle(bundle)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError(f"cannot read {path} ({e.strerror or e})") from None
    return loads_manifest(data), data


def write_manifest(bundle: str | Path, manifest: Manifest) -> None:
    manifest.check()
    with atomic_path(Path(bundle) / MANIFEST) as tmp:
        tmp.write_text(manifest.dumps())
    # A changed manifest invalidates any signature over the old bytes.
    sig = Path(bundle) / SIGNATURE
    if sig.exists():
        os.remove(sig)


_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def adapter_name_problem(name: str) -> str | None:
    """Why `name` cannot name a bundle's adapter, or None. The name is the adapter's file
    name on every OS the bundle ships to, and is written in policies as NAME[:SCALE]+NAME."""
    if not name or len(name) > 100:
        return f"adapter name {name!r} must be 1 to 100 characters"
    if not name[0].isalnum() or not all(c.isalnum() or c in "._-" for c in name):
        return (f"adapter name {name!r} may hold only letters, digits, '.', '_' and '-', and must start with a "
                "letter or digit (it names the adapter's file, and policies write NAME[:SCALE]+NAME)")
    if name.split(".")[0].upper() in _WINDOWS_DEVICES:
        return f"adapter name {name!r} is a reserved device name on Windows, so its file could not be written there"
    return None


def adapter_case_clashes(names: Iterable[str]) -> list[str]:
    """Adapter names that differ only in case: their files would be one file on Windows and macOS."""
    by_case: dict[str, list[str]] = {}
    for n in names:
        by_case.setdefault(n.casefold(), []).append(n)
    return [f"adapter names {' and '.join(sorted(ns))} differ only in case (their files would collide on "
            "Windows and macOS)" for ns in by_case.values() if len(ns) > 1]


def parse_policy_arg(spec: str) -> tuple[str, tuple[PolicyItem, ...]]:
    """'KEY=NAME[:SCALE][+NAME2[:SCALE]]' -> (key, items)."""
    key, sep, rest = spec.partition("=")
    if not sep or not key or not rest:
        raise InputError(f"--policy {spec!r}: expected KEY=ADAPTER[:SCALE][+ADAPTER[:SCALE]]")
    items = []
    for part in rest.split("+"):
        name, _, scale = part.partition(":")
        items.append(PolicyItem(name, adapter_scale(scale, f"--policy {spec!r}") if scale else 1.0))
    return key, tuple(items)
