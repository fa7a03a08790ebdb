"""Quantization-aware adapter training: train under the numerics the adapter will run with.

llama.cpp multiplies a quantized weight (Q4_0/Q4_1/Q5_x/Q8_0, k-quants) by its input only
after quantizing that input to 8 bits in blocks of 32 (ggml's Q8_0/Q8_1 "vec dot" types;
per block d = max|x| / 127 kept in f16, x ~ round(x / d) * d). An adapter trained on the
float import never saw that noise.

`fake_quantize_inputs` puts the same rounding in front of every frozen linear layer of the
base (the LoRA matrices, which llama.cpp runs in f16/f32, are left alone). Gradients pass
straight through the rounding (the straight-through estimator), so the adapter learns
what helps under the quantized forward pass.

Measured on SmolLM2-135M-Instruct's Q4_1 file (docs/safety.md): this rounding explains
little of what separates llama.cpp's logits from the float import's, and a `standard`
adapter trained under it refused and over-refused the held-out prompts as the float-trained
one did. It stays an option; the shipped recipe does not use it.
"""

from __future__ import annotations

from typing import Any

MODES = ("q8",)  # the activation rounding of llama.cpp's quantized matmuls
BLOCK = 32


def q8_blocks(x: Any) -> Any:
    """x rounded as ggml's quantize_row_q8_0/q8_1 round it (blocks of 32 along the last
    dimension, scale in f16); the value forward, the identity backward."""
    import torch

    n = x.shape[-1]
    if n % BLOCK:  # ggml needs whole blocks for these types; nothing to mimic otherwise
        return x
    xf = x.float().reshape(*x.shape[:-1], n // BLOCK, BLOCK)
    # As ggml's reference: scale from the f32 amax, values rounded half away from zero,
    # read back with the scale stored in f16.
    d = xf.abs().amax(-1, keepdim=True) / 127.0
    inv = torch.where(d > 0, 1.0 / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
    v = xf * inv
    a = v.abs()
    qs = torch.sign(v) * (torch.floor(a) + torch.floor(2 * (a - torch.floor(a))))  # ggml's roundf
    q = (qs * d.to(torch.float16).float()).reshape(x.shape).to(x.dtype)
    return x + (q - x).detach()


def fake_quantize_inputs(model: Any, mode: str = "q8") -> list[Any]:
    """Round the input of each torch.nn.Linear in `model` (call before wrapping it with
    PEFT: the LoRA layers added later are not touched). Returns the hook handles."""
    import torch

    if mode not in MODES:
        from sgedge.errors import InputError

        raise InputError(f"unknown quantization-aware mode {mode!r}; choose one of {', '.join(MODES)}")

    def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (q8_blocks(args[0]), *args[1:])

    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
