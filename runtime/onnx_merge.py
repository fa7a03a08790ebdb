"""Merge a composed LoRA update into an ONNX base's own float weights (fused mode).

A fused ONNX base that keeps the adapter as a LoRA branch still pays for the branch on
every token (two float MatMuls and an Add per slot, block-diagonal B on packed slots).
For a float projection (a MatMul with a constant fp32/fp16 weight) the update is merged
instead: W += A @ B, computed in float32 and stored in W's type, and the branch goes.

int4 projections (MatMulNBits) keep their branch, as constants: merging there means
dequantizing, adding and quantizing again, and that second int4 rounding moved the
fused logits by 0.38 of their spread against 0.64 for the adapter's whole effect
(SmolLM2-135M shape, rank 16; docs/performance.md), too far from the adapter that
was tested for a safety adapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def float_projection(add: Any, producers: dict[str, Any], inits: dict[str, Any]) -> Any | None:
    """The MatMul (constant float weight) whose output a LoRA Add adds to, through one
    bias Add; None for anything else (int4 MatMulNBits, a computed weight)."""
    from onnx import TensorProto

    node = producers.get(add.input[0])
    if node is not None and node.op_type == "Add" and node.input[1] in inits:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "MatMul" or node.input[1] not in inits:
        return None
    if inits[node.input[1]].data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        return None
    return node


def merge_update(node: Any, inits: dict[str, Any], delta: np.ndarray) -> None:
    """W += delta ([in, out], float32) for the weight of `node` (from float_projection)."""
    from onnx import numpy_helper

    name = node.input[1]
    w = numpy_helper.to_array(inits[name])
    inits[name].CopyFrom(numpy_helper.from_array((w.astype(np.float32) + delta).astype(w.dtype), name))
