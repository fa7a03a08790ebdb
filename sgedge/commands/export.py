"""`sgedge export base|adapter`: a Hugging Face base to GGUF or ONNX, a PEFT adapter to a
GGUF LoRA or an `.onnx_adapter`, bound to its base."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sgedge.errors import InputError
from sgedge.notes import note as say_note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a Hugging Face base or a PEFT adapter")
    what = p.add_subparsers(dest="what", required=True, metavar="{base,adapter}")
    b = what.add_parser("base", help="export a Hugging Face base model")
    b.add_argument("model_dir", help="Hugging Face model directory (config.json + safetensors + tokenizer)")
    b.add_argument("--format", choices=["gguf", "onnx"], default="gguf", help="gguf (llama.cpp) or onnx (ONNX Runtime GenAI)")
    b.add_argument("-o", "--output", required=True, help="output file (.gguf) or folder (onnx)")
    b.add_argument("--dtype", help="gguf: f32, f16 (default), bf16, q8_0, q4_k_m; onnx: fp32 (default), fp16, int4")
    b.add_argument("--lora-targets", help="onnx: comma-separated linear layers that get LoRA slots "
                   "(default: all the family's projections; q/k/v and gate/up get slots as groups)")
    b.add_argument("--ep", choices=["cpu", "cuda"], help="onnx: the execution provider the graph is built for "
                   "(default cpu; cuda takes fp16 or int4 and is what runs fast on an NVIDIA GPU)")
    b.add_argument("--pre-tokenizer", help="llama.cpp pre-tokenizer name, when sgedge cannot recognise it")
    b.add_argument("--threads", type=int, help="threads for quantization (default: physical cores)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler=export_base)
    a = what.add_parser("adapter", help="export a PEFT LoRA safety adapter")
    a.add_argument("peft_dir", help="PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    a.add_argument("--format", choices=["gguf", "onnx"], default="gguf", help="the format of the base it runs on")
    a.add_argument("-o", "--output", required=True, help="output file (.gguf or .onnx_adapter)")
    a.add_argument("--base", help="the base it belongs to. gguf: Hugging Face directory or sgedge-exported "
                   ".gguf (default: base_model_name_or_path from adapter_config.json, if local); "
                   "onnx: the ONNX base folder exported by sgedge (required)")
    a.add_argument("--dtype", default="f32", choices=["f32", "f16"], help="gguf adapter tensors")
    a.add_argument("--allow-pickle", action="store_true",
                   help="accept a pickled adapter_model.bin (only for adapters you trust)")
    a.add_argument("-q", "--quiet", action="store_true")
    a.set_defaults(handler=export_adapter)


@contextmanager
def _progress(desc: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            # disable=None: no bar when stderr is not a terminal (logs, CI).
            bar = tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr, leave=False, disable=None)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


_DTYPE_ALIASES = {"gguf": {"fp32": "f32", "fp16": "f16"}, "onnx": {"f32": "fp32", "f16": "fp16"}}


def export_base(args: argparse.Namespace) -> int:
    dtype = _DTYPE_ALIASES[args.format].get(args.dtype, args.dtype)
    if args.format == "onnx":
        from sgedge.exporters.onnx_base import export_base_onnx

        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()] if args.lora_targets else None
        with _progress("export base", args.quiet) as progress:
            o = export_base_onnx(args.model_dir, args.output, dtype=dtype or "fp32", lora_targets=targets,
                                 ep=args.ep or "cpu", progress=progress)
        print(f"wrote {o.path}/ ({o.family}, {o.dtype} for {o.ep}, {o.n_slots} LoRA slots, {_mb(o.size_bytes)})")
        print(f"base fingerprint {o.fingerprint}")
        return 0
    from sgedge.exporters.gguf_base import export_base_gguf


    if args.lora_targets:
        raise InputError("--lora-targets applies to --format onnx (a GGUF base takes adapters on any layer)")
    if args.ep:
        raise InputError("--ep applies to --format onnx (a GGUF base runs on CPU or GPU as it is; "
                         "choose the device with sgedge run --device)")
    with _progress("export base", args.quiet) as progress:
        r = export_base_gguf(args.model_dir, args.output, dtype=dtype or "f16", pre_tokenizer=args.pre_tokenizer,
                             progress=progress, threads=args.threads)
    print(f"wrote {r.path} ({r.family}, {r.dtype}, {r.n_tensors} tensors, {_mb(r.size_bytes)})")
    print(f"base fingerprint {r.fingerprint}")
    for note in r.notes:
        say_note(note)
    return 0


def _binding_note(peft_dir: str, fingerprint: str) -> None:
    from sgedge.exporters.peft_adapter import binding_note

    note = binding_note(peft_dir, fingerprint)
    if note:
        say_note(note)


def export_adapter(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        from sgedge.exporters.onnx_adapter import export_adapter_onnx

        o = export_adapter_onnx(args.peft_dir, args.output, base=args.base, allow_pickle=args.allow_pickle)
        print(f"wrote {o.path} ({o.family} LoRA, rank {o.rank}, {o.n_slots} slots; {_mb(o.size_bytes)})")
        print(f"bound to base {o.fingerprint}")
        _binding_note(args.peft_dir, o.fingerprint)
        return 0
    from sgedge.exporters.gguf_adapter import export_adapter_gguf

    with _progress("export adapter", args.quiet) as progress:
        r = export_adapter_gguf(args.peft_dir, args.output, base=args.base, dtype=args.dtype,
                                allow_pickle=args.allow_pickle, progress=progress)
    print(f"wrote {r.path} ({r.family} LoRA, rank {r.rank}, alpha {r.alpha:g}, {r.n_modules} LoRA modules on "
          f"{', '.join(r.targets)}; {_mb(r.size_bytes)})")
    print(f"bound to base {r.fingerprint}")
    _binding_note(args.peft_dir, r.fingerprint)
    return 0
