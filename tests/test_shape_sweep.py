"""A few drawn shapes of tests/shape_sweep.py in every run (the full sweep is a script)."""

from __future__ import annotations

import random

import pytest
from shape_sweep import FAMILIES, draw, failures, run_case


@pytest.mark.parametrize("family", FAMILIES)
def test_drawn_shape_matches_peft_on_both_backends(tmp_path, family):
    seed = 7000 + FAMILIES.index(family)
    case = draw(random.Random(seed), family)
    diffs = run_case(case, tmp_path, seed)
    assert not failures(diffs), f"{case.describe()}: {diffs}"


def test_draws_cover_what_they_claim():
    # The sweep is only worth its time if it reaches the variations it was written for.
    cases = [draw(random.Random(s)) for s in range(200)]
    assert {c.family for c in cases} == set(FAMILIES)
    shapes = [c.shape for c in cases]
    assert any(s["num_key_value_heads"] < s["num_attention_heads"] for s in shapes)
    assert any("head_dim" in s and s["head_dim"] * s["num_attention_heads"] != s["hidden_size"] for s in shapes)
    adapters = [a for c in cases for a in c.adapters]
    for key in ("use_rslora", "layers_to_transform", "rank_pattern", "alpha_pattern"):
        assert any(key in a for a in adapters), key
    assert any(len(c.adapters) == 2 for c in cases) and any(s < 0 for c in cases for s in c.scales)


def test_the_bound_follows_transformers_own_float32_error():
    assert failures({"f32 ref": 1e-6, "gguf lora": 2e-4, "onnx lora": 5e-5}) == {"gguf lora": 2e-4}
    assert not failures({"f32 ref": 1e-4, "gguf lora": 2e-4})  # an ill-conditioned case: 4x transformers' own
    assert failures({"f32 ref": 1e-4, "onnx lora": float("nan")})
