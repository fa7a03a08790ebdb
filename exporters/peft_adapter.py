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

from sgedge import strict_json
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
        try:
            hit = re.match(rf"(.*\.)?({key})$", module)
        except re.error as e:
            raise AdapterError(f"pattern {key[:60]!r} in adapter_config.json is not a valid expression ({e})") from None
        if hit:
            return value
    return default


_SIMPLE_PATTERN = re.compile(r"[\w.\-^$|\[\]\\]+")


def _config_types(cfg: Mapping[str, Any], where: Path) -> list[str]:
    """The config values sgedge computes with, of the right type and range (a wrong one
    would otherwise end in a traceback, or in an adapter scaled by 0 or infinity)."""
    problems = []
    r = cfg.get("r", 8)
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 65536:
        problems.append(f"r must be a whole number from 1 to 65536, not {r!r}")
    alpha = cfg.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 3.4e38:
        problems.append(f"lora_alpha must be a finite number greater than 0, not {alpha!r} (0 makes the adapter "
                        "do nothing)")
    for key, kind in (("rank_pattern", int), ("alpha_pattern", float)):
        patterns = cfg.get(key) or {}
        if not isinstance(patterns, dict):
            problems.append(f"{key} must be an object mapping module names to values")
            continue
        for k, v in patterns.items():
            ok = (isinstance(v, int) and 1 <= v <= 65536) if kind is int else (
                isinstance(v, int | float) and 0 < v <= 3.4e38)
            if isinstance(v, bool) or not ok:
                problems.append(f"{key}[{k!r}] is {v!r}, not a {'rank' if kind is int else 'positive finite alpha'}")
            # PEFT matches these keys as regular expressions; sgedge evaluates module names
            # and simple alternatives, never repetition or groups (which could run for ever).
            if len(k) > 300 or not _SIMPLE_PATTERN.fullmatch(k):
                problems.append(f"{key} key {k[:60]!r} uses regular-expression features sgedge does not evaluate "
                                "(groups, repetition); name the modules")
    for key in ("use_rslora", "use_dora"):
        if not isinstance(cfg.get(key, False), bool | type(None)):
            problems.append(f"{key} must be true or false, not {cfg.get(key)!r}")
    return [f"{where}: {p}" for p in problems]


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
        try:
            with safe_open(st, framework="pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k).float().numpy()
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise AdapterError(f"{st} is not a readable safetensors file ({type(e).__name__}: "
                               f"{str(e)[:200]}); save the adapter again with save_pretrained") from None
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
    cfg = strict_json.read(cfg_path, error=AdapterError, max_bytes=16 << 20)
    problems = _config_types(cfg, cfg_path) or _check_config(cfg, path)
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
    r, alpha = cfg.get("r", 8), float(cfg.get("lora_alpha", 8))
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
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise AdapterError(f"{path}: module {module} has NaN or infinite weights (the training diverged); "
                               "export a checkpoint from before it did")
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
