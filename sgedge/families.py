"""Model families sgedge exports: one small, frozen entry per family.

An entry says which Hugging Face architectures it covers, which llama.cpp
architecture it becomes, which linear layers a LoRA may target, and its quirks.
Everything else (tensor names) comes from gguf-py's own tables in the exporters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sgedge.errors import UnsupportedModelError

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    name: str
    hf_architectures: tuple[str, ...]
    gguf_arch: str
    # Linear layers (HF leaf module names) a safety adapter may target.
    lora_modules: tuple[str, ...]
    # llama.cpp's "llama" graph applies rope to interleaved pairs while HF rotates
    # halves, so q/k rows are permuted on export (and LoRA B rows the same way).
    # Maps the module to the config key holding its head count.
    permute_heads: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Tensors llama.cpp does not use (HF keeps them as buffers or duplicates).
    skip_tensors: tuple[str, ...] = ("rotary_emb.inv_freq",)
    # Fused projections and the builder's names for their parts (q/k/v, gate/up): an
    # ONNX slot lists the parts it covers, and a fused LoRA's B rows map onto them.
    onnx_splits: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # llama.cpp's graph for this family loads no bias tensors (gguf-py would still name them,
    # and llama.cpp would then refuse the file at load).
    gguf_biases: bool = True

    @property
    def onnx_slot_modules(self) -> tuple[str, ...]:
        """HF leaf names of the ONNX LoRA slots (fused projections split)."""
        return tuple(leaf for m in self.lora_modules for leaf in self.onnx_splits.get(m, (m,)))


_LLAMA_PERMUTE = MappingProxyType({"q_proj": "num_attention_heads", "k_proj": "num_key_value_heads"})

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("LlamaForCausalLM",), "llama", _ATTN + _MLP, _LLAMA_PERMUTE),
    Family("mistral", ("MistralForCausalLM",), "llama", _ATTN + _MLP, _LLAMA_PERMUTE),
    Family("qwen2", ("Qwen2ForCausalLM",), "qwen2", _ATTN + _MLP),
    Family("qwen3", ("Qwen3ForCausalLM",), "qwen3", _ATTN + _MLP, gguf_biases=False),
    # Phi-3 keeps qkv and gate+up fused, and so does llama.cpp's phi3 graph: the
    # fused LoRA maps one to one onto attn_qkv / ffn_up, no split needed there. The ONNX
# builder does split them (onnx_splits).
    Family(
        "phi3", ("Phi3ForCausalLM",), "phi3", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        onnx_splits=MappingProxyType({"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}),
        gguf_biases=False,
    ),
)

_BY_ARCH = MappingProxyType({a: f for f in FAMILIES for a in f.hf_architectures})


def family_for_config(config: Mapping[str, object]) -> Family:
    """Return the family of a Hugging Face `config.json` dict, or raise a clear error."""
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not archs:
        raise UnsupportedModelError(
            "config.json has no 'architectures' entry; sgedge needs it to pick the model family"
        )
    for arch in archs:
        if arch in _BY_ARCH:
            return _BY_ARCH[arch]
    supported = ", ".join(sorted(_BY_ARCH))
    raise UnsupportedModelError(
        f"unsupported architecture {', '.join(map(str, archs))}; sgedge supports: {supported}"
    )
