"""The strict reader of `sgedge.json`: bytes in, a checked `Manifest` out, or one
`ManifestError` naming the first value that is wrong and where it is.

A bundle's manifest decides which safety runs, so nothing in it is read loosely:
- JSON as RFC 8259 has it: no NaN/Infinity, no duplicate keys (Python's json keeps the
  last one silently), nesting and size bounded (deep nesting is a RecursionError);
- every value of the type the schema names (a string "false" is not a boolean), every
  number in range, and every float finite *in float32*, the precision the engines use
  (1e39 is finite in Python and infinite in llama.cpp);
- unknown keys inside an entry are refused (a typo such as "sacle" would otherwise
  leave the scale at 1); unknown top-level keys only warn (room for later versions);
- one source of truth per artifact: a single-file artifact lists exactly its `path`;
  a folder artifact lists only files inside `path/`, each once.

Hand-written rather than a schema library: about a hundred lines, no dependency in the
light runtime (jsonschema brings a native extension), and errors in the user's words.
"""

from __future__ import annotations

import re
import warnings
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from sgedge import strict_json
from sgedge.manifest import (
    FLOAT32_MAX,
    FORMATS,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SCHEMA_VERSION,
    AdapterEntry,
    Artifact,
    BaseEntry,
    FileEntry,
    Manifest,
    ManifestError,
    PolicyItem,
    adapter_name_problem,
)

MAX_BYTES = MAX_MANIFEST_BYTES  # a manifest lists files, not weights: a few KB in practice
MAX_DEPTH = 12  # the schema nests 6 deep
MAX_RANK = 1 << 16
MAX_SIZE = 1 << 50  # bytes in one file
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOP = {"schema_version", "producer", "base", "adapters", "policies", "default_policy", "allow_no_adapter",
        "require_signature"}


def loads(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes as strict JSON (the bytes a signature covers)."""
    if len(data) > MAX_BYTES:
        raise ManifestError(f"{MANIFEST} is {len(data)} bytes; a manifest is at most {MAX_BYTES} (is this a bundle?)")
    raw = strict_json.loads(data, MANIFEST, error=ManifestError, max_depth=MAX_DEPTH, want=None)
    if not isinstance(raw, dict):
        raise ManifestError(f"{MANIFEST} must hold a JSON object, not {_kind(raw)}")
    return raw


# -- typed reads: each names where the value is and what it should be -----------------
def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _get(d: dict[str, Any], key: str, where: str, required: bool = True, default: Any = None) -> Any:
    if key not in d:
        if required:
            raise ManifestError(f"{MANIFEST}: {where} lacks required key {key!r}")
        return default
    return d[key]


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ManifestError(f"{MANIFEST}: {where} must be an object, not {_kind(v)}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise ManifestError(f"{MANIFEST}: {where} must be a list, not {_kind(v)}")
    return v


def _str(v: Any, where: str, *, empty: bool = True, longest: int = 4096) -> str:
    if not isinstance(v, str) or (not empty and not v) or len(v) > longest:
        raise ManifestError(f"{MANIFEST}: {where} must be a {'' if empty else 'non-empty '}string of at most "
                            f"{longest} characters, not {v!r}"[:300])
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ManifestError(f"{MANIFEST}: {where} must be true or false, not {v!r} ({_kind(v)})"[:300])
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ManifestError(f"{MANIFEST}: {where} must be a whole number from {lo} to {hi}, not {v!r}"[:300])
    return v


def _float32(v: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not abs(v) <= FLOAT32_MAX:
        raise ManifestError(f"{MANIFEST}: {where} must be a number finite in float32 (|x| <= 3.4e38), "
                            f"not {v!r}"[:300])
    if positive and not v > 0:
        raise ManifestError(f"{MANIFEST}: {where} must be greater than 0, not {v!r}")
    return float(v)


def _keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ManifestError(f"{MANIFEST}: {where} has unknown key(s) {', '.join(map(repr, unknown[:5]))} "
                            f"(known: {', '.join(sorted(allowed))})")


def _inside(path: Any, where: str) -> str:
    """A manifest path: relative, forward slashes, never above the bundle folder."""
    path = _str(path, f"{where} path", empty=False, longest=1024)
    win = PureWindowsPath(path)
    if (PurePosixPath(path).is_absolute() or win.is_absolute() or win.drive or ".." in win.parts
            or "\\" in path or "\x00" in path):
        raise ManifestError(f"{MANIFEST}: {where} names {path!r}, outside the bundle folder; every path in a "
                            "bundle is relative to it, with forward slashes (re-create the bundle with "
                            "`sgedge bundle create`)")
    return path


def _artifact(v: Any, where: str) -> Artifact:
    d = _obj(v, where)
    _keys(d, {"path", "files", "dtype"}, where)
    path = _inside(_get(d, "path", where), where).rstrip("/")
    files = []
    for i, f in enumerate(_list(_get(d, "files", where), f"{where}.files")):
        at = f"{where}.files[{i}]"
        f = _obj(f, at)
        _keys(f, {"path", "sha256", "size"}, at)
        digest = _str(_get(f, "sha256", at), f"{at}.sha256")
        if not _SHA256.fullmatch(digest):
            raise ManifestError(f"{MANIFEST}: {at}.sha256 must be 64 lower-case hex digits, not {digest!r}"[:300])
        files.append(FileEntry(_inside(_get(f, "path", at), at), digest, _int(_get(f, "size", at), f"{at}.size",
                                                                                0, MAX_SIZE)))
    # One source of truth: the runtime loads `path`, verification hashes `files`; they
    # must name the same bytes.
    names = [f.path for f in files]
    if not files:
        raise ManifestError(f"{MANIFEST}: {where} lists no files")
    if len({n.casefold() for n in names}) != len(names):
        raise ManifestError(f"{MANIFEST}: {where} lists a file twice")
    if names != [path] and not all(n.startswith(path + "/") for n in names):
        raise ManifestError(f"{MANIFEST}: {where} loads {path!r} but lists {names[0]!r}"
                            f"{' and more' if len(names) > 1 else ''}: a single-file artifact lists exactly its "
                            "path, a folder artifact only files inside it")
    return Artifact(path, tuple(files), _str(_get(d, "dtype", where, False, ""), f"{where}.dtype", longest=32))


def _formats(v: Any, where: str) -> dict[str, Artifact]:
    d = _obj(v, where)
    unknown = sorted(set(d) - set(FORMATS))
    if unknown:
        raise ManifestError(f"{MANIFEST}: {where} has unknown format(s) {', '.join(map(repr, unknown[:5]))} "
                            f"(known: {', '.join(FORMATS)})")
    return {k: _artifact(a, f"{where}.{k}") for k, a in d.items()}


def _adapter(name: str, v: Any) -> AdapterEntry:
    where = f"adapter {name!r}"
    problem = adapter_name_problem(name)
    if problem:
        raise ManifestError(f"{MANIFEST}: {problem}")
    a = _obj(v, where)
    _keys(a, {"name", "base_fingerprint", "rank", "alpha", "targets", "formats", "version", "description"}, where)
    if "name" in a and a["name"] != name:
        raise ManifestError(f"{MANIFEST}: {where} says its name is {a['name']!r}"[:300])
    targets = tuple(_str(t, f"{where}.targets[{i}]", empty=False, longest=100)
                    for i, t in enumerate(_list(_get(a, "targets", where), f"{where}.targets")))
    version = _get(a, "version", where, False, "1")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    return AdapterEntry(
        name, _str(_get(a, "base_fingerprint", where), f"{where}.base_fingerprint", empty=False, longest=200),
        _int(_get(a, "rank", where), f"{where}.rank", 1, MAX_RANK),
        _float32(_get(a, "alpha", where), f"{where}.alpha", positive=True), targets,
        _formats(_get(a, "formats", where), f"{where}.formats"),
        _str(version, f"{where}.version", longest=100),
        _str(_get(a, "description", where, False, ""), f"{where}.description"))


def _policy(key: str, v: Any) -> tuple[PolicyItem, ...]:
    where = f"policy {key!r}"
    _str(key, "a policy key", empty=False, longest=100)
    items = []
    for i, item in enumerate(_list(v, where)):
        at = f"{where}[{i}]"
        item = _obj(item, at)
        _keys(item, {"adapter", "scale"}, at)
        items.append(PolicyItem(_str(_get(item, "adapter", at), f"{at}.adapter", empty=False, longest=100),
                                _float32(_get(item, "scale", at, False, 1.0), f"{at}.scale")))
    return tuple(items)


def parse(raw: Any) -> Manifest:
    """A checked Manifest from parsed JSON (see the module's docstring for the rules)."""
    raw = _obj(raw, "the manifest")
    version = _get(raw, "schema_version", "the manifest")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ManifestError(f"{MANIFEST} has schema version {version!r}; this sgedge reads version "
                            f"{SCHEMA_VERSION} (upgrade sgedge, or re-create the bundle)"[:300])
    unknown = set(raw) - _TOP
    if unknown:
        warnings.warn(f"{MANIFEST}: ignoring unknown keys {sorted(unknown)}", stacklevel=3)
    b = _obj(_get(raw, "base", "the manifest"), "base")
    _keys(b, {"fingerprint", "family", "formats"}, "base")
    base = BaseEntry(_str(_get(b, "fingerprint", "base"), "base.fingerprint", empty=False, longest=200),
                     _str(_get(b, "family", "base"), "base.family", longest=100),
                     _formats(_get(b, "formats", "base"), "base.formats"))
    adapters = {_str(n, "an adapter name", empty=False, longest=100): _adapter(n, a)
                for n, a in _obj(_get(raw, "adapters", "the manifest"), "adapters").items()}
    policies = {k: _policy(k, v) for k, v in _obj(_get(raw, "policies", "the manifest"), "policies").items()}
    default = _get(raw, "default_policy", "the manifest", False)
    if default is not None:
        default = _str(default, "default_policy", empty=False, longest=100)
    m = Manifest(base, adapters, policies, default,
                 _bool(_get(raw, "allow_no_adapter", "the manifest", False, False), "allow_no_adapter"),
                 _bool(_get(raw, "require_signature", "the manifest", False, False), "require_signature"),
                 _str(_get(raw, "producer", "the manifest", False, ""), "producer"), version,
                 {k: raw[k] for k in unknown})
    m.check()
    return m
