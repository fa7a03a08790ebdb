"""The ways around a signed bundle that the attack review found (issue 25), one test
each: every one of them ran other weights than the signed ones before the fix."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from sgedge.bundle_verify import HashCache, IntegrityError, sha256_file
from sgedge.cli import main
from sgedge.errors import InputError
from sgedge.exporters.bundle import create_bundle
from sgedge.manifest import PolicyItem
from sgedge.runtime.api import Runtime
from sgedge.signing import keygen, sign_bundle

POLICIES = {"US": (PolicyItem("standard", 1.0),), "EU": (PolicyItem("strict", 1.0),)}
ARGS = {"max_tokens": 8, "ignore_eos": True}


@pytest.fixture(scope="module")
def signed(tiny, tmp_path_factory):
    t = tiny("qwen2")
    root = tmp_path_factory.mktemp("signed")
    create_bundle(root / "app", t.hf, {"standard": t.lora1, "strict": t.lora2}, POLICIES, default_policy="US",
                  formats=["gguf", "onnx"], gguf_dtype="f32")
    keygen(root / "k.key", root / "k.pub")
    sign_bundle(root / "app", root / "k.key")
    tokens = {}
    for fmt in ("gguf", "onnx"):
        with Runtime.open(root / "app", "EU", backend=fmt, trusted_key=root / "k.pub") as rt:
            tokens[fmt, "EU"] = rt.generate("Hello", **ARGS).tokens
            tokens[fmt, "US"] = rt.generate("Hello", policy="US", **ARGS).tokens
            assert tokens[fmt, "EU"] != tokens[fmt, "US"]  # else a swap could not show
    return root, tokens


@pytest.fixture()
def app(signed, tmp_path):
    root, _ = signed
    return shutil.copytree(root / "app", tmp_path / "app"), root / "k.pub"


def _adapter(bundle, name, fmt):
    return bundle / "adapters" / f"{name}.{'gguf' if fmt == 'gguf' else 'onnx_adapter'}"


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_a_file_renamed_over_a_checked_one_during_open_is_not_what_runs(app, signed, fmt, monkeypatch):
    bundle, pub = app
    load = Runtime._load_bundle.__func__

    def swap_then_load(cls, *a, **kw):  # after the hashes were checked, before the engine reads
        tmp = bundle / "evil.tmp"
        shutil.copy(_adapter(bundle, "standard", fmt), tmp)
        os.replace(tmp, _adapter(bundle, "strict", fmt))
        return load(cls, *a, **kw)

    monkeypatch.setattr(Runtime, "_load_bundle", classmethod(swap_then_load))
    with Runtime.open(bundle, "EU", backend=fmt, trusted_key=pub) as rt:
        assert rt.generate("Hello", **ARGS).tokens == signed[1][fmt, "EU"]  # the checked bytes ran
        assert rt.adapters["strict"] == _adapter(bundle, "strict", fmt)  # messages name the real file
    monkeypatch.undo()
    with pytest.raises(IntegrityError, match=r"adapters/strict.* (does not match its sha256|has \d+ bytes, the manifest says)"):
        Runtime.open(bundle, "EU", backend=fmt, trusted_key=pub)


def test_the_manifest_is_read_once_from_the_signed_bytes(app, signed, monkeypatch):
    bundle, pub = app
    import sgedge.bundle_verify as bv

    check = bv.check_signature

    def check_then_swap(b, m, data, key):
        out = check(b, m, data, key)
        raw = json.loads(data)
        raw["policies"]["EU"] = [{"adapter": "standard", "scale": 1.0}]
        (bundle / "sgedge.json").write_text(json.dumps(raw))  # unsigned, after the check
        return out

    monkeypatch.setattr(bv, "check_signature", check_then_swap)
    with Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub) as rt:
        assert [a.name for a in rt.active] == ["strict"]
        assert rt.generate("Hello", **ARGS).tokens == signed[1]["gguf", "EU"]


def _same_size_other_bytes(path, keep_times=True):
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last tensor byte: the header stays valid
    return data, st


def test_a_replaced_base_with_its_old_size_and_mtime_misses_the_hash_cache(app):
    bundle, pub = app
    with Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub):
        pass  # the base's hash is cached now
    base = bundle / "base.gguf"
    data, st = _same_size_other_bytes(base)
    with open(base, "r+b") as f:  # rewritten in place: same inode, size; mtime set back
        f.write(data)
    os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IntegrityError, match=r"base \(gguf\): base.gguf does not match its sha256"):
        Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub)


def test_a_forged_hash_cache_others_can_write_is_not_used(app, tmp_path, monkeypatch):
    bundle, pub = app
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("SGEDGE_CACHE_DIR", str(shared))
    base = bundle / "base.gguf"
    want = sha256_file(base)
    data, _ = _same_size_other_bytes(base)
    base.write_bytes(data)
    # The attacker writes the entry the cache would look up: the replaced file -> the signed hash.
    (shared / "hash-cache.json").write_text(json.dumps({HashCache.key(base): want}))
    assert not HashCache().usable
    with pytest.raises(IntegrityError, match=r"base.gguf does not match its sha256"):
        Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub)
    with pytest.raises(InputError, match=r"is not a folder only you can write"):
        base.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0xFF]))  # the signed bytes again
        Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub, mode="fused")


def test_the_fused_cache_is_never_in_the_bundle_folder(app, signed):
    bundle, pub = app
    planted = bundle / ".fused"
    planted.mkdir()
    shutil.copy(_adapter(bundle, "standard", "gguf"), planted / "anything.gguf")
    with Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub, mode="fused") as rt:
        assert rt.fused_path is not None and bundle not in rt.fused_path.parents
        assert rt.generate("Hello", **ARGS).tokens == signed[1]["gguf", "EU"]


def test_an_unlisted_file_in_an_onnx_folder_fails_verification(app):
    bundle, pub = app
    (bundle / "base_onnx" / "extra.onnx").write_bytes(b"not listed")
    with pytest.raises(IntegrityError, match=r"base_onnx/extra.onnx is in the artifact's folder but not in the "
                                             r"manifest"):
        Runtime.open(bundle, "EU", backend="onnx", trusted_key=pub)


def test_bundle_verify_checks_the_binding_not_only_the_hashes(app, tiny, capsys, tmp_path):
    bundle, pub = app
    other = tiny("qwen3")  # an adapter of another base, re-hashed into the manifest
    shutil.copy(other.a1, _adapter(bundle, "strict", "gguf"))
    raw = json.loads((bundle / "sgedge.json").read_text())
    f = raw["adapters"]["strict"]["formats"]["gguf"]["files"][0]
    f["sha256"], f["size"] = sha256_file(_adapter(bundle, "strict", "gguf")), other.a1.stat().st_size
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    assert main(["bundle", "verify", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "does not belong to base" in err and "adapters/strict.gguf" in err and "/proc/" not in err


@pytest.mark.parametrize("garbage", [b"", b"{", b"[1, 2]", b'{"k": 5}', b"\xff\xfe" * 100])
def test_a_damaged_hash_cache_costs_a_hash_never_a_start(app, garbage):
    bundle, pub = app
    (HashCache().path).parent.mkdir(parents=True, exist_ok=True)
    HashCache().path.write_bytes(garbage)
    with Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub) as rt:
        assert rt.generate("Hello", **ARGS).tokens
