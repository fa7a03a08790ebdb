"""Shared fixtures: tiny random models of every family, exported once per session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "phi3")


@dataclass(frozen=True)
class Tiny:
    family: str
    hf: Path  # Hugging Face model dir
    lora1: Path  # PEFT dir, rank 8, all projections
    lora2: Path  # PEFT dir, rank 4, another seed
    gguf: Path  # f32 base
    a1: Path  # adapter GGUFs
    a2: Path

    @property
    def family_modules(self) -> tuple[str, ...]:
        from sgedge.families import FAMILIES as REGISTRY

        return next(f for f in REGISTRY if f.name == self.family).lora_modules


@pytest.fixture(scope="session", autouse=True)
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory):
    """Bundle verification caches base hashes under ~/.cache; keep tests out of it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SGEDGE_CACHE_DIR", str(tmp_path_factory.mktemp("hash-cache")))
    # With no model, the tests of run/chat/serve/eval mean the tiny demo, whose replies they
    # know; tests/test_smollm2_bundle.py unsets this to run the SmolLM2 bundle.
    mp.setenv("SGEDGE_DEMO", "toy")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    return {}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Tiny]):
    """`tiny(family)` -> Tiny, built and exported on first use."""
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.testing.synthetic import build_lora, build_model

    def get(family: str) -> Tiny:
        if family not in tiny_models:
            root = tmp_path_factory.mktemp(family)
            hf = build_model(family, root / "hf", seed=FAMILIES.index(family) + int(__import__("os").environ.get("SGEDGE_TEST_SEED", "0")))
            lora1 = build_lora(hf, root / "lora1", r=8, alpha=16, seed=11)
            lora2 = build_lora(hf, root / "lora2", r=4, alpha=4, seed=22)
            gguf = export_base_gguf(hf, root / "base-f32.gguf", dtype="f32").path
            a1 = export_adapter_gguf(lora1, root / "a1.gguf").path
            a2 = export_adapter_gguf(lora2, root / "a2.gguf").path
            tiny_models[family] = Tiny(family, hf, lora1, lora2, gguf, a1, a2)
        return tiny_models[family]

    return get


@dataclass(frozen=True)
class TinyOnnx:
    base: Path  # fp32 ONNX folder with LoRA slots on every projection
    a1: Path  # .onnx_adapter files of Tiny.lora1 / lora2
    a2: Path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny):
    """`tiny_onnx(family)` -> TinyOnnx, exported on first use."""
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    cache: dict[str, TinyOnnx] = {}

    def get(family: str) -> TinyOnnx:
        if family not in cache:
            t = tiny(family)
            root = tmp_path_factory.mktemp(f"{family}-onnx")
            base = export_base_onnx(t.hf, root / "base-fp32").path
            a1 = export_adapter_onnx(t.lora1, root / "a1.onnx_adapter", base=base).path
            a2 = export_adapter_onnx(t.lora2, root / "a2.onnx_adapter", base=base).path
            cache[family] = TinyOnnx(base, a1, a2)
        return cache[family]

    return get


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
