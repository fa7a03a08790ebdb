"""Property-based fuzzing (hypothesis) of every file sgedge reads from a user or an
attacker: GGUF headers, .onnx_adapter files, manifests, signatures, PEFT configs and
tokenizer files. The property: a clear SgedgeError or success; never another exception,
a crash or a hang. Files that pass sgedge's checks are then loaded by llama.cpp in a
child process, where an abort shows as a signal.

CI runs a bounded number of examples; SGEDGE_FUZZ=long runs a campaign (issue 25).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgedge.errors import SgedgeError

LONG = os.environ.get("SGEDGE_FUZZ") == "long"
EXAMPLES = 2000 if LONG else 60
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, span: int) -> bytes:
    """`data` with bytes at positions (within its first `span` bytes) replaced, then cut."""
    out = bytearray(data)
    for pos, value in edits:
        out[pos % min(span, len(out))] = value
    return bytes(out[:cut] if cut is not None else out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)
CUTS = st.one_of(st.none(), st.integers(0, 1 << 16))


class _Inputs(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "<fuzz inputs>"


@pytest.fixture(scope="module")
def files(tiny, tiny_onnx, tmp_path_factory):
    t = tiny("qwen2")
    out = tmp_path_factory.mktemp("fuzz")
    return _Inputs({"base": t.gguf.read_bytes(), "adapter": t.a1.read_bytes(),
            "onnx_adapter": tiny_onnx("qwen2").a1.read_bytes(), "dir": out, "tiny": t,
            "onnx_base": tiny_onnx("qwen2").base})


@FUZZ
@given(edits=EDITS, cut=CUTS, which=st.sampled_from(["base", "adapter"]))
def test_gguf_headers(files, edits, cut, which):
    from sgedge.formats.gguf_meta import read_gguf_info
    from sgedge.runtime.gguf_preflight import preflight_gguf

    data = _mutate(files[which], edits, cut, 20_000 if which == "adapter" else 400_000)
    path = files["dir"] / f"h-{which}.gguf"
    path.write_bytes(data)
    for check in (read_gguf_info, lambda p: preflight_gguf(p, base=which == "base")):
        try:
            check(path)
        except SgedgeError:
            pass


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_onnx_adapter_files(files, edits, cut):
    from sgedge.formats.onnx_adapter_io import read_adapter, read_adapter_shapes
    from sgedge.runtime.onnx_backend import check_onnx_adapter, read_base_meta

    path = files["dir"] / "a.onnx_adapter"
    path.write_bytes(_mutate(files["onnx_adapter"], edits, cut, 4096))
    for check in (read_adapter_shapes, read_adapter,
                  lambda p: check_onnx_adapter(files["onnx_base"], read_base_meta(files["onnx_base"]), p)):
        try:
            check(path)
        except SgedgeError:
            pass


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False)
                    | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def _demo_manifest() -> dict:
    return json.loads((Path(__file__).resolve().parents[1] / "sgedge" / "demo" / "bundle" / "sgedge.json").read_text())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _replace(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return obj


MANIFEST = _demo_manifest()
MANIFEST_PATHS = list(_paths(MANIFEST))


@FUZZ
@given(where=st.sampled_from(MANIFEST_PATHS), value=JSON, raw=st.binary(max_size=64))
def test_manifests(where, value, raw):
    from sgedge.manifest import loads_manifest

    for data in (json.dumps(_replace(MANIFEST, where, value)).encode(), raw):
        try:
            loads_manifest(data)
        except SgedgeError:
            pass


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    from sgedge.signing import keygen

    d = tmp_path_factory.mktemp("sig")
    keygen(d / "k.key", d / "k.pub")
    (d / "sgedge.json").write_text("{}")
    return d


@FUZZ
@given(sig=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                     st.builds(lambda kid, s: json.dumps({"algorithm": "ed25519", "key_id": kid, "signature": s}).encode(),
                               st.text(max_size=20), st.text(max_size=100) | st.binary(max_size=64).map(
                                   lambda b: base64.b64encode(b).decode()))))
def test_signatures(signed, sig):
    from sgedge.signing import SignatureError, signature_status, verify_signature

    (signed / "sgedge.json.sig").write_bytes(sig)
    with pytest.raises(SignatureError):
        verify_signature(signed, b"{}", signed / "k.pub")
    status = signature_status(signed, b"{}", signed / "k.pub")
    assert status["valid"] is False


PEFT_KEYS = ["r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "peft_type", "bias",
             "target_modules", "modules_to_save", "init_lora_weights", "layer_replication", "lora_bias"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(PEFT_KEYS), JSON, max_size=3), raw=st.binary(max_size=40))
def test_peft_configs(files, changes, raw):
    from sgedge.exporters.peft_adapter import load_peft_adapter

    lora = files["dir"] / "lora"
    if not lora.exists():
        shutil.copytree(files["tiny"].lora1, lora)
    cfg = json.loads((files["tiny"].lora1 / "adapter_config.json").read_text())
    for data in (json.dumps({**cfg, **changes}).encode(), raw):
        (lora / "adapter_config.json").write_bytes(data)
        try:
            load_peft_adapter(lora)
        except SgedgeError:
            pass


TOKENIZER_PATHS: list = []


@FUZZ
@given(pick=st.integers(0, 1 << 30), value=JSON)
def test_tokenizer_files(files, pick, value):
    from sgedge.exporters.gguf_vocab import read_vocab

    hf = files["dir"] / "hf"
    if not hf.exists():
        shutil.copytree(files["tiny"].hf, hf)
    tj = json.loads((files["tiny"].hf / "tokenizer.json").read_text())
    if not TOKENIZER_PATHS:  # the structure, not every vocabulary entry
        TOKENIZER_PATHS.extend(p for p in _paths(tj) if len(p) < 3 or p[:2] != ("model", "vocab") or len(p) == 3
                               and hash(p[2]) % 50 == 0)
    where = TOKENIZER_PATHS[pick % len(TOKENIZER_PATHS)]
    (hf / "tokenizer.json").write_text(json.dumps(_replace(tj, where, value)))
    n_vocab = json.loads((hf / "config.json").read_text())["vocab_size"]
    try:
        read_vocab(hf, n_vocab)
    except SgedgeError:
        pass


def test_mutated_gguf_files_that_pass_the_checks_never_abort_llama_cpp(files):
    """A seeded campaign: every mutated base or adapter that sgedge's checks let through
    is loaded (and run) by llama.cpp in one child process; an abort fails the test."""
    from sgedge.runtime.gguf_preflight import preflight_gguf

    rng = random.Random(1234)
    out = files["dir"] / "survivors"
    out.mkdir(exist_ok=True)
    survivors: list[tuple[str, str]] = []
    for i in range(400 if LONG else 40):
        which = rng.choice(["base", "adapter"])
        data = bytearray(files[which])
        span = 20_000 if which == "adapter" else 400_000
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(span, len(data)))] = rng.randrange(256)
        path = out / f"{i}-{which}.gguf"
        path.write_bytes(bytes(data))
        try:
            preflight_gguf(path, base=which == "base")
        except SgedgeError:
            continue
        survivors.append((which, str(path)))
    base, adapter = str(files["tiny"].gguf), str(files["tiny"].a1)
    code = f"""
import sys
from sgedge.runtime.api import Runtime
from sgedge.errors import SgedgeError
for which, path in {survivors!r}:
    print(path, flush=True)
    try:
        model, adapters = (path, [{adapter!r}]) if which == "base" else ({base!r}, [path])
        with Runtime.open(model, adapters=adapters, allow_unbound_adapters=True) as rt:
            rt.generate("Hello \\u2603 caf\\u00e9", max_tokens=2)
    except SgedgeError:
        pass
print("done", flush=True)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    last = run.stdout.strip().splitlines()[-1:] or ["nothing"]
    assert run.returncode == 0 and last == ["done"], (run.returncode, last, run.stderr[-1500:])
