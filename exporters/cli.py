"""`sgedge export base|adapter` handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


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

    from sgedge.errors import InputError

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
        print(f"note: {note}", file=sys.stderr)
    return 0


def _binding_note(peft_dir: str, fingerprint: str) -> None:
    from sgedge.exporters.peft_adapter import binding_note

    note = binding_note(peft_dir, fingerprint)
    if note:
        print(f"note: {note}", file=sys.stderr)


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


def import_gguf(args: argparse.Namespace) -> int:
    from sgedge.exporters.gguf_import import import_gguf as run_import

    with _progress("import", args.quiet) as progress:
        r = run_import(args.gguf, args.output, dtype=args.dtype, progress=progress)
    print(f"wrote {r.path}/ ({r.family}, {r.dtype}, {r.n_tensors} tensors, {_mb(r.size_bytes)})")
    print(f"base fingerprint {r.fingerprint}")
    print(f"source sha256 {r.source_sha256}: adapters exported against this folder also run on {args.gguf} as it is")
    return 0
