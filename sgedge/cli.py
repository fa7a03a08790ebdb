"""Command line: `sgedge export ...`, `sgedge run ...`.

`main(argv) -> int` is pure: it parses, dispatches to the module that implements the
verb (imported only then, so `sgedge run` never loads torch), and turns SgedgeError into
one clear line on stderr and exit code 1. Usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sgedge import __version__
from sgedge.errors import SgedgeError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a Hugging Face base or a PEFT adapter")
    what = p.add_subparsers(dest="what", required=True, metavar="{base,adapter}")
    b = what.add_parser("base", help="export a Hugging Face base model")
    b.add_argument("model_dir", help="Hugging Face model directory (config.json + safetensors + tokenizer)")
    b.add_argument("--format", choices=["gguf", "onnx"], default="gguf")
    b.add_argument("-o", "--output", required=True, help="output file (.gguf) or folder (onnx)")
    b.add_argument("--dtype", help="gguf: f32, f16 (default), bf16, q8_0, q4_k_m; onnx: fp32 (default), fp16, int4")
    b.add_argument("--lora-targets", help="onnx: comma-separated linear layers that get LoRA slots "
                   "(default: all the family's projections)")
    b.add_argument("--pre-tokenizer", help="llama.cpp pre-tokenizer name, when sgedge cannot recognise it")
    b.add_argument("--threads", type=int, help="threads for quantization (default: physical cores)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler="sgedge.exporters.cli:export_base")
    a = what.add_parser("adapter", help="export a PEFT LoRA safety adapter")
    a.add_argument("peft_dir", help="PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    a.add_argument("--format", choices=["gguf", "onnx"], default="gguf")
    a.add_argument("-o", "--output", required=True, help="output file (.gguf or .onnx_adapter)")
    a.add_argument("--base", help="the base it belongs to. gguf: Hugging Face directory or sgedge-exported "
                   ".gguf (default: base_model_name_or_path from adapter_config.json, if local); "
                   "onnx: the ONNX base folder exported by sgedge (required)")
    a.add_argument("--dtype", default="f32", choices=["f32", "f16"], help="gguf adapter tensors")
    a.add_argument("--allow-pickle", action="store_true",
                   help="accept a pickled adapter_model.bin (only for adapters you trust)")
    a.add_argument("-q", "--quiet", action="store_true")
    a.set_defaults(handler="sgedge.exporters.cli:export_adapter")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="generate with a base model and safety adapters")
    r.add_argument("prompt", help="the prompt (a user message unless --raw)")
    r.add_argument("--model", required=True, help="base model: .gguf file or ONNX folder")
    r.add_argument("--adapter", action="append", default=[], metavar="PATH[:SCALE]",
                   help="LoRA adapter to apply (.gguf or .onnx_adapter; repeatable; scale defaults to 1.0)")
    r.add_argument("--backend", choices=["gguf", "onnx"], help="override the backend picked from the model")
    r.add_argument("--raw", action="store_true", help="plain completion, no chat template")
    r.add_argument("--max-tokens", type=int, default=256)
    r.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--top-k", type=int, default=0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", choices=["auto", "cpu", "gpu", "cuda", "dml"], default="auto",
                   help="gguf: cpu|gpu|auto; onnx: cpu|cuda|dml|gpu|auto (GPU only when the engine has one)")
    r.add_argument("--gpu-layers", type=int, help="layers to offload (default: all when a GPU is used)")
    r.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    r.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    r.add_argument("--allow-unbound-adapter", action="store_true",
                   help="accept adapters without an sgedge base fingerprint (shapes are still checked)")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    r.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's own logs")
    r.set_defaults(handler="sgedge.runtime.cli:run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgedge", description="Swappable LoRA safety adapters for local LLMs.")
    parser.add_argument("--version", action="version", version=f"sgedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{export,run}")
    _export_parser(sub)
    _run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on usage errors and --help
        return int(e.code or 0)
    module, func = args.handler.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except SgedgeError as e:
        print(f"sgedge: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sgedge: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
