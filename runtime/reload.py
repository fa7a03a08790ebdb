"""`Runtime.reload()`: patch safety live. A re-signed bundle is read and verified as at
start-up (manifest once, signature with the trusted key, every changed adapter's hash and
base binding); its new or changed adapters are loaded beside the resident ones; then,
between two generations (a generation that started on the old set finishes on it), the
runtime switches to the new set and frees the adapters no longer referenced. The base is
never reloaded: a bundle whose base changed is refused with a message. Any failure
leaves the old set serving and raises.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgedge.errors import InputError

if TYPE_CHECKING:
    from sgedge.runtime.api import Runtime


@dataclass(frozen=True)
class BundleSource:
    """What a runtime opened from a bundle needs to read it again."""

    path: Path
    kind: str  # "gguf" or "onnx"
    trusted_key: Any
    region: str | None
    no_adapter: bool

    @staticmethod
    def version(manifest_bytes: bytes) -> str:
        return hashlib.sha256(manifest_bytes).hexdigest()[:12]


@dataclass(frozen=True)
class ReloadResult:
    bundle: str  # the new bundle version
    previous: str | None
    changed: tuple[str, ...]  # adapters loaded now (new, or other bytes)
    removed: tuple[str, ...]  # adapters freed
    policy: str | None  # the start-up policy's key now
    seconds: float

    @property
    def unchanged(self) -> bool:
        return self.bundle == self.previous


def reload_bundle(rt: Runtime) -> ReloadResult:
    from sgedge.bundle_verify import check_bundle_files, check_signature
    from sgedge.manifest import read_manifest

    t0 = time.perf_counter()
    src: BundleSource | None = rt._reload
    if src is None:
        raise InputError("reload() applies to a runtime opened from a bundle")
    if rt._fused:
        raise InputError("a fused runtime has its adapters merged into the base: restart it to take a new bundle "
                         "(or run it in the default dynamic mode, which reloads live)")
    manifest, data = read_manifest(src.path)
    signed_by = check_signature(src.path, manifest, data, src.trusted_key)
    old = rt._manifest
    version = BundleSource.version(data)
    if manifest.base.fingerprint != old.base.fingerprint or manifest.base.formats.get(src.kind) != \
            old.base.formats.get(src.kind):
        raise InputError(f"the bundle's base changed ({src.kind} base {manifest.base.fingerprint[:19]}...): the base is "
                         "never reloaded under a running app; restart it to take the new base")
    if src.kind not in manifest.base.formats:
        raise InputError(f"the new bundle has no {src.kind} base")
    changed = [n for n, e in manifest.adapters.items()
               if n not in old.adapters or e.formats.get(src.kind) != old.adapters[n].formats.get(src.kind)]
    missing = [n for n in manifest.adapters if src.kind not in manifest.adapters[n].formats]
    if missing:
        raise InputError(f"adapter(s) {', '.join(missing)} of the new bundle have no {src.kind} file")
    # The start-up choice, under the new manifest (fails here, before anything changes).
    key: str | None
    items: tuple[Any, ...]
    if src.no_adapter:
        if not manifest.allow_no_adapter:
            raise InputError("the new bundle forbids running without a safety adapter, which this runtime does")
        key, items = None, ()
    else:
        import os

        key, items = manifest.resolve(src.region if src.region is not None else os.environ.get("SGEDGE_REGION"))
    verified = check_bundle_files(src.path, manifest, signed_by, verify="full", formats=[src.kind],
                                  adapters=changed, base=False)
    pins = verified.pins
    turn = rt._take_turn()  # waits for the generation in progress: it finishes on the old set
    loaded: list[tuple[str, str]] = []
    try:
        be = rt._backend
        engine_names = set(be.adapters)
        try:
            for name in changed:
                internal, i = name, 2
                while internal in engine_names:
                    internal, i = f"{name}@{i}", i + 1
                path = pins.engine_path(src.path / manifest.adapters[name].formats[src.kind].path)
                be.load_adapter(path, internal)
                engine_names.add(internal)
                loaded.append((name, internal))
        except InputError as e:
            raise type(e)(pins.real_names(str(e))) from None
        new_names = {n: dict(loaded).get(n) or rt._names.get(n, n) for n in manifest.adapters}
        gone = sorted(set(be.adapters) - set(new_names.values()))
        # The switch: between generations, all at once.
        old_names = rt._names or {n: n for n in old.adapters}
        rt._names, rt._manifest, rt.policy = new_names, manifest, key
        rt._default = tuple((it.adapter, it.scale) for it in items)
        rt.bundle_version, previous = version, rt.bundle_version
        for internal in gone:
            be.unload_adapter(internal)
        rt._pins.release([src.path / e.formats[src.kind].path for n, e in old.adapters.items()
                          if old_names.get(n) in gone])
        rt._pins.adopt(pins)
    except BaseException:
        for _, internal in loaded:
            try:
                rt._backend.unload_adapter(internal)
            except Exception:  # noqa: BLE001 (the first error is the one to report)
                pass
        pins.close()
        raise
    finally:
        rt._end_turn(turn)
    removed = tuple(sorted(n for n, internal in old_names.items() if internal in gone))
    if rt._mode == "pool":
        _refill_pool(rt, manifest, key)
    return ReloadResult(version, previous, tuple(changed), removed, key, time.perf_counter() - t0)


def _refill_pool(rt: Runtime, manifest: Any, key: str | None) -> None:
    """Pool mode: members fused from freed adapters went with them; fuse the new set's
    policies now (their requests run on the dynamic engine until then). The new set already
    serves, so a member that cannot be built leaves its policy dynamic, with a note."""
    from sgedge.runtime.api import pool_candidates
    from sgedge.runtime.pool import PoolBackend

    pool, pins = rt._backend, rt._pins
    if not isinstance(pool, PoolBackend) or pool.refill is None:
        return
    try:
        pool.refill(pool_candidates(manifest, key, rt._default), lambda k: tuple(rt._engine_names(k)),
                           None if pins is None else lambda: pins.check_unchanged(always=True))
    except Exception as e:  # noqa: BLE001 (the reload itself succeeded)
        rt._notes.append(f"after the reload, a policy could not be fused for the pool and runs on the dynamic "
                         f"engine ({type(e).__name__}: {e})")
