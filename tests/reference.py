"""transformers + PEFT reference: the numbers every export is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Adapter sets every parity test runs: none, one, one at half scale, two stacked.
CASES = {
    "none": [],
    "one": [("a1", 1.0)],
    "half": [("a1", 0.5)],
    "stacked": [("a1", 1.0), ("a2", 0.5)],
}
PROMPT = "Safety adapters keep the base model frozen. Hello world 42!"


def peft_case(t, case: str) -> list[tuple[Path, float]]:
    """The PEFT directories and scales of CASES[case] for a conftest.Tiny."""
    paths = {"a1": t.lora1, "a2": t.lora2}
    return [(paths[n], s) for n, s in CASES[case]]


def hf_model(model_dir: Path, adapters: Sequence[tuple[Path, float]] = ()):
    """A transformers model with PEFT adapters active at the given scales (summed)."""
    import peft
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    if not adapters:
        return model
    names = [f"a{i}" for i in range(len(adapters))]
    pm = peft.PeftModel.from_pretrained(model, str(adapters[0][0]), adapter_name=names[0])
    for name, (path, _) in zip(names[1:], adapters[1:], strict=True):
        pm.load_adapter(str(path), adapter_name=name)
    pm.base_model.set_adapter(names)
    from peft.tuners.lora import LoraLayer

    for module in pm.modules():
        if isinstance(module, LoraLayer):
            for name, (_, scale) in zip(names, adapters, strict=True):
                if name in module.scaling:
                    module.scaling[name] *= scale
    pm.eval()
    return pm


def hf_logits(model, tokens: Sequence[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.tensor([list(tokens)], dtype=torch.long))
    return out.logits[0].float().numpy()


def assert_greedy_matches(model, prompt: Sequence[int], generated: Sequence[int], tol: float) -> int:
    """Teacher-forced check of a greedy continuation against the reference.

    Every generated token must be the reference's argmax, or within `tol` of the
    reference's max logit (a near-tie that float rounding may break either way).
    Returns the number of exact argmax matches.
    """
    assert generated, "nothing was generated"
    logits = hf_logits(model, list(prompt) + list(generated))
    exact = 0
    for i, tok in enumerate(generated):
        row = logits[len(prompt) - 1 + i]
        best = int(row.argmax())
        gap = float(row[best] - row[tok])
        assert gap <= tol, f"token {i}: got {tok}, reference argmax {best} (logit gap {gap:.3g} > {tol})"
        exact += tok == best
    return exact
