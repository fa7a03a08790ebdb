"""Read a GGUF file's metadata and tensor shapes (header only, via gguf-py's reader)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgedge.errors import InputError


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    fields: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]  # numpy order: (rows, cols)
    types: dict[str, str]

    @property
    def arch(self) -> str:
        return str(self.fields.get("general.architecture", ""))

    @property
    def is_adapter(self) -> bool:
        return self.fields.get("general.type") == "adapter"

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _value(field: Any) -> Any:
    import gguf

    if not field.types:
        return None
    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        # Token lists are large and not needed here: keep only their length.
        return len(field.data)
    part = field.parts[field.data[0]]
    if kind == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", "replace")
    return part.tolist()[0] if hasattr(part, "tolist") else part


def read_gguf_info(path: str | Path) -> GGUFInfo:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        import gguf

        reader = gguf.GGUFReader(path, "r")
    except ImportError as e:
        raise InputError("reading GGUF metadata needs the gguf package: pip install 'sgedge[runtime]'") from e
    except Exception as e:
        raise InputError(f"{path} is not a readable GGUF file ({e})") from e
    fields = {name: _value(f) for name, f in reader.fields.items()}
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in reader.tensors}
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    return GGUFInfo(path, fields, shapes, types)
