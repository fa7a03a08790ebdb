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


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_a_new_adapter_and_policy_arrive_together(app, fmt):
    t, bundle, key, pub = app
    with Runtime.open(bundle, backend=fmt, trusted_key=pub) as rt:
        with pytest.raises(InputError, match=r"unknown policy 'EU'"):
            rt.generate("Hello", policy="EU", **ARGS)
        add_adapter(bundle, "strict", t.lora2)
        set_policy(bundle, "EU", (PolicyItem("strict", 1.0),))
        sign_bundle(bundle, key)
        assert rt.reload().changed == ("strict",)
        eu = rt.generate("Hello", policy="EU", **ARGS)
        assert [a.name for a in eu.adapters] == ["strict"]
        with Runtime.open(bundle, "EU", backend=fmt, trusted_key=pub) as fresh:
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


def test_the_server_reloads_on_its_admin_endpoint_and_says_which_bundle_replied(app):
    from test_serve import BREAD, call, running

    t, bundle, key, pub = app
    with Runtime.open(bundle, backend="gguf", trusted_key=pub) as rt:
        lines: list[str] = []
        with running(rt, api_key="k", log=lines.append) as srv:
            auth = {"Authorization": "Bearer k"}
            status, obj = call(srv, "POST", "/v1/chat/completions", {"messages": BREAD, "max_tokens": 2},
                               headers=auth)
            v0 = obj["sgedge"]["bundle"]
            assert status == 200 and v0 == rt.bundle_version
            assert call(srv, "POST", "/admin/reload", headers={})[0] == 401  # authenticated only
            add_adapter(bundle, "standard", t.lora2)
            status, obj = call(srv, "POST", "/admin/reload", headers=auth)
            assert status == 409 and "reload refused, still serving bundle" in obj["error"]["message"]  # unsigned
            sign_bundle(bundle, key)
            status, obj = call(srv, "POST", "/admin/reload", headers=auth)
            assert status == 200 and obj["changed"] == ["standard"] and obj["previous"] == v0
            status, reply = call(srv, "POST", "/v1/chat/completions", {"messages": BREAD, "max_tokens": 2},
                                 headers=auth)
            assert reply["sgedge"]["bundle"] == obj["bundle"]
            assert call(srv, "GET", "/health")[1]["bundle"] == obj["bundle"]
        assert any("reload (POST /admin/reload) refused" in line for line in lines)
        assert any(f"bundle {v0} -> {obj['bundle']}; loaded standard" in line for line in lines)
        with running(rt) as srv:  # no key: the endpoint is off
            status, obj = call(srv, "POST", "/admin/reload")
            assert status == 403 and obj["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize("trigger", ["SIGHUP", "--watch"])
def test_sgedge_serve_reloads_on_sighup_and_watch(app, tmp_path, trigger):
    import os
    import signal
    import time
    import urllib.request

    from test_serve import _sidecar

    t, bundle, key, pub = app
    ready = tmp_path / "ready.json"
    watch = ["--watch", "0.2"] if trigger == "--watch" else []
    proc = _sidecar(ready, "--bundle", str(bundle), "--trusted-key", str(pub), "--backend", "gguf", *watch)
    try:
        url = json.loads(ready.read_text())["url"].removesuffix("/v1")

        def version() -> str:
            with urllib.request.urlopen(url + "/health", timeout=30) as r:
                return json.loads(r.read())["bundle"]

        v0 = version()
        add_adapter(bundle, "standard", t.lora2)
        sign_bundle(bundle, key)
        if trigger == "SIGHUP":
            os.kill(proc.pid, signal.SIGHUP)
        deadline = time.time() + 60
        while version() == v0 and time.time() < deadline:
            time.sleep(0.1)
        assert version() != v0
    finally:
        proc.terminate()
        err = proc.communicate(timeout=60)[1]  # closes the pipes too
    assert f"reload ({trigger}): bundle {v0} -> " in err, err[-2000:]


def test_metrics_count_requests_tokens_refusals_and_reloads(app):
    from test_serve import BREAD, call, running

    t, bundle, key, pub = app
    with Runtime.open(bundle, backend="gguf", trusted_key=pub) as rt:
        with running(rt, api_key="k") as srv:
            auth = {"Authorization": "Bearer k"}
            for _ in range(2):
                call(srv, "POST", "/v1/chat/completions", {"messages": BREAD, "max_tokens": 3,
                                                           "policy": "US"}, headers=auth)
            call(srv, "POST", "/v1/chat/completions", {"messages": BREAD, "model": "E U"}, headers=auth)  # 404
            add_adapter(bundle, "standard", t.lora2)
            sign_bundle(bundle, key)
            call(srv, "POST", "/admin/reload", headers=auth)
            assert call(srv, "GET", "/metrics")[0] == 401  # like the API: the key is needed
            import http.client

            conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
            conn.request("GET", "/metrics", headers=auth)
            resp = conn.getresponse()
            text = resp.read().decode()
            conn.close()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("sgedge_requests_total", (("policy", "US"), ("route", "/v1/chat/completions"),
                                              ("status", "200")))] == 2
    assert samples[("sgedge_tokens_total", (("kind", "completion"), ("policy", "US")))] == 6
    assert samples[("sgedge_requests_total", (("policy", "-"), ("route", "/v1/chat/completions"),
                                              ("status", "404")))] == 1
    assert samples[("sgedge_reloads_total", (("outcome", "ok"),))] == 1
    assert samples[("sgedge_request_seconds_count", (("policy", "US"),))] == 2
    bundles = [k for k in samples if k[0] == "sgedge_bundle_info"]
    assert len(bundles) == 1 and dict(bundles[0][1])["bundle"] == rt.bundle_version
