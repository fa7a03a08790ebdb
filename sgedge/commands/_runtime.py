"""What `run`, `chat` and `serve` share: their model/bundle options, opening the runtime
(the embedded demo when no model is given), the mode and the sampling defaults."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgedge.errors import InputError
from sgedge.notes import note as say_note

if TYPE_CHECKING:
    from sgedge.runtime.api import Runtime


def runtime_args(r: argparse.ArgumentParser, what: str) -> None:
    """What `run` and `serve` share: the model or bundle, its policy, and the engine."""
    src = r.add_mutually_exclusive_group()
    src.add_argument("--model", help="base model: .gguf file or ONNX folder")
    src.add_argument("--bundle", help="bundle folder (sgedge.json); the policy comes from --region "
                     "(default, with no --model either: the embedded demo bundle, see `sgedge demo info`)")
    r.add_argument("--region", help=f"bundle policy key{what} (default: $SGEDGE_REGION, then the bundle's default)")
    r.add_argument("--no-adapter", action="store_true", help="run the bare base (only if the bundle allows it)")
    r.add_argument("--trusted-key", help="publisher's public key: the bundle signature must verify with it")
    r.add_argument("--mode", choices=["dynamic", "fused", "pool"],
                   help="dynamic (default): adapters applied per token, any policy per request; fused: the policy "
                   "merged into a cached copy of the base, no LoRA cost per token, one fixed policy; pool: a fused "
                   "copy per policy, each request on its policy's copy (bare-base speed with switching)")
    r.add_argument("--fused", action="store_true", help="same as --mode fused")
    r.add_argument("--pool-memory", metavar="SIZE",
                   help="--mode pool: memory the fused copies may take, e.g. 2G (default: every policy); "
                   "policies beyond it run dynamically")
    r.add_argument("--verify", choices=["cached", "full"], default="cached",
                   help="hashing of a bundle's base (and of a GGUF base without sgedge metadata, which its adapters "
                   "name by sha256): cached by file identity (default) or full every time")
    r.add_argument("--adapter", action="append", default=[], metavar="PATH[:SCALE]",
                   help="LoRA adapter to apply (.gguf or .onnx_adapter; repeatable; scale defaults to 1.0)")
    r.add_argument("--backend", choices=["gguf", "onnx"], help="override the backend picked from the model")
    r.add_argument("--device", choices=["auto", "cpu", "gpu", "cuda", "dml"], default="auto",
                   help="gguf: cpu|gpu|auto; onnx: cpu|cuda|dml|gpu|auto (GPU only when the engine has one)")
    r.add_argument("--gpu-layers", type=int, help="layers to offload (default: all when a GPU is used)")
    r.add_argument("--threads", type=int, help="CPU threads (default: one per core other processes leave free, "
                   "measured while decoding; docs/modes.md)")
    r.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    r.add_argument("--allow-unbound-adapter", action="store_true",
                   help="accept adapters without an sgedge base fingerprint (shapes are still checked)")
    r.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's own logs")


def read_prompt(arg: str, raw: bool = False) -> str:
    """The prompt argument; `-` reads it from standard input (one trailing newline dropped).
    An empty chat prompt is refused (usually an unset shell variable); --raw may start from nothing."""

    text = sys.stdin.read().removesuffix("\n") if arg == "-" else arg
    if not raw and not text.strip():
        where = "standard input is empty" if arg == "-" else "the prompt is empty"
        raise InputError(f"{where}; give the text to send, e.g. sgedge run \"How do I make bread?\" "
                         "(or - to read it from standard input)")
    return text


@dataclass(frozen=True)
class Opened:
    """What `open_runtime` opened: the runtime, the folder or file it came from, whether
    that is a bundle, and the bundle that runs with no model when it is that one."""

    rt: Runtime
    source: Path
    bundle: bool
    demo: Any = None  # sgedge.demo.DefaultBundle

    @property
    def sampling(self) -> dict[str, float]:
        """Sampling defaults of what runs: the no-model bundle's (SmolLM2's model card), else none."""
        return dict(self.demo.sampling) if self.demo is not None else {}


def open_runtime(args: argparse.Namespace, adapters: list[tuple[str, float]], *, prompt_cache: bool = False) -> Opened:
    """Open what `run` / `chat` / `serve` were given (default: the bundle that runs with no
    model) and say its notes. `args` is read, never changed."""
    from sgedge.runtime.api import Runtime
    from sgedge.runtime.llama_lib import set_verbose


    set_verbose(args.verbose)
    if args.bundle and adapters:
        raise InputError("--adapter applies to --model; a bundle's adapters come from its policies (--region)")
    if args.model and (args.region or args.trusted_key):
        raise InputError("--region and --trusted-key apply to --bundle")
    bundle, chosen = args.bundle, None
    if not args.bundle and not args.model:
        if adapters:
            raise InputError("--adapter needs --model (the embedded demo's adapters come from --region)")
        from sgedge.demo import default_bundle

        chosen = default_bundle()
        bundle = str(chosen.path)
    if bundle:
        from sgedge.manifest import require_bundle

        require_bundle(bundle, "a .gguf file or an ONNX model folder goes to --model")
    rt = Runtime.open(bundle or args.model, args.region, trusted_key=args.trusted_key, verify=args.verify,
                      no_adapter=args.no_adapter, adapters=adapters, backend=args.backend, device=args.device,
                      gpu_layers=args.gpu_layers, threads=args.threads, n_ctx=args.ctx,
                      allow_unbound_adapters=args.allow_unbound_adapter,
                      mode=run_mode(args), prompt_cache=prompt_cache,
                      pool_memory=getattr(args, "pool_memory", None))
    for note in rt.notes:
        say_note(note)
    region = args.region if args.region is not None else os.environ.get("SGEDGE_REGION")
    if bundle and region and not args.no_adapter and rt.policy_key(region) is None:
        # Not an error (the manifest names a default policy), but never silent.
        print(f"sgedge: this bundle has no policy for {region!r}; its default policy {rt.policy!r} applies "
              f"(policies: {', '.join(sorted(rt.policies))})", file=sys.stderr)
    return Opened(rt, Path(bundle or args.model), bool(bundle), chosen)


def run_mode(args: argparse.Namespace) -> str:
    """--mode, with --fused as its older spelling."""

    mode = getattr(args, "mode", None)
    if getattr(args, "fused", False):
        if mode not in (None, "fused"):
            raise InputError(f"--fused and --mode {mode} contradict each other")
        return "fused"
    return mode or "dynamic"


def sampling_flags(p: argparse.ArgumentParser) -> None:
    """The sampling options of `run` and `chat`."""
    p.add_argument("--temperature", type=float, help="0 = greedy (default; 0.2 for the SmolLM2 bundle run "
                   "with no model, as its model card advises)")
    p.add_argument("--top-p", type=float, help="sample from the smallest set of tokens whose probability reaches P "
                   "(default 1 = off; 0.9 for the SmolLM2 bundle run with no model)")
    p.add_argument("--top-k", type=int, help="sample from the K most likely tokens (default 0 = off)")
    p.add_argument("--repeat-penalty", type=float, metavar="P",
                   help="make every token already in the prompt or reply less likely: its logit divided by P "
                   "(multiplied if negative), Hugging Face's repetition_penalty (default 1 = off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")


def sampling_args(args: argparse.Namespace, defaults_of: Opened) -> dict[str, float]:
    """--temperature / --top-p / --top-k / --repeat-penalty as given; those left out take the
    defaults of the bundle that runs with no model (SmolLM2's: 0.2 / 0.9 / penalty 1.15), else greedy."""
    defaults = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repeat_penalty": 1.0, **defaults_of.sampling}
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
