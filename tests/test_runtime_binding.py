"""The runtime refuses adapters that do not belong to the base, before any token."""

from __future__ import annotations

import pytest

from sgedge.errors import AdapterMismatchError, InputError
from sgedge.exporters.gguf_adapter import export_adapter_gguf
from sgedge.exporters.gguf_base import export_base_gguf
from sgedge.runtime.api import Runtime
from sgedge.testing.synthetic import build_lora, build_model


@pytest.fixture(scope="module")
def twin(tiny, tmp_path_factory):
    """A llama base with the same shapes as tiny('llama') but other weights."""
    root = tmp_path_factory.mktemp("twin")
    hf = build_model("llama", root / "hf", seed=999)
    lora = build_lora(hf, root / "lora")
    return export_base_gguf(hf, root / "base.gguf", dtype="f32").path, export_adapter_gguf(lora, root / "a.gguf").path


def test_adapter_of_other_base_same_shapes_refused(tiny, twin):
    t = tiny("llama")
    with pytest.raises(AdapterMismatchError, match=r"exported for base sha256:.*loaded base is sha256:"):
        Runtime.open(t.gguf, adapters=[twin[1]])


def test_adapter_of_other_architecture_refused(tiny):
    with pytest.raises(AdapterMismatchError, match=r"architecture 'qwen2', the base is 'llama'"):
        Runtime.open(tiny("llama").gguf, adapters=[tiny("qwen2").a1])


def test_base_given_as_adapter_refused(tiny):
    t = tiny("llama")
    with pytest.raises(AdapterMismatchError, match=r"not a LoRA adapter"):
        Runtime.open(t.gguf, adapters=[t.gguf])


def test_adapter_given_as_model_refused(tiny):
    with pytest.raises(InputError, match=r"is a LoRA adapter; pass it with --adapter"):
        Runtime.open(tiny("llama").a1)


def test_unbound_adapter_needs_explicit_permission(tiny, tmp_path):
    import gguf

    t = tiny("llama")
    # An adapter made by other tools: same tensors, no sgedge fingerprint.
    reader = gguf.GGUFReader(t.a1)
    w = gguf.GGUFWriter(tmp_path / "plain.gguf", "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 16.0)
    for tensor in reader.tensors:
        w.add_tensor(tensor.name, tensor.data.copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(AdapterMismatchError, match=r"no sgedge base fingerprint"):
        Runtime.open(t.gguf, adapters=[tmp_path / "plain.gguf"])
    with Runtime.open(t.gguf, adapters=[tmp_path / "plain.gguf"], allow_unbound_adapters=True) as rt:
        with Runtime.open(t.gguf, adapters=[t.a1]) as ref:
            ids = rt.encode_prompt("Hello world", raw=True)
            assert rt.generate("Hello world", raw=True, max_tokens=8).tokens == \
                ref.generate("Hello world", raw=True, max_tokens=8).tokens
            assert len(ids) > 1


def test_switching_adapters_reuses_the_base(tiny):
    t = tiny("llama")
    with Runtime.open(t.gguf, adapters=[t.a1, t.a2], n_ctx=512) as rt:
        backend = rt._backend
        outs = {}
        for case in ([], [("a1", 1.0)], [("a2", 1.0)], [("a1", 1.0)], []):
            outs.setdefault(tuple(case), set()).add(tuple(rt.generate("Hello", raw=True, max_tokens=12, adapters=case).tokens))
        assert rt._backend is backend
        assert all(len(v) == 1 for v in outs.values()), "same adapter set must give the same tokens"
        assert len({next(iter(v)) for v in outs.values()}) == 3, "each adapter set must change the output"


def test_unknown_adapter_name_refused(tiny):
    t = tiny("llama")
    with Runtime.open(t.gguf, adapters=[t.a1]) as rt:
        with pytest.raises(InputError, match=r"not loaded: nope \(loaded: a1\)"):
            rt.generate("hi", raw=True, adapters=[("nope", 1.0)])


@pytest.mark.parametrize("kind", ["gguf", "onnx"])
def test_a_closed_runtime_says_it_is_closed(tiny, tiny_onnx, kind):
    model = tiny("llama").gguf if kind == "gguf" else tiny_onnx("llama").base
    rt = Runtime.open(model)
    ids = rt.encode_prompt("Hello", raw=True)
    rt.close()
    for use in (lambda: rt.generate("Hello", raw=True, max_tokens=2), lambda: rt.logits(ids),
                lambda: rt.encode_prompt("Hello"), lambda: list(rt.stream("Hello", max_tokens=2))):
        with pytest.raises(InputError, match=r"this Runtime is closed"):
            use()
    rt.close()  # closing twice is harmless
    assert rt.backend == kind  # what it was stays readable
