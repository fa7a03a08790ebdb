"""`sgedge import`: GGUF -> Hugging Face folder, and GGUF files without sgedge metadata
as bases (bound by sha256). Tiny models of every family; the real model is in
test_real_model.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAMILIES
from gguf_files import rewrite_gguf

from sgedge.errors import AdapterMismatchError, InputError, UnsupportedModelError


def _rewrite_gguf(src: Path, out: Path, *, keep_sgedge: bool = True, extra: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of a GGUF file, without sgedge's keys unless keep_sgedge, with `extra` tensors first."""
    return rewrite_gguf(src, out, drop=lambda k: not keep_sgedge and k.startswith("sgedge."), extra=extra)


def _strip_sgedge_metadata(src: Path, out: Path) -> Path:
    """The same GGUF without sgedge's keys: what llama.cpp's converter or a model hub gives."""
    return _rewrite_gguf(src, out, keep_sgedge=False)


def _flip_last_byte(src: Path, out: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's data
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def imported(tiny, tmp_path_factory):
    """family -> (Tiny, import of its f32 GGUF)."""
    from sgedge.exporters.gguf_import import import_gguf

    done = {}

    def get(family):
        if family not in done:
            t = tiny(family)
            done[family] = (t, import_gguf(t.gguf, tmp_path_factory.mktemp(f"imp-{family}") / "hf"))
        return done[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_export_then_import_gives_back_the_weights_and_fingerprint(imported, family):
    from safetensors.numpy import load_file

    from sgedge.binding import base_fingerprint
    from sgedge.exporters.gguf_import import import_fingerprints

    t, r = imported(family)
    original, back = load_file(str(t.hf / "model.safetensors")), load_file(str(r.path / "model.safetensors"))
    assert sorted(original) == sorted(back)
    for name, arr in original.items():
        assert back[name].dtype == arr.dtype and np.array_equal(back[name], arr), name
    assert r.fingerprint == base_fingerprint(t.hf) == base_fingerprint(r.path)
    # The fingerprint computed without writing (how a GGUF base gets one) is the same.
    assert import_fingerprints(t.gguf)["float32"] == r.fingerprint
    record = json.loads((r.path / "sgedge_import.json").read_text())
    assert record["fingerprint"] == r.fingerprint and record["source"]["sha256"] == r.source_sha256
    assert r.family == family


@pytest.mark.parametrize("family", FAMILIES)
def test_the_import_runs_and_tokenizes_as_the_original(imported, family):
    import transformers
    from reference import hf_logits, hf_model

    from sgedge.testing.synthetic import CORPUS

    t, r = imported(family)
    texts = [*CORPUS, "  two leading spaces", "<|im_start|>user\nhi<|im_end|>", "12345 678", "\n\nx y"]
    a, b = (transformers.AutoTokenizer.from_pretrained(p) for p in (t.hf, r.path))
    for text in texts:
        assert a(text).input_ids == b(text).input_ids, text
    msgs = [{"role": "user", "content": "Hello there"}]
    assert a.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        b.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = a(CORPUS[0] + CORPUS[3]).input_ids
    assert np.array_equal(hf_logits(hf_model(t.hf), ids), hf_logits(hf_model(r.path), ids))


def test_bfloat16_import_and_determinism(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    from sgedge.exporters.gguf_import import import_fingerprints, import_gguf

    t = tiny("qwen2")
    one = import_gguf(t.gguf, tmp_path / "a", dtype="bfloat16")
    two = import_gguf(t.gguf, tmp_path / "b", dtype="bfloat16")
    assert one.fingerprint == two.fingerprint == import_fingerprints(t.gguf)["bfloat16"]
    assert one.fingerprint != import_fingerprints(t.gguf)["float32"]
    original, back = load_file(str(t.hf / "model.safetensors")), load_file(str(one.path / "model.safetensors"))
    for name, tensor in original.items():
        assert back[name].dtype == torch.bfloat16 and torch.equal(back[name], tensor.to(torch.bfloat16)), name
    assert json.loads((one.path / "config.json").read_text())["torch_dtype"] == "bfloat16"


def _write_gguf(path: Path, arch: str, **fields) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, arch)
    for key, value in fields.items():
        w.add_uint32(key, value)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("case", ["adapter", "text", "truncated", "gpt2-arch", "no-hparams", "out-exists", "dtype"])
def test_bad_inputs_are_refused_and_nothing_is_written(tiny, tmp_path, case):
    from sgedge.exporters.gguf_import import import_gguf

    t = tiny("llama")
    src, out, kwargs = t.gguf, tmp_path / "out" / "hf", {}
    (tmp_path / "out").mkdir()
    expected: type[Exception] = InputError
    if case == "adapter":
        src = t.a1
    elif case == "text":
        src = tmp_path / "x.gguf"
        src.write_text("not a model")
    elif case == "truncated":
        src = tmp_path / "cut.gguf"
        src.write_bytes(t.gguf.read_bytes()[:3000])
    elif case == "gpt2-arch":
        src, expected = _write_gguf(tmp_path / "g.gguf", "gpt2"), UnsupportedModelError
    elif case == "no-hparams":
        src, expected = _write_gguf(tmp_path / "l.gguf", "llama"), UnsupportedModelError
    elif case == "out-exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        kwargs = {"dtype": "float16"}
    with pytest.raises(expected):
        import_gguf(src, out, **kwargs)
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == (["hf"] if case == "out-exists" else []), left
    if case == "out-exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_import(tiny, tmp_path, capsys):
    from sgedge.cli import main

    t = tiny("phi3")
    assert main(["import", str(t.gguf), "-o", str(tmp_path / "hf"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "base fingerprint sha256:" in out and (tmp_path / "hf" / "config.json").is_file()
    assert main(["import", str(t.a1), "-o", str(tmp_path / "hf2")]) == 1
    assert "is a LoRA adapter" in capsys.readouterr().err


@pytest.fixture(scope="module")
def foreign(tiny, tmp_path_factory):
    """A llama GGUF without sgedge metadata, its import, and adapters exported against it."""
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_import import import_gguf

    t = tiny("llama")
    root = tmp_path_factory.mktemp("foreign")
    base = _strip_sgedge_metadata(t.gguf, root / "theirs.gguf")
    hf = import_gguf(base, root / "hf").path
    # lora1 was trained on t.hf, whose weights the import reproduces bit for bit.
    via_import = export_adapter_gguf(t.lora1, root / "via-import.gguf", base=hf)
    via_file = export_adapter_gguf(t.lora1, root / "via-file.gguf", base=base)
    return t, base, hf, via_import, via_file


def test_an_adapter_exported_against_the_import_runs_on_the_original_file(foreign):
    from sgedge import binding
    from sgedge.bundle_verify import sha256_file
    from sgedge.formats.gguf_meta import read_gguf_info
    from sgedge.runtime.api import Runtime

    t, base, hf, via_import, via_file = foreign
    sha = sha256_file(base)
    for export in (via_import, via_file):
        info = read_gguf_info(export.path)
        assert info.get(binding.KEY_BASE_SOURCE_SHA256) == sha
        assert export.fingerprint == read_gguf_info(t.gguf).get(binding.KEY_BASE_FINGERPRINT)
    with Runtime.open(base, adapters=[via_import.path], exact=True, n_ctx=256) as theirs, \
            Runtime.open(t.gguf, adapters=[t.a1], exact=True, n_ctx=256) as ours:
        ids = ours.encode_prompt("Hello world, safety adapters.", raw=True)
        a, b = theirs.logits(ids), ours.logits(ids)
        assert np.array_equal(a, b)
        assert float(np.abs(theirs.logits(ids, adapters=[]) - a).max()) > 1e-2
    with Runtime.open(base, adapters=[via_file.path], verify="full", n_ctx=256) as rt:
        assert rt.generate("Hello", raw=True, max_tokens=4).tokens


def test_an_adapter_is_refused_on_another_file_and_unbound_ones_need_the_flag(foreign, tmp_path):
    from sgedge.runtime.api import Runtime

    t, base, _, via_import, _ = foreign
    changed = _flip_last_byte(base, tmp_path / "changed.gguf")
    with pytest.raises(AdapterMismatchError, match="another file"):
        Runtime.open(changed, adapters=[via_import.path], n_ctx=256)
    # t.a1 was exported against the Hugging Face folder, not an import of this file: it
    # names no source sha256, so nothing binds it to this base without the explicit flag.
    with pytest.raises(AdapterMismatchError, match="no sgedge base fingerprint"):
        Runtime.open(base, adapters=[t.a1], n_ctx=256)
    Runtime.open(base, adapters=[t.a1], n_ctx=256, allow_unbound_adapters=True).close()


def test_cli_run_binds_by_sha256_and_refuses_another_base(foreign, tmp_path, capsys):
    from sgedge.cli import main

    t, base, _, via_import, _ = foreign
    assert main(["run", "--model", str(base), "--adapter", str(via_import.path), "--raw", "Hello",
                 "--max-tokens", "3"]) == 0
    capsys.readouterr()
    other = tmp_path / "other.gguf"
    _flip_last_byte(base, other)
    assert main(["run", "--model", str(other), "--adapter", str(via_import.path), "--raw", "Hi"]) == 1
    err = capsys.readouterr().err
    assert "imported from the GGUF file with sha256" in err and "another file" in err


def test_bundle_with_the_users_gguf_as_base(foreign, tmp_path):
    from sgedge.bundle_verify import sha256_file, verify_bundle
    from sgedge.exporters.bundle import create_bundle
    from sgedge.manifest import PolicyItem
    from sgedge.runtime.api import Runtime

    t, base, hf, _, _ = foreign
    out = tmp_path / "bundle"
    m = create_bundle(out, base, {"safety": t.lora1}, {"US": [PolicyItem("safety", 1.0)]}, default_policy="US")
    assert sha256_file(out / "base.gguf") == sha256_file(base)  # the file as it is, not a re-export
    assert m.base.fingerprint == m.adapters["safety"].base_fingerprint
    verify_bundle(out)
    with Runtime.open(out) as rt, Runtime.open(base, adapters=[t.a1], allow_unbound_adapters=True) as ref:
        assert rt.policy == "US"
        assert rt.generate("Hello", raw=True, max_tokens=6).tokens == ref.generate("Hello", raw=True, max_tokens=6).tokens
    with pytest.raises(InputError, match="sgedge import"):
        create_bundle(tmp_path / "b2", base, {"safety": t.lora1}, {"US": [PolicyItem("safety", 1.0)]},
                      formats=("gguf", "onnx"))
    assert not (tmp_path / "b2").exists()


def test_mutated_headers_give_clear_errors_never_tracebacks(tiny, tmp_path):
    """Random byte flips in the header region: the import succeeds or says what is wrong
    (SgedgeError), and leaves nothing behind."""
    import random

    from sgedge.errors import SgedgeError
    from sgedge.exporters.gguf_import import import_gguf

    data = tiny("llama").gguf.read_bytes()
    rng = random.Random(7)
    (tmp_path / "out").mkdir()
    for case in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(8, 4096)] = rng.randrange(256)
        src = tmp_path / f"m{case}.gguf"
        src.write_bytes(bytes(mutated))
        out = tmp_path / "out" / f"hf{case}"
        try:
            import_gguf(src, out)
        except SgedgeError:
            assert not out.exists()
        src.unlink()
    assert all(not p.name.startswith(".") for p in (tmp_path / "out").iterdir())


@pytest.mark.parametrize("rope", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192, "rope_theta": 500000.0},  # Llama 3.1
    {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192, "rope_theta": 500000.0},  # Llama 3.2
    {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 6.0,
     "original_max_position_embeddings": 8192, "rope_theta": 10000.0},
], ids=["3.1", "3.2", "other-bands"])
def test_llama3_rope_scaling_comes_back_from_its_rope_freqs_table(tmp_path, rope):
    from reference import hf_logits, hf_model

    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.exporters.gguf_import import import_gguf
    from sgedge.testing.synthetic import build_model

    hf = build_model("llama", tmp_path / "hf", shape={"rope_parameters": rope, "head_dim": 64,
                                                       "max_position_embeddings": 131072}, seed=4)
    r = import_gguf(export_base_gguf(hf, tmp_path / "b.gguf", dtype="f32").path, tmp_path / "imp")
    back = json.loads((r.path / "config.json").read_text())["rope_parameters"]
    assert back["rope_type"] == "llama3"
    for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        assert back[key] == pytest.approx(rope[key], rel=1e-6), key
    ids = list(range(3, 40))
    assert float(np.abs(hf_logits(hf_model(hf), ids) - hf_logits(hf_model(r.path), ids)).max()) < 1e-5


def test_a_rope_freqs_table_that_is_not_llama3_is_refused(tiny, tmp_path):
    import gguf

    from sgedge.exporters.gguf_import import import_gguf

    t = tiny("llama")
    half = int(gguf.GGUFReader(t.gguf).fields["llama.rope.dimension_count"].contents()) // 2
    # Divisors that decrease with the wavelength: no Llama 3 scaling gives that.
    out = _rewrite_gguf(t.gguf, tmp_path / "odd.gguf",
                        extra={"rope_freqs.weight": np.linspace(3.0, 1.0, half, dtype=np.float32)})
    with pytest.raises(UnsupportedModelError, match="rope_freqs"):
        import_gguf(out, tmp_path / "imp")
    assert not (tmp_path / "imp").exists()


@pytest.mark.parametrize("record", ["not json", '{"source": "x", "fingerprint": 3}', '{"source": {"sha256": 7}}',
                                    "tampered-weights"])
def test_an_import_record_that_does_not_hold_gives_no_source_binding(foreign, tmp_path, record):
    """sgedge_import.json speaks for the GGUF file only while it is well formed and the
    folder's weights are still the imported ones; otherwise the adapter is bound by its
    fingerprint alone (and the original file then refuses it)."""
    import shutil

    from sgedge import binding
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.formats.gguf_meta import read_gguf_info
    from sgedge.runtime.api import Runtime

    t, base, hf, _, _ = foreign
    copy = tmp_path / "hf"
    shutil.copytree(hf, copy)
    if record == "tampered-weights":
        from safetensors.numpy import load_file, save_file

        weights = load_file(str(copy / "model.safetensors"))
        name = next(iter(weights))
        weights[name] = weights[name] + np.float32(1e-3)
        save_file(weights, str(copy / "model.safetensors"))
    else:
        (copy / "sgedge_import.json").write_text(record)
    out = export_adapter_gguf(t.lora1, tmp_path / "a.gguf", base=copy).path
    assert read_gguf_info(out).get(binding.KEY_BASE_SOURCE_SHA256) is None
    with pytest.raises(AdapterMismatchError):
        Runtime.open(base, adapters=[out], n_ctx=256)
