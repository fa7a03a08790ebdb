"""A Hugging Face model directory as the exporters see it: config, family, weights."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from sgedge import strict_json
from sgedge.binding import _read_header, _safetensors_files, base_fingerprint
from sgedge.errors import InputError, UnsupportedModelError
from sgedge.families import Family, family_for_config

# config.json values the exporters compute with: (kind, low, high). A wrong type would end
# in a traceback deep in an export; a size of 10^12 would allocate until memory runs out.
_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "max_position_embeddings", "original_max_position_embeddings",
          "n_positions", "sliding_window", "max_window_layers")
_LIMITS = {"vocab_size": 1 << 22, "num_hidden_layers": 512, "num_attention_heads": 1 << 12,
           "num_key_value_heads": 1 << 12, "max_window_layers": 512}
_FLOATS = ("rms_norm_eps", "rope_theta", "partial_rotary_factor")
_FLAGS = ("tie_word_embeddings", "use_sliding_window")


def check_config_types(config: dict[str, Any], where: Path) -> None:
    """Refuse a config.json whose values sgedge reads are of the wrong type or range."""
    def bad(key: str, want: str) -> InputError:
        return InputError(f"{where}: {key} must be {want}, not {config[key]!r}"[:300])

    for key in _SIZES:
        v, low = config.get(key), 0 if key in ("sliding_window", "max_window_layers") else 1
        high = _LIMITS.get(key, 1 << 32)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high):
            raise bad(key, f"a whole number from {low} to {high}")
    for key in _FLOATS:
        v = config.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 3.4e38):
            raise bad(key, "a finite number >= 0")
    for key in _FLAGS:
        if config.get(key) is not None and not isinstance(config[key], bool):
            raise bad(key, "true or false")
    archs = config.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise bad("architectures", "a list of class names")
    for key in ("rope_scaling", "rope_parameters"):
        rope = config.get(key)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise bad(key, "an object")
        for k, v in rope.items():
            ok = isinstance(v, str | list | type(None)) or (isinstance(v, int | float) and not isinstance(v, bool)
                                                              and abs(v) < 3.4e38)
            if not ok or k == "rope_theta" and not isinstance(v, int | float):
                raise InputError(f"{where}: {key}.{k} is {v!r}, not a value rope scaling takes"[:300])


@dataclass
class HFModel:
    path: Path
    config: dict[str, Any]
    family: Family
    _index: dict[str, Path] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> HFModel:
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"model directory {path} does not exist")
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise InputError(f"{path} has no config.json; is it a Hugging Face model directory?")
        config = strict_json.read(cfg_path, max_bytes=16 << 20)
        # Multimodal wrappers keep the language model's settings under text_config.
        if isinstance(config.get("text_config"), dict) and "hidden_size" not in config:
            config = {**config["text_config"], "architectures": config.get("architectures")}
        check_config_types(config, cfg_path)
        return cls(path, config, family_for_config(config))

    def hparam(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if self.config.get(key) is not None:
                return self.config[key]
        if default is not None:
            return default
        raise UnsupportedModelError(f"config.json lacks {' / '.join(keys)}")

    @property
    def n_layers(self) -> int:
        return int(self.hparam("num_hidden_layers"))

    @property
    def n_head(self) -> int:
        return int(self.hparam("num_attention_heads"))

    @property
    def n_head_kv(self) -> int:
        return int(self.hparam("num_key_value_heads", default=self.n_head))

    @property
    def head_dim(self) -> int:
        return int(self.hparam("head_dim", default=int(self.hparam("hidden_size")) // self.n_head))

    @property
    def rotary_dim(self) -> int:
        """How many of a head's dimensions rope rotates (Phi-4-mini: 0.75 of them)."""
        rope = self.rope_parameters
        factor = float(rope.get("partial_rotary_factor", self.config.get("partial_rotary_factor", 1.0)))
        return int(factor * self.head_dim)

    @property
    def rope_type(self) -> str:
        rope = self.rope_parameters
        kind = str(rope.get("rope_type", rope.get("type", "default")))
        return "longrope" if kind == "su" else kind  # transformers reads Phi-3's early "su" as LongRoPE

    @property
    def stop_token_ids(self) -> list[int]:
        """The ids transformers' generate() ends at: generation_config.json's eos_token_id
        (Llama 3.1 and Phi-3 list several), else config.json's."""
        eos: Any = None
        gen = self.path / "generation_config.json"
        if gen.is_file():
            try:
                eos = json.loads(gen.read_text("utf-8")).get("eos_token_id")
            except (json.JSONDecodeError, AttributeError):
                eos = None
        if eos is None:
            eos = self.config.get("eos_token_id")
        ids = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)]

    @property
    def sliding_layers(self) -> list[bool]:
        """Which layers transformers runs with sliding-window attention."""
        n = self.n_layers
        if not self.config.get("sliding_window"):
            return [False] * n
        types = self.config.get("layer_types")
        if types:
            return [t == "sliding_attention" for t in types]
        if self.family.name in ("qwen2", "qwen3"):  # transformers 4 layout
            if not self.config.get("use_sliding_window"):
                return [False] * n
            first = int(self.config.get("max_window_layers") or n)
            return [i >= first for i in range(n)]
        return [self.family.name in ("mistral", "phi3")] * n

    @property
    def sliding_window(self) -> int | None:
        """The attention window transformers applies, where it is shorter than the context."""
        window = self.config.get("sliding_window")
        if window and any(self.sliding_layers) and int(window) < int(self.hparam("max_position_embeddings")):
            return int(window)
        return None

    @property
    def original_context(self) -> int:
        """The context the model was pretrained with (LongRoPE and Phi-3's sliding rope)."""
        orig = self.rope_parameters.get("original_max_position_embeddings",
                                        self.config.get("original_max_position_embeddings"))
        return int(orig or self.hparam("max_position_embeddings"))

    @property
    def longrope_attention_factor(self) -> float:
        """What transformers multiplies cos/sin by under LongRoPE (Phi-3 128k, Phi-3.5,
        Phi-4-mini), short and long factors alike."""
        rope = self.rope_parameters
        if rope.get("attention_factor") is not None:
            return float(rope["attention_factor"])
        orig = float(self.original_context)
        factor = float(rope.get("factor") or int(self.hparam("max_position_embeddings")) / orig)
        return math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1.0 else 1.0

    @property
    def rope_parameters(self) -> dict[str, Any]:
        params = dict(self.config.get("rope_scaling") or {})
        params.update(self.config.get("rope_parameters") or {})
        return params

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape, read from the safetensors headers alone (no weights loaded)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for file in _safetensors_files(self.path):
            header, _ = _read_header(file)
            for name, info in header.items():
                if name != "__metadata__":
                    shapes[name] = tuple(info["shape"])
                    self._index[name] = file
        return shapes

    @cached_property
    def fingerprint(self) -> str:
        return base_fingerprint(self.path)

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32, read from the file that holds it."""
        from safetensors import safe_open

        if name not in self.shapes:
            raise KeyError(name)
        with safe_open(self._index[name], framework="pt") as f:
            return f.get_tensor(name).float().numpy()

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (name, float32 array) one tensor at a time, in file order."""
        from safetensors import safe_open

        _ = self.shapes
        for file in _safetensors_files(self.path):
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    arr = f.get_tensor(name).float().numpy()
                    if not np.isfinite(arr).all():
                        raise InputError(f"{file}: tensor {name} holds NaN or infinite values; the model is "
                                         "damaged (or its training diverged), and every reply would be garbage")
                    yield name, arr


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a q/k projection (or its LoRA B) from HF's rotate-half
    rope layout to llama.cpp's interleaved one."""
    if w.shape[0] % (2 * n_head):
        raise UnsupportedModelError(f"cannot permute {w.shape[0]} rows into {n_head} rope heads")
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
