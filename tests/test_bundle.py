"""Bundles: one manifest maps regions to safety adapters; everything wrong fails closed."""

from __future__ import annotations

import json
import shutil

import pytest

from sgedge.bundle_verify import IntegrityError, verify_bundle
from sgedge.cli import main
from sgedge.errors import AdapterMismatchError, InputError
from sgedge.exporters.bundle import add_adapter, create_bundle, set_policy
from sgedge.manifest import ManifestError, PolicyItem, read_manifest
from sgedge.runtime.api import Runtime
from sgedge.signing import SignatureError, keygen, sign_bundle
from sgedge.testing.synthetic import build_lora, build_model

POLICIES = {
    "US": (PolicyItem("standard", 1.0),),
    "EU": (PolicyItem("strict", 1.0),),
    "KIDS": (PolicyItem("strict", 1.0), PolicyItem("standard", 0.5)),
}


@pytest.fixture(scope="module")
def made(tiny, tmp_path_factory):
    t = tiny("qwen2")
    root = tmp_path_factory.mktemp("bundle")
    bundle = root / "app"
    create_bundle(bundle, t.hf, {"standard": t.lora1, "strict": t.lora2}, POLICIES, default_policy="US",
                  formats=["gguf", "onnx"], gguf_dtype="f32")
    return t, bundle


@pytest.fixture()
def bundle(made, tmp_path):
    """A private copy each test may break."""
    return shutil.copytree(made[1], tmp_path / "app")


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
@pytest.mark.parametrize("region", ["US", "EU", "KIDS"])
def test_region_gives_the_same_tokens_as_explicit_adapters(made, capsys, fmt, region):
    _, bundle = made
    m, _ = read_manifest(bundle)
    argv = ["--max-tokens", "8", "--json", "--backend", fmt, "How do I bake bread?"]
    assert main(["run", "--bundle", str(bundle), "--region", region, *argv]) == 0
    via_bundle = json.loads(capsys.readouterr().out)
    adapters = []
    for it in POLICIES[region]:
        adapters += ["--adapter", f"{bundle / m.adapters[it.adapter].formats[fmt].path}:{it.scale}"]
    assert main(["run", "--model", str(bundle / m.base.formats[fmt].path), *adapters, *argv]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert via_bundle["tokens"] == direct["tokens"]
    assert via_bundle["policy"] == region
    assert [a["scale"] for a in via_bundle["adapters"]] == [it.scale for it in POLICIES[region]]


def test_python_api_switches_policy_per_call(made):
    _, bundle = made
    with Runtime.open(bundle, region="EU") as rt:
        assert rt.policy == "EU"
        assert set(rt.policies) == {"US", "EU", "KIDS"}
        assert set(rt.adapters) == {"standard", "strict"}
        eu = rt.generate("Hello", max_tokens=8).tokens
        us = rt.generate("Hello", max_tokens=8, policy="US").tokens
        assert rt.generate("Hello", max_tokens=8, policy="EU").tokens == eu
        assert us != eu
        with pytest.raises(InputError, match=r"forbids running without a safety adapter"):
            rt.generate("Hello", policy=[])
        with pytest.raises(InputError, match=r"unknown policy 'XX' \(known: EU, KIDS, US\)"):
            rt.generate("Hello", policy="XX")
        assert "".join(rt.stream("Hello", max_tokens=8, policy="EU"))


def test_region_from_environment(made, monkeypatch):
    monkeypatch.setenv("SGEDGE_REGION", "KIDS")
    with Runtime.open(made[1]) as rt:
        assert rt.policy == "KIDS"


def test_unknown_region_uses_default_only_when_declared(bundle):
    with Runtime.open(bundle, region="BR") as rt:
        assert rt.policy == "US"
    set_policy(bundle, "EU", POLICIES["EU"])  # keeps the default
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["default_policy"] = None
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"unknown region/policy 'BR' and no default policy .*known: EU, KIDS, US"):
        Runtime.open(bundle, region="BR")


def test_region_keys_match_ignoring_case(bundle, capsys):
    # "eu" typed in lower case is the EU policy, not a silent fall to the default one.
    with Runtime.open(bundle, region="eu") as rt:
        assert rt.policy == "EU" and [a.name for a in rt.active] == ["strict"]
        assert rt.policy_key("kids") == "KIDS" and rt.policy_key("BR") is None and rt.policy_key(" kids\n") == "KIDS"
        assert "".join(rt.stream("Hello", max_tokens=4, policy="us"))
    assert main(["run", "--bundle", str(bundle), "--region", "kids", "--max-tokens", "2", "--json", "Hi"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["policy"] == "KIDS" and out.err == ""
    with pytest.raises(InputError, match=r"policy 'eu' would stand next to 'EU': keys match ignoring case"):
        set_policy(bundle, "eu", POLICIES["US"])
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["policies"]["eu"] = raw["policies"]["US"]
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"policy keys EU and eu differ only in case"):
        Runtime.open(bundle, region="EU")


def test_default_policy_standing_in_for_a_region_is_announced(bundle, capsys):
    assert main(["run", "--bundle", str(bundle), "--region", "BR", "--max-tokens", "2", "Hi"]) == 0
    err = capsys.readouterr().err
    assert "no policy for 'BR'; its default policy 'US' applies (policies: EU, KIDS, US)" in err
    assert main(["bundle", "fuse", str(bundle), "--policy", "BR"]) == 1
    assert "bundle has no policy 'BR' (known: EU, KIDS, US)" in capsys.readouterr().err
    assert not (bundle / ".fused").exists()  # nothing fused for the default policy on the way


def test_bare_base_needs_permission(bundle, capsys):
    assert main(["run", "--bundle", str(bundle), "--no-adapter", "Hi"]) == 1
    assert "forbids running without a safety adapter" in capsys.readouterr().err
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["allow_no_adapter"] = True
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    assert main(["run", "--bundle", str(bundle), "--no-adapter", "--max-tokens", "3", "--json", "Hi"]) == 0
    assert json.loads(capsys.readouterr().out)["adapters"] == []


def test_missing_adapter_file_stops_startup(bundle):
    m, _ = read_manifest(bundle)
    (bundle / m.adapters["strict"].formats["gguf"].path).unlink()
    with pytest.raises(IntegrityError, match=r"adapter 'strict': adapters/strict.gguf is missing"):
        Runtime.open(bundle, region="US")


def test_tampered_adapter_byte_stops_startup(bundle, capsys):
    m, _ = read_manifest(bundle)
    p = bundle / m.adapters["standard"].formats["onnx"].path
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"does not match its sha256"):
        Runtime.open(bundle, region="US", backend="onnx")
    assert main(["bundle", "verify", str(bundle)]) == 1
    assert "standard" in capsys.readouterr().err


def test_tampered_base_caught_by_full_verify(bundle):
    m, _ = read_manifest(bundle)
    p = bundle / m.base.formats["gguf"].path
    data = bytearray(p.read_bytes())
    data[-5] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"base \(gguf\): base.gguf does not match"):
        Runtime.open(bundle, region="US", verify="full")


def test_adapter_of_other_base_stops_startup(bundle, tmp_path):
    other = build_model("qwen2", tmp_path / "other", seed=77)
    lora = build_lora(other, tmp_path / "lora")
    from sgedge.exporters.gguf_adapter import export_adapter_gguf

    m, _ = read_manifest(bundle)
    target = bundle / m.adapters["standard"].formats["gguf"].path
    export_adapter_gguf(lora, target)
    # A careless re-hash of the manifest: hashes fine, binding wrong.
    raw = json.loads((bundle / "sgedge.json").read_text())
    from sgedge.bundle_verify import sha256_file

    f = raw["adapters"]["standard"]["formats"]["gguf"]["files"][0]
    f["sha256"], f["size"] = sha256_file(target), target.stat().st_size
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(AdapterMismatchError, match=r"exported for base sha256:"):
        Runtime.open(bundle, region="US")


def test_unknown_schema_version_refused(bundle):
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["schema_version"] = 99
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"schema version 99; this sgedge reads version 1"):
        Runtime.open(bundle, region="US")


@pytest.mark.parametrize("path", ["../outside.gguf", "/tmp/outside.gguf", "adapters/../../outside.gguf",
                                  "C:\\outside.gguf", "adapters\\..\\..\\outside.gguf", ""])
def test_manifest_paths_outside_the_bundle_refused(bundle, path):
    # The manifest (signed or not) may only name files inside its bundle folder.
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["adapters"]["strict"]["formats"]["gguf"]["files"][0]["path"] = path
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"adapter 'strict'.formats.gguf.files\[0\] (names .*, outside the bundle "
                                            r"folder|path must be a non-empty string)"):
        Runtime.open(bundle, region="US")


def test_a_bundle_runs_in_the_format_whose_engine_is_installed(made, monkeypatch):
    import importlib.util

    from sgedge.runtime.api import bundle_backend

    _, bundle = made
    with Runtime.open(bundle, region="US") as rt:
        assert rt.backend == "gguf" and rt.notes == []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with Runtime.open(bundle, region="US") as rt:
        assert rt.backend == "onnx"
        assert rt.notes == ["llama-cpp-python is not installed, so the bundle's onnx base runs instead of its gguf "
                            "one (pip install 'sgedge[runtime]' for both)"]
    assert bundle_backend(["gguf"]) == ("gguf", None)  # its loader names the missing package
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert bundle_backend(["gguf", "onnx"], "dml") == ("onnx", None)
    assert bundle_backend(["onnx", "gguf"]) == ("gguf", None)
    with pytest.raises(InputError, match=r"no base this sgedge can run \(formats: coreml\)"):
        bundle_backend(["coreml"])


def test_signatures(bundle, tmp_path, capsys):
    keygen(tmp_path / "pub.key", tmp_path / "pub.pub")
    keygen(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(SignatureError, match=r"not signed"):
        Runtime.open(bundle, region="US", trusted_key=tmp_path / "pub.pub")
    sign_bundle(bundle, tmp_path / "pub.key")
    with Runtime.open(bundle, region="US", trusted_key=tmp_path / "pub.pub") as rt:
        assert rt.policy == "US"
    with pytest.raises(SignatureError, match=r"not by the trusted key"):
        Runtime.open(bundle, region="US", trusted_key=tmp_path / "other.pub")
    assert main(["bundle", "verify", str(bundle), "--trusted-key", str(tmp_path / "pub.pub")]) == 0
    capsys.readouterr()
    # Edit the manifest after signing: a policy now points elsewhere.
    text = (bundle / "sgedge.json").read_text().replace('"default_policy": "US"', '"default_policy": "EU"')
    (bundle / "sgedge.json").write_text(text)
    with pytest.raises(SignatureError, match=r"manifest was changed after signing"):
        Runtime.open(bundle, region="US", trusted_key=tmp_path / "pub.pub")
    assert main(["run", "--bundle", str(bundle), "--trusted-key", str(tmp_path / "pub.pub"), "Hi"]) == 1
    assert "changed after signing" in capsys.readouterr().err


def test_required_signature_without_key_refused(bundle):
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["require_signature"] = True
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match=r"requires a signature check"):
        Runtime.open(bundle, region="US")


def test_add_adapter_patches_without_touching_the_base(bundle, tiny, tmp_path, capsys):
    t = tiny("qwen2")
    base_before = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir() if p.is_file()}
    before, _ = read_manifest(bundle)
    patch = build_lora(t.hf, tmp_path / "patch", r=4, seed=33)
    entry = add_adapter(bundle, "strict", patch, description="stricter")
    after, _ = read_manifest(bundle)
    assert entry.version == "2" and after.adapters["strict"].description == "stricter"
    assert after.base == before.base
    assert base_before["base.gguf"] == (bundle / "base.gguf").stat().st_mtime_ns
    for art in before.adapters["strict"].formats.values():
        assert not (bundle / art.path).exists(), "the replaced adapter file is removed"
    verify_bundle(bundle, verify="full")
    assert main(["bundle", "set-policy", str(bundle), "TEEN=strict:0.8+standard:0.2"]) == 0
    assert main(["bundle", "inspect", str(bundle), "--json"]) == 0
    capsys.readouterr()
    assert main(["bundle", "inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "TEEN" in out and "strict:0.8 + standard:0.2" in out and "US" in out and "(default)" in out
    with Runtime.open(bundle, region="TEEN") as rt:
        assert [a.name for a in rt.active] == ["strict", "standard"]


def test_scales_that_are_not_finite_numbers_are_refused(bundle, capsys):
    # A NaN or infinite scale turns every logit into NaN (the run printed "!!!!"), so it is
    # refused wherever a scale comes in: manifest, set-policy, the Python API.
    assert main(["bundle", "set-policy", str(bundle), "X=strict:inf"]) == 1
    assert "scale 'inf' is not a finite number" in capsys.readouterr().err
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["policies"]["US"][0]["scale"] = float("nan")  # json writes NaN, which json reads back
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"sgedge.json: NaN is not a JSON number"):
        Runtime.open(bundle, region="EU")
    raw["policies"]["US"][0]["scale"] = "half"
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"policy 'US'\[0\].scale must be a number finite in float32 \(\|x\| <= 3.4e38\), not 'half'"):
        Runtime.open(bundle, region="EU")
    raw["policies"]["US"][0]["scale"] = 1.0
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with Runtime.open(bundle, region="EU") as rt:
        with pytest.raises(InputError, match=r"adapter 'standard': scale inf is not a finite number"):
            rt.generate("Hi", max_tokens=2, adapters=[("standard", float("inf"))])
        with pytest.raises(InputError, match=r"adapter 'standard': scale 'x' is not a number"):
            rt.generate("Hi", max_tokens=2, adapters=[("standard", "x")])


def test_set_policy_with_unknown_adapter_refused(bundle, capsys):
    assert main(["bundle", "set-policy", str(bundle), "X=nope"]) == 1
    assert "unknown adapter(s) nope" in capsys.readouterr().err


def test_create_refuses_bad_policy_before_exporting(tiny, tmp_path):
    t = tiny("qwen2")
    with pytest.raises(InputError, match=r"policy 'EU' names adapter 'strict', which is not among --adapter"):
        create_bundle(tmp_path / "b", t.hf, {"standard": t.lora1}, {"EU": (PolicyItem("strict"),)})
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("name", "message"), [
    ("../escape", "may hold only letters, digits"), ("my adapter", "may hold only letters, digits"),
    ("a+b", "may hold only letters, digits"), (".hidden", "must start with a letter or digit"),
    ("NUL", "reserved device name on Windows"), ("com1.v2", "reserved device name on Windows"),
])
def test_create_refuses_adapter_names_that_cannot_be_files_or_policy_items(tiny, tmp_path, name, message):
    t = tiny("qwen2")
    with pytest.raises(InputError, match=message):
        create_bundle(tmp_path / "b", t.hf, {name: t.lora1}, {})
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []


def test_adapter_names_that_differ_only_in_case_are_refused(bundle, tiny, tmp_path, capsys):
    t = tiny("qwen2")
    with pytest.raises(InputError, match=r"adapter names Std and std differ only in case"):
        create_bundle(tmp_path / "b", t.hf, {"std": t.lora1, "Std": t.lora2}, {})
    before = sorted(p.name for p in (bundle / "adapters").iterdir())
    assert main(["bundle", "add-adapter", str(bundle), f"STRICT={t.lora2}"]) == 1
    err = capsys.readouterr().err
    assert "STRICT and strict differ only in case" in err and "give its exact name" in err
    assert sorted(p.name for p in (bundle / "adapters").iterdir()) == before
    # A hand-edited manifest is held to the same rules.
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["adapters"]["../strict"] = raw["adapters"].pop("strict")
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"adapter name '../strict' may hold only"):
        Runtime.open(bundle, region="US")


def test_onnx_slots_on_the_adapters_targets(tiny, tmp_path, capsys):
    # --onnx-lora-targets adapters: slots where the bundle's adapters need them (q/v ->
    # one packed q|k|v slot per layer); a later adapter needing more is refused, intact.
    t = tiny("qwen2")
    qv = build_lora(t.hf, tmp_path / "qv", r=4, alpha=8, targets=["q_proj", "v_proj"], seed=5)
    out = tmp_path / "b"
    assert main(["bundle", "create", str(out), "--base", str(t.hf), "--adapter", f"safety={qv}",
                 "--policy", "US=safety", "--default-policy", "US", "--formats", "onnx",
                 "--onnx-lora-targets", "adapters"]) == 0
    meta = json.loads((out / "base_onnx" / "sgedge_base.json").read_text())
    assert {k.rsplit(".", 1)[-1] for k in meta["slots"]} == {"qkv_proj"}
    capsys.readouterr()
    assert main(["bundle", "inspect", str(out)]) == 0
    assert "LoRA slots on q_proj, k_proj, v_proj\n" in capsys.readouterr().out
    with Runtime.open(out, region="US") as rt:
        assert rt.generate("Hello", max_tokens=3).tokens
    before = (out / "sgedge.json").read_text()
    with pytest.raises(InputError, match=r"the base has no LoRA slots for o_proj, gate_proj, up_proj, down_proj "
                                         r"\(8 modules, e.g. model.layers.0.attn.o_proj\); .*--onnx-lora-targets all"):
        add_adapter(out, "strict", t.lora2)
    assert (out / "sgedge.json").read_text() == before
    with pytest.raises(InputError, match=r"--onnx-lora-targets applies to bundles with --formats onnx"):
        create_bundle(tmp_path / "g", t.hf, {"safety": qv}, {"US": (PolicyItem("safety"),)}, formats=["gguf"],
                      onnx_lora_targets="adapters")
    assert not (tmp_path / "g").exists()


def test_base_hash_is_cached_between_starts(made, tmp_path, monkeypatch):
    monkeypatch.setenv("SGEDGE_CACHE_DIR", str(tmp_path / "cache"))
    first = verify_bundle(made[1], formats=["gguf"])
    second = verify_bundle(made[1], formats=["gguf"])
    assert first.base_hashed == 1 and second.base_hashed == 0
    assert verify_bundle(made[1], formats=["gguf"], verify="full").base_hashed == 1


def test_interrupted_add_adapter_leaves_the_bundle_intact(bundle, tiny, tmp_path, monkeypatch):
    import sgedge.exporters.bundle as bundle_mod

    before = (bundle / "sgedge.json").read_bytes()
    files_before = sorted(p.name for p in (bundle / "adapters").iterdir())

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        add_adapter(bundle, "strict", build_lora(tiny("qwen2").hf, tmp_path / "p", r=4, seed=3))
    assert (bundle / "sgedge.json").read_bytes() == before
    assert sorted(p.name for p in (bundle / "adapters").iterdir()) == files_before
    verify_bundle(bundle, verify="full")


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_threads_per_policy_share_one_runtime_without_cross_talk(made, fmt):
    import threading

    with Runtime.open(made[1], "US", backend=fmt) as rt:
        single = {k: rt.generate("Hello there", max_tokens=12, policy=k).tokens for k in POLICIES}
        results: dict[str, list] = {k: [] for k in POLICIES}

        def worker(key):
            for _ in range(3):
                results[key].append(rt.generate("Hello there", max_tokens=12, policy=key).tokens)

        threads = [threading.Thread(target=worker, args=(k,)) for k in POLICIES]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert all(r == [single[k]] * 3 for k, r in results.items())
        assert len({tuple(v) for v in single.values()}) == 3


def test_bundle_for_cuda_fails_closed_without_it(tiny, tmp_path, capsys):
    # `bundle create --onnx-ep cuda` builds the ONNX base for ONNX Runtime's CUDA
    # provider; on a machine without it start-up stops and says what to do.
    t = tiny("qwen2")
    argv = (f"bundle create {tmp_path / 'app'} --base {t.hf} --adapter standard={t.lora1} --policy US=standard "
            "--default-policy US --formats onnx --onnx-dtype fp16 --onnx-ep cuda")
    assert main(argv.split()) == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "app" / "base_onnx" / "sgedge_base.json").read_text())
    assert (meta["ep"], meta["dtype"]) == ("cuda", "fp16")
    assert main(["run", "--bundle", str(tmp_path / "app"), "--device", "cpu", "Hi"]) == 1
    assert "was exported for cuda (--ep cuda) and --device cpu was asked for" in capsys.readouterr().err


def test_onnx_adapter_of_other_base_stops_fused_startup(bundle, tmp_path):
    # Fused mode checks the adapters before merging from their headers and the base's
    # metadata (no engine loaded, so no provider needed); a wrong one still stops it.
    from sgedge.bundle_verify import sha256_file
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    other = build_model("qwen2", tmp_path / "other", seed=77)
    other_base = export_base_onnx(other, tmp_path / "other_onnx").path
    m, _ = read_manifest(bundle)
    target = bundle / m.adapters["standard"].formats["onnx"].path
    export_adapter_onnx(build_lora(other, tmp_path / "lora"), target, base=other_base)
    raw = json.loads((bundle / "sgedge.json").read_text())
    f = raw["adapters"]["standard"]["formats"]["onnx"]["files"][0]
    f["sha256"], f["size"] = sha256_file(target), target.stat().st_size
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    with pytest.raises(AdapterMismatchError, match=r"does not belong to base .*exported for another base"):
        Runtime.open(bundle, region="US", backend="onnx", mode="fused")


def test_inspect_says_whether_and_by_whom_the_bundle_is_signed(bundle, tmp_path, capsys):
    keygen(tmp_path / "pub.key", tmp_path / "pub.pub")
    keygen(tmp_path / "other.key", tmp_path / "other.pub")
    assert main(["bundle", "inspect", str(bundle)]) == 0
    assert "signature: none" in capsys.readouterr().out
    key = sign_bundle(bundle, tmp_path / "pub.key")
    assert main(["bundle", "inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert f"signature: by key {key}" in out and "not checked" in out
    assert main(["bundle", "inspect", str(bundle), "--trusted-key", str(tmp_path / "pub.pub")]) == 0
    assert "valid with the trusted key" in capsys.readouterr().out
    assert main(["bundle", "inspect", str(bundle), "--trusted-key", str(tmp_path / "other.pub"), "--json"]) == 1
    sig = json.loads(capsys.readouterr().out)["signature"]
    assert sig["signed"] and sig["checked"] and sig["valid"] is False and "not by the trusted key" in sig["problem"]
    raw = json.loads((bundle / "sgedge.json").read_text())
    raw["allow_no_adapter"] = True  # changed after signing
    (bundle / "sgedge.json").write_text(json.dumps(raw))
    assert main(["bundle", "inspect", str(bundle), "--trusted-key", str(tmp_path / "pub.pub")]) == 1
    assert "NOT VALID" in capsys.readouterr().out
    (bundle / "sgedge.json.sig").write_text("[1, 2]")  # malformed: a clear line, not a traceback
    assert main(["bundle", "inspect", str(bundle), "--trusted-key", str(tmp_path / "pub.pub")]) == 1
    assert "is malformed" in capsys.readouterr().out


def test_f16_adapters_halve_the_files_and_run_as_the_f32_ones(tiny, tmp_path):
    from sgedge.formats.gguf_meta import read_gguf_info

    t = tiny("llama")
    replies = {}
    for dtype in ("f32", "f16"):
        out = tmp_path / dtype
        assert main(["bundle", "create", str(out), "--base", str(t.hf), "--adapter", f"safety={t.lora1}",
                     "--policy", "US=safety", "--default-policy", "US", "--adapter-dtype", dtype]) == 0
        f = out / "adapters" / "safety.gguf"
        types = {v for k, v in read_gguf_info(f).types.items() if k.endswith((".lora_a", ".lora_b"))}
        assert types == {dtype.upper()}
        with Runtime.open(out) as rt:
            replies[dtype] = (f.stat().st_size, rt.generate("Hello there", max_tokens=8).tokens)
    assert replies["f16"][0] < 0.6 * replies["f32"][0]
    assert replies["f16"][1] == replies["f32"][1]
