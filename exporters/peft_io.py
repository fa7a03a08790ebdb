"""PEFT adapters as sgedge writes them: saved bound to a local base, and LoRA adapters
with given weights (the ONNX exporter's rank-1 placeholder that makes the builder emit
LoRA slots; random ones for tests). Quiet: transformers' and PEFT's progress bars and
deprecation notes are noise in a command's output."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers/peft chatter (progress bars, deprecation notes) is noise here."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_lora(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    r: int = 8,
    alpha: float = 16,
    targets: Sequence[str] | str | None = None,
    seed: int = 1,
    std: float = 0.1,
    **lora_kwargs: Any,
) -> Path:
    """Save a PEFT LoRA adapter with random, non-zero A and B for the model in `model_dir`.

    `targets` is a list of module names or, as in PEFT, one string (a regex or "all-linear")."""
    import peft
    import torch
    import transformers

    from sgedge.families import family_for_config

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    fam = family_for_config(config)
    with quiet():
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets if isinstance(targets, str) else list(targets or fam.lora_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        **lora_kwargs,
    )
    with quiet():
        pm = peft.get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    out = Path(out_dir)
    save_peft(pm, out, model_dir)
    return out


def save_peft(pm: Any, out: Path, base_dir: Path) -> None:
    """`save_pretrained`, with `base_model_name_or_path` pointing at the local base, so
    that export finds it without --base."""
    with quiet():
        pm.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    acfg = json.loads(cfg_path.read_text())
    acfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    cfg_path.write_text(json.dumps(acfg, indent=2))
