"""Files that made llama.cpp abort the whole process (issue 25) are refused with a
message before llama.cpp sees them; each case runs in a child process, so an abort
would show as exit 134 instead of failing the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf_files import rewrite_gguf

from sgedge.errors import InputError
from sgedge.runtime.gguf_preflight import preflight_gguf


def edit_gguf(src: Path, out: Path, change: dict[str, Any]) -> Path:
    """A copy of `src` with metadata values replaced (same type; None drops the key)."""
    return rewrite_gguf(src, out, change=change)


def _tokens(path: Path) -> list[str]:
    import gguf

    return list(gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"].contents())


def _open_in_child(path: Path) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom sgedge.runtime.api import Runtime\nfrom sgedge.errors import SgedgeError\n"
            f"try:\n    rt = Runtime.open({str(path)!r})\n    rt.generate('caf\\u00e9 \\u2603 \\n ok', max_tokens=2)\n"
            "except SgedgeError as e:\n    print(e, file=sys.stderr)\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _cases(t) -> dict[str, tuple[dict[str, Any], str]]:
    toks = _tokens(t.gguf)
    return {
        "100000 layers": ({f"{t.family}.block_count": 100_000}, r"block_count is 100000"),
        "layers missing": ({f"{t.family}.block_count": 7}, r"the header says 7 layers, the file has tensors for"),
        "repeated token": ({"tokenizer.ggml.tokens": toks[:5] + [toks[3]] + toks[6:]}, r"repeats the token"),
        "types of another vocabulary": ({"tokenizer.ggml.token_type": [1] * (len(toks) - 3)}, r"token_type has \d+ entries"),
    }


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_files_that_abort_llama_cpp_are_refused_in_process_and_out(tiny, tmp_path, family):
    t = tiny(family)
    preflight_gguf(t.gguf)  # the honest file passes
    for name, (change, message) in _cases(t).items():
        bad = edit_gguf(t.gguf, tmp_path / f"{name.replace(' ', '_')}.gguf", change)
        with pytest.raises(InputError, match=message):
            preflight_gguf(bad)
        run = _open_in_child(bad)
        assert run.returncode == 1, (name, run.returncode, run.stderr[-500:])
        assert "cannot be run" in run.stderr and "Traceback" not in run.stderr, name


def test_a_sentencepiece_vocabulary_without_byte_tokens_is_refused(tiny, tmp_path):
    t = tiny("phi3")  # SentencePiece with byte fallback
    toks = _tokens(t.gguf)
    assert "<0x0A>" in toks
    renamed = [f"x{tok[1:-1]}x" if tok.startswith("<0x") else tok for tok in toks]
    bad = edit_gguf(t.gguf, tmp_path / "nobytes.gguf", {"tokenizer.ggml.tokens": renamed})
    with pytest.raises(InputError, match=r"lacks the byte token <0x00>"):
        preflight_gguf(bad)
    run = _open_in_child(bad)
    assert run.returncode == 1 and "byte-fallback tokens are missing" in run.stderr, run.stderr[-500:]


def test_truncated_and_misplaced_tensors_are_refused(tiny, tmp_path):
    t = tiny("qwen2")
    data = t.gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=r"lies outside the file's data"):
        preflight_gguf(cut)
    for n in (3, 20, 200, 2000):
        head = tmp_path / f"head{n}.gguf"
        head.write_bytes(data[:n])
        with pytest.raises(InputError):
            preflight_gguf(head)


def test_an_adapter_is_checked_for_its_tensors_not_a_vocabulary(tiny, tmp_path):
    t = tiny("qwen2")
    preflight_gguf(t.a1, base=False)
    cut = tmp_path / "a.gguf"
    cut.write_bytes(t.a1.read_bytes()[:-64])
    with pytest.raises(InputError, match=r"lies outside the file's data"):
        preflight_gguf(cut, base=False)


def test_an_adapter_with_nan_weights_or_alpha_is_refused(tiny, tiny_onnx, tmp_path):
    import gguf

    from sgedge.formats.onnx_adapter_io import read_adapter, write_adapter
    from sgedge.runtime.api import Runtime

    t = tiny("qwen2")
    alpha = edit_gguf(t.a1, tmp_path / "alpha.gguf", {"adapter.lora.alpha": float("nan")})
    with pytest.raises(InputError, match=r"adapter.lora.alpha is nan"):
        preflight_gguf(alpha, base=False)
    reader = gguf.GGUFReader(t.a1)
    first = next(x for x in reader.tensors if x.tensor_type == gguf.GGMLQuantizationType.F32)
    data = bytearray(t.a1.read_bytes())
    data[first.data_offset:first.data_offset + 4] = np.float32(np.nan).tobytes()
    weights = tmp_path / "nan.gguf"
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"tensor {first.name} holds NaN"):
        Runtime.open(t.gguf, adapters=[weights])
    o = tiny_onnx("qwen2")
    version, params = read_adapter(o.a1)
    name = sorted(params)[0]
    params = {k: v.copy() for k, v in params.items()}
    params[name][0, 0] = np.inf
    bad = tmp_path / "inf.onnx_adapter"
    write_adapter(bad, params, version)
    with pytest.raises(InputError, match=rf"parameter {name} holds NaN or infinite values"):
        Runtime.open(o.base, adapters=[bad])


def test_the_type_table_is_gguf_pys():
    import gguf

    from sgedge.runtime.gguf_preflight import TYPE_SIZES

    assert TYPE_SIZES == {int(k): tuple(v) for k, v in gguf.GGML_QUANT_SIZES.items()}


def test_a_passed_check_is_remembered_only_for_the_same_bytes(tiny, tmp_path):
    import os

    from sgedge.runtime.gguf_preflight import preflight_cached

    t = tiny("qwen2")
    path = tmp_path / "base.gguf"
    path.write_bytes(t.gguf.read_bytes())
    preflight_cached(path)  # checked, and remembered
    bad = edit_gguf(t.gguf, tmp_path / "bad.gguf", {"qwen2.block_count": 100_000}).read_bytes()
    st = os.stat(path)
    with open(path, "r+b") as f:  # rewritten in place, mtime set back: the ctime still changes
        f.truncate(0)
        f.write(bad)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(InputError, match=r"block_count is 100000"):
        preflight_cached(path)
