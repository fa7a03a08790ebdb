"""PEFT LoRA adapter -> llama.cpp GGUF LoRA adapter, bound to its base.

The file follows llama.cpp's adapter format (`general.type=adapter`,
`adapter.type=lora`, `adapter.lora.alpha`, tensors `<base tensor>.lora_a` (r x in) and
`.lora_b` (out x r)), so stock llama.cpp loads it; sgedge adds the base fingerprint.
A and B stay factored: the rope permutation applies to B's rows (STYLE: never form B@A).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sgedge
from sgedge import binding
from sgedge._fs import atomic_path
from sgedge.errors import AdapterError, InputError
from sgedge.exporters.hf_model import HFModel, permute_rows
from sgedge.exporters.peft_adapter import PeftAdapter, load_peft_adapter
from sgedge.families import FAMILIES, Family

ADAPTER_DTYPES = ("f32", "f16")


@dataclass(frozen=True)
class BaseSpec:
    """What an adapter export needs to know of its base, from a HF dir or a sgedge GGUF."""

    family: Family
    fingerprint: str
    n_layers: int
    heads: dict[str, int]
    shapes: dict[str, tuple[int, ...]]  # GGUF tensor name -> (out, in)
    source: str
    # sha256 of the GGUF file this base was imported from (or is), when it has no sgedge metadata
    source_sha256: str | None = None

    def gguf_name(self, module: str) -> str | None:
        import gguf

        arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.family.gguf_arch)
        return gguf.get_tensor_name_map(arch, self.n_layers).get_name(module + ".weight", try_suffixes=(".weight",))


def base_spec_from_hf(model_dir: str | Path) -> BaseSpec:
    from sgedge.exporters.gguf_base import plan_tensors
    from sgedge.exporters.gguf_import import read_import_record

    model = HFModel.open(model_dir)
    plan = plan_tensors(model)
    record = read_import_record(model.path)
    # Only while the weights are still the imported ones does the folder speak for its GGUF.
    source = record["source"]["sha256"] if record and record["fingerprint"] == model.fingerprint else None
    return BaseSpec(
        model.family,
        model.fingerprint,
        model.n_layers,
        {"num_attention_heads": model.n_head, "num_key_value_heads": model.n_head_kv},
        {plan[n]: s for n, s in model.shapes.items() if n in plan},
        str(model.path),
        source,
    )


def base_spec_from_gguf(path: str | Path, want: str | None = None) -> BaseSpec:
    """The spec of a sgedge-exported GGUF (from its metadata), or of any other GGUF base
    sgedge imports: then the fingerprint is its import's (computed, not written; of the
    float32 import unless `want` names the bfloat16 one's) and the file's sha256 binds."""
    from sgedge.formats.gguf_meta import read_gguf_info

    info = read_gguf_info(path)
    if info.is_adapter:
        raise InputError(f"{path} is an adapter, not a base model")
    fam_name = info.get(binding.KEY_FAMILY)
    fingerprint = info.get(binding.KEY_BASE_FINGERPRINT)
    source_sha = None
    if not fam_name or not fingerprint:
        from sgedge.bundle_verify import sha256_file
        from sgedge.exporters.gguf_import import import_fingerprints
        from sgedge.exporters.gguf_import_meta import FAMILY_BY_ARCH

        fam_name = FAMILY_BY_ARCH.get(info.arch)
        if fam_name is None:
            raise InputError(f"{path} was not exported by sgedge and its architecture {info.arch!r} is not one sgedge "
                             "imports; pass the Hugging Face model directory as --base")
        prints = import_fingerprints(path)
        fingerprint = want if want in prints.values() else prints["float32"]
        source_sha = sha256_file(Path(path))
    family = next(f for f in FAMILIES if f.name == fam_name)
    arch = info.arch
    return BaseSpec(
        family,
        fingerprint,
        int(info.get(f"{arch}.block_count")),
        {
            "num_attention_heads": int(info.get(f"{arch}.attention.head_count")),
            "num_key_value_heads": int(info.get(f"{arch}.attention.head_count_kv")),
        },
        {n: s for n, s in info.shapes.items() if n.endswith(".weight")},
        str(path),
        source_sha,
    )


def resolve_base(adapter: PeftAdapter, base: str | Path | None) -> BaseSpec:
    candidate = base if base is not None else adapter.base_model
    if candidate is None or not Path(candidate).exists():
        named = f" (adapter_config.json names {adapter.base_model!r}, not a local path)" if adapter.base_model else ""
        raise InputError(
            f"the adapter must be bound to its base model{named}: pass --base MODEL_DIR "
            "(the Hugging Face directory) or --base BASE.gguf (a base exported by sgedge)"
        )
    p = Path(candidate)
    if p.is_file():
        from sgedge.exporters.peft_adapter import recorded_base

        recorded = recorded_base(adapter.path)
        return base_spec_from_gguf(p, want=recorded[0] if recorded else None)
    return base_spec_from_hf(p)


@dataclass(frozen=True)
class AdapterTensor:
    gguf_name: str
    a: np.ndarray
    b: np.ndarray


def plan_adapter(adapter: PeftAdapter, base: BaseSpec) -> list[AdapterTensor]:
    """Map, permute and rescale every LoRA module; raise one error listing all misfits."""
    problems: list[str] = []
    out: list[AdapterTensor] = []
    fam = base.family
    for m in adapter.modules:
        if m.leaf not in fam.lora_modules:
            problems.append(
                f"{m.module}: '{m.leaf}' is not a linear layer sgedge adapts in {fam.name} "
                f"(allowed: {', '.join(fam.lora_modules)})"
            )
            continue
        name = base.gguf_name(m.module)
        if name is None or name not in base.shapes:
            problems.append(f"{m.module}: the base ({base.source}) has no such layer")
            continue
        rows, cols = base.shapes[name]
        if m.a.shape[1] != cols or m.b.shape[0] != rows:
            problems.append(
                f"{m.module}: LoRA maps {m.a.shape[1]} -> {m.b.shape[0]} features but the base layer is "
                f"{cols} -> {rows}"
            )
            continue
        b = m.b
        heads_key = fam.permute_heads.get(m.leaf)
        if heads_key is not None:
            b = permute_rows(b, base.heads[heads_key])
        # llama.cpp scales every tensor by alpha / rank(tensor); fold whatever PEFT
        # does beyond that (alpha_pattern, rsLoRA) into B.
        factor = m.scaling * m.rank / adapter.lora_alpha
        if not np.isclose(factor, 1.0, rtol=0, atol=1e-12):
            b = b * np.float32(factor)
        out.append(AdapterTensor(name, m.a, b))
    if problems:
        raise AdapterError(
            f"adapter {adapter.path} does not fit base {base.source}: " + "; ".join(problems[:8])
            + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        )
    return out


@dataclass(frozen=True)
class AdapterExport:
    path: Path
    family: str
    fingerprint: str
    n_modules: int
    rank: int
    alpha: float
    targets: tuple[str, ...]
    size_bytes: int


def export_adapter_gguf(
    peft_dir: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    dtype: str = "f32",
    allow_pickle: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> AdapterExport:
    import gguf

    if dtype not in ADAPTER_DTYPES:
        raise InputError(f"unknown adapter dtype {dtype!r}; choose one of {', '.join(ADAPTER_DTYPES)}")
    adapter = load_peft_adapter(peft_dir, allow_pickle=allow_pickle)
    spec = resolve_base(adapter, base)
    tensors = plan_adapter(adapter, spec)
    targets = tuple(sorted({t.gguf_name.split(".")[2] for t in tensors}))
    np_dtype = np.float32 if dtype == "f32" else np.float16
    out = Path(out)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, spec.family.gguf_arch)
        w.add_string("general.type", "adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", adapter.lora_alpha)
        w.add_name(Path(peft_dir).resolve().name)
        w.add_string(binding.KEY_PRODUCER, f"sgedge {sgedge.__version__}")
        w.add_string(binding.KEY_BASE_FINGERPRINT, spec.fingerprint)
        w.add_string(binding.KEY_FAMILY, spec.family.name)
        if spec.source_sha256:
            w.add_string(binding.KEY_BASE_SOURCE_SHA256, spec.source_sha256)
        w.add_string(binding.KEY_ADAPTER_TARGETS, ",".join(targets))
        w.add_uint32(binding.KEY_ADAPTER_RANK, adapter.rank)
        for i, t in enumerate(tensors):
            w.add_tensor(t.gguf_name + ".lora_a", np.ascontiguousarray(t.a, dtype=np_dtype))
            w.add_tensor(t.gguf_name + ".lora_b", np.ascontiguousarray(t.b, dtype=np_dtype))
            if progress:
                progress(i + 1, len(tensors))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return AdapterExport(out, spec.family.name, spec.fingerprint, len(tensors), adapter.rank,
                         adapter.lora_alpha, targets, out.stat().st_size)
