"""sgedge's fast GGUF header reader agrees with gguf-py's full reader."""

from __future__ import annotations

import gguf
import pytest

from sgedge.errors import InputError
from sgedge.formats.gguf_meta import read_gguf_info


def _reference(path):
    r = gguf.GGUFReader(path)
    fields = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):  # the reader's own header pseudo-fields
            continue
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            fields[name] = len(f.data)
        elif f.types and f.types[0] == gguf.GGUFValueType.STRING:
            fields[name] = bytes(f.parts[f.data[0]]).decode()
        elif f.types:
            fields[name] = f.parts[f.data[0]].tolist()[0]
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in r.tensors}
    return fields, shapes, {t.name: t.tensor_type.name for t in r.tensors}


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_header_reader_matches_gguf_py(tiny, family):
    t = tiny(family)
    for path in (t.gguf, t.a1):
        info = read_gguf_info(path)
        fields, shapes, types = _reference(path)
        assert info.shapes == shapes and info.types == types
        for k, v in fields.items():
            assert info.fields[k] == pytest.approx(v) if isinstance(v, float) else info.fields[k] == v, k


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML" + b"\0" * 32)
    with pytest.raises(InputError, match=r"not a readable GGUF file"):
        read_gguf_info(bad)
    bad.write_bytes(b"GGUF\3\0\0\0" + b"\xff" * 8)
    with pytest.raises(InputError, match=r"not a readable GGUF file"):
        read_gguf_info(bad)
