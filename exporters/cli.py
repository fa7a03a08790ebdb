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


def export_base(args: argparse.Namespace) -> int:
    from sgedge.exporters.gguf_base import export_base_gguf

    with _progress("export base", args.quiet) as progress:
        r = export_base_gguf(args.model_dir, args.output, dtype=args.dtype, pre_tokenizer=args.pre_tokenizer,
                             progress=progress, threads=args.threads)
    print(f"wrote {r.path} ({r.family}, {r.dtype}, {r.n_tensors} tensors, {_mb(r.size_bytes)})")
    print(f"base fingerprint {r.fingerprint}")
    return 0


def export_adapter(args: argparse.Namespace) -> int:
    from sgedge.exporters.gguf_adapter import export_adapter_gguf

    with _progress("export adapter", args.quiet) as progress:
        r = export_adapter_gguf(args.peft_dir, args.output, base=args.base, dtype=args.dtype,
                                allow_pickle=args.allow_pickle, progress=progress)
    print(f"wrote {r.path} ({r.family} LoRA, rank {r.rank}, alpha {r.alpha:g}, {r.n_modules} layers: "
          f"{', '.join(r.targets)}; {_mb(r.size_bytes)})")
    print(f"bound to base {r.fingerprint}")
    return 0
