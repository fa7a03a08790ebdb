"""Patching safety live (issue 28): Runtime.reload() takes a re-signed bundle without
restarting; failures leave the old set serving."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from sgedge.bundle_verify import IntegrityError
from sgedge.errors import InputError
from sgedge.exporters.bundle import add_adapter, create_bundle, set_policy
from sgedge.manifest import PolicyItem
from sgedge.runtime.api import Runtime
from sgedge.signing import SignatureError, keygen, sign_bundle

ARGS = {"max_tokens": 8, "ignore_eos": True}


@pytest.fixture(scope="module")
def made(tiny, tmp_path_factory):
    t = tiny("qwen2")
    root = tmp_path_factory.mktemp("reload")
    create_bundle(root / "app", t.hf, {"standard": t.lora1}, {"US": (PolicyItem("standard", 1.0),)},
                  default_policy="US", formats=["gguf", "onnx"], gguf_dtype="f32")
    keygen(root / "k.key", root / "k.pub")
    sign_bundle(root / "app", root / "k.key")
    return t, root


@pytest.fixture()
def app(made, tmp_path):
    t, root = made
    return t, shutil.copytree(root / "app", tmp_path / "app"), root / "k.key", root / "k.pub"


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_a_patched_adapter_runs_after_reload_and_the_old_one_is_freed(app, fmt):
    t, bundle, key, pub = app
    with Runtime.open(bundle, backend=fmt, trusted_key=pub) as rt:
        before = rt.generate("Hello", **ARGS)
        v0 = rt.bundle_version
        assert before.bundle == v0
        # The safety team ships a new "standard" (here: lora2's weights) and re-signs.
        add_adapter(bundle, "standard", t.lora2)
        sign_bundle(bundle, key)
        result = rt.reload()
        assert result.changed == ("standard",) and result.previous == v0 and result.bundle != v0
        after = rt.generate("Hello", **ARGS)
        assert after.bundle == result.bundle and after.tokens != before.tokens
        assert list(rt.adapters) == ["standard"] and len(rt._backend.adapters) == 1  # the old one freed
        with Runtime.open(bundle, backend=fmt, trusted_key=pub) as fresh:  # what a restart would run
            assert fresh.generate("Hello", **ARGS).tokens == after.tokens
        assert rt.reload().unchanged


def test_a_new_adapter_and_policy_arrive_together(app):
    t, bundle, key, pub = app
    with Runtime.open(bundle, backend="gguf", trusted_key=pub) as rt:
        with pytest.raises(InputError, match=r"unknown policy 'EU'"):
            rt.generate("Hello", policy="EU", **ARGS)
        add_adapter(bundle, "strict", t.lora2)
        set_policy(bundle, "EU", (PolicyItem("strict", 1.0),))
        sign_bundle(bundle, key)
        assert rt.reload().changed == ("strict",)
        eu = rt.generate("Hello", policy="EU", **ARGS)
        assert [a.name for a in eu.adapters] == ["strict"]
        with Runtime.open(bundle, "EU", backend="gguf", trusted_key=pub) as fresh:
            assert fresh.generate("Hello", **ARGS).tokens == eu.tokens


@pytest.mark.parametrize("break_it,error", [
    ("unsigned", SignatureError), ("tampered", IntegrityError), ("base", InputError), ("unknown", InputError),
])
def test_a_bad_bundle_leaves_the_old_set_serving(app, break_it, error):
    t, bundle, key, pub = app
    with Runtime.open(bundle, backend="gguf", trusted_key=pub) as rt:
        before = rt.generate("Hello", **ARGS)
        add_adapter(bundle, "standard", t.lora2)
        raw = json.loads((bundle / "sgedge.json").read_text())
        if break_it == "tampered":
            sign_bundle(bundle, key)
            path = raw["adapters"]["standard"]["formats"]["gguf"]["path"]
            (bundle / path).write_bytes((bundle / path).read_bytes()[:-1] + b"\x00")
        elif break_it == "base":
            raw["base"]["fingerprint"] = "sha256:" + "0" * 64
            for a in raw["adapters"].values():
                a["base_fingerprint"] = raw["base"]["fingerprint"]
            (bundle / "sgedge.json").write_text(json.dumps(raw))
            sign_bundle(bundle, key)
        elif break_it == "unknown":
            raw["policies"]["US"] = [{"adapter": "nope", "scale": 1.0}]
            (bundle / "sgedge.json").write_text(json.dumps(raw))
            sign_bundle(bundle, key)
        with pytest.raises(error):
            rt.reload()
        assert rt.generate("Hello", **ARGS).tokens == before.tokens and rt.bundle_version == before.bundle
        assert len(rt._backend.adapters) == 1


def test_a_generation_in_flight_finishes_on_the_old_set(app):
    t, bundle, key, pub = app
    with Runtime.open(bundle, backend="gguf", trusted_key=pub) as rt:
        want_old = rt.generate("Hello", max_tokens=60, ignore_eos=True)
        add_adapter(bundle, "standard", t.lora2)
        sign_bundle(bundle, key)
        started, out = threading.Event(), {}

        def run():
            out["r"] = rt.generate("Hello", max_tokens=60, ignore_eos=True, on_text=lambda _: started.set())

        worker = threading.Thread(target=run)
        worker.start()
        assert started.wait(60)
        result = rt.reload()  # waits for the turn
        worker.join(60)
        assert out["r"].tokens == want_old.tokens and out["r"].bundle == result.previous
        assert rt.generate("Hello", max_tokens=60, ignore_eos=True).bundle == result.bundle


def test_reload_needs_a_bundle_in_dynamic_mode(app):
    t, bundle, key, pub = app
    with Runtime.open(t.gguf, adapters=[t.a1]) as rt:
        with pytest.raises(InputError, match=r"applies to a runtime opened from a bundle"):
            rt.reload()
    with Runtime.open(bundle, backend="gguf", trusted_key=pub, mode="fused") as rt:
        with pytest.raises(InputError, match=r"restart it to take a new bundle"):
            rt.reload()
