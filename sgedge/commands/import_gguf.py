"""`sgedge import`: a GGUF file as the Hugging Face folder that train, export and transfer take."""

from __future__ import annotations

import argparse

from sgedge.commands.export import _mb, _progress


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import", help="turn a GGUF file (llama.cpp, LM Studio, Ollama) into a Hugging Face folder "
                       "that train and export take")
    i.add_argument("gguf", help="GGUF base model file (any type gguf-py dequantizes: F32, F16, BF16, Q8_0, Q4_x, K-quants...)")
    i.add_argument("-o", "--output", required=True, help="new Hugging Face model folder")
    i.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="weights in the folder (default: float32)")
    i.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    i.set_defaults(handler=import_gguf)


def import_gguf(args: argparse.Namespace) -> int:
    from sgedge.exporters.gguf_import import import_gguf as run_import

    with _progress("import", args.quiet) as progress:
        r = run_import(args.gguf, args.output, dtype=args.dtype, progress=progress)
    print(f"wrote {r.path}/ ({r.family}, {r.dtype}, {r.n_tensors} tensors, {_mb(r.size_bytes)})")
    print(f"base fingerprint {r.fingerprint}")
    print(f"source sha256 {r.source_sha256}: adapters exported against this folder also run on {args.gguf} as it is")
    return 0
