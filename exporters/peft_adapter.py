"""Read and validate a PEFT LoRA adapter directory (adapter_config.json + weights).

Everything that sgedge cannot export faithfully is refused here with a message that
says what and why: pickled weights (unless allowed), DoRA, modules_to_save, embedding
or bias adapters, other PEFT types. The per-module scale honours r, lora_alpha,
rank_pattern, alpha_pattern and use_rslora exactly as PEFT computes it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgedge.errors import AdapterError

_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class LoraModule:
    module: str  # HF module path, e.g. model.layers.0.self_attn.q_proj
    a: np.ndarray  # (r, in)
    b: np.ndarray  # (out, r)
    scaling: float  # what PEFT multiplies B @ A by

    @property
    def leaf(self) -> str:
        return self.module.rsplit(".", 1)[-1]

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass(frozen=True)
class PeftAdapter:
    path: Path
    config: Mapping[str, Any]
    modules: tuple[LoraModule, ...]

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def lora_alpha(self) -> float:
        return float(self.config.get("lora_alpha", self.config.get("r", 8)))

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 8))


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    # Same matching rule as peft.utils.other.get_pattern_key.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _check_config(cfg: Mapping[str, Any], path: Path) -> list[str]:
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"PEFT type {cfg.get('peft_type')} is not LoRA; only LoRA adapters can be exported")
    if cfg.get("use_dora"):
        problems.append("DoRA adapters (use_dora=true) are not supported: llama.cpp and ONNX Runtime apply plain LoRA")
    if cfg.get("modules_to_save"):
        problems.append(
            f"modules_to_save={cfg['modules_to_save']} would replace whole base layers; a safety adapter "
            "must be LoRA-only (train without modules_to_save)"
        )
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        problems.append("adapters that train biases (bias != 'none' or lora_bias) are not supported")
    if cfg.get("layer_replication"):
        problems.append("layer_replication is not supported")
    for key, what in _VARIANTS.items():
        if cfg.get(key) not in (None, False, [], {}):
            problems.append(f"{key} is set: {what}, which llama.cpp and ONNX Runtime do not apply (they run "
                            "plain LoRA, x·Aᵀ·Bᵀ on linear layers); train a plain LoRA adapter")
    # These initialisations change the base weights as well (PEFT's pissa/olora/corda/loftq/lora_ga_init
    # write base_layer.weight); EVA, MiCA and orthogonal only set A and B, so they export as they are.
    if str(cfg.get("init_lora_weights")).lower() in ("olora", "pissa", "corda", "loftq", "lora_ga") or str(
        cfg.get("init_lora_weights", "")
    ).startswith(("pissa", "olora")):
        problems.append(
            f"adapters initialised with {cfg.get('init_lora_weights')} (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA) "
            "come with modified base weights; convert them to plain LoRA first"
        )
    return problems


# PEFT LoRA variants whose forward pass is not plain LoRA on linear layers: exporting
# their A and B as plain LoRA would run a different model, so they are refused.
_VARIANTS = {
    "alora_invocation_tokens": "Activated LoRA applies the adapter only after its invocation tokens",
    "use_qalora": "QA-LoRA pools the input in groups before LoRA A",
    "target_parameters": "LoRA on parameters (e.g. mixture-of-experts weights) rather than linear layers",
    "trainable_token_indices": "trained token embeddings",
    "use_bdlora": "BD-LoRA's block-diagonal factors",
    "arrow_config": "Arrow routes between several LoRAs per token",
    "kasa_config": "KaSA truncates the base weights and adds singular values between A and B",
    "monteclora_config": "MonteCLoRA samples its weights",
}


def _load_weights(path: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    st = path / "adapter_model.safetensors"
    if st.is_file():
        from safetensors import safe_open

        out = {}
        with safe_open(st, framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k).float().numpy()
        return out
    binf = path / "adapter_model.bin"
    if binf.is_file():
        if not allow_pickle:
            raise AdapterError(
                f"{binf} is a pickle file, which can run code when loaded; re-save the adapter with "
                "safe_serialization=True, or pass --allow-pickle if you trust its source"
            )
        import torch

        state = torch.load(binf, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise AdapterError(f"{path} has no adapter_model.safetensors; is it a PEFT adapter directory?")


def load_peft_adapter(path: str | Path, *, allow_pickle: bool = False) -> PeftAdapter:
    path = Path(path)
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        raise AdapterError(f"{path} has no adapter_config.json; is it a PEFT adapter directory?")
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{cfg_path} is not valid JSON ({e})") from e
    problems = _check_config(cfg, path)
    if problems:
        raise AdapterError(f"cannot export {path}: " + "; ".join(problems))
    weights = _load_weights(path, allow_pickle)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    unexpected = []
    for key, value in weights.items():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        m = _KEY.match(name)
        if m is None:
            unexpected.append(key)
            continue
        pairs.setdefault(m["module"], {})[m["ab"]] = value
    if unexpected:
        whole = [k for k in unexpected if "base_layer" in k or "modules_to_save" in k]
        what = (
            "whole-layer weights saved with the adapter (save_embedding_layers / modules_to_save); "
            "a safety adapter must be LoRA-only" if whole
            else "tensors that are not LoRA A/B of a linear layer (embedding adapters and DoRA "
            "magnitudes are not supported)"
        )
        raise AdapterError(f"cannot export {path}: {len(unexpected)} {what}: {', '.join(unexpected[:5])}")
    r, alpha = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    modules = []
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{path}: module {module} has lora_{''.join(ab)} but not both A and B")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise AdapterError(
                f"{path}: module {module} has LoRA A {a.shape} and B {b.shape}, which are not factors "
                "of a linear layer (embedding or convolution adapters are not supported)"
            )
        rank = int(_pattern_value(rank_pattern, module, r))
        mod_alpha = float(_pattern_value(alpha_pattern, module, alpha))
        if rank != a.shape[0]:
            raise AdapterError(f"{path}: module {module} has rank {a.shape[0]} but the config says {rank}")
        scaling = mod_alpha / (math.sqrt(rank) if cfg.get("use_rslora") else rank)
        modules.append(LoraModule(module, a, b, scaling))
    if not modules:
        raise AdapterError(f"{path} holds no LoRA weights")
    return PeftAdapter(path, cfg, tuple(modules))


def recorded_base(peft_dir: str | Path) -> tuple[str, str] | None:
    """(fingerprint, "trained on" | "transferred to") of the base an adapter made by
    `sgedge train` or `sgedge transfer` belongs to; None for other adapters."""
    for name, key, how in (("sgedge_transfer.json", "variant_fingerprint", "transferred to"),
                           ("sgedge_train.json", "base_fingerprint", "trained on")):
        try:
            fp = json.loads((Path(peft_dir) / name).read_text("utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(fp, str):
            return fp, how
    return None


def binding_note(peft_dir: str | Path, fingerprint: str) -> str | None:
    """What to tell the user when an adapter is bound to another base than the one it records."""
    recorded = recorded_base(peft_dir)
    if not recorded or recorded[0] == fingerprint:
        return None
    return (f"{Path(peft_dir).name} was {recorded[1]} base {recorded[0][:19]}…, not the base it is now bound to "
            f"({fingerprint[:19]}…). If that base is a fine-tune of the adapter's own, `sgedge transfer` checks "
            "the fit first; either way, check its refusals there with `sgedge eval`")
