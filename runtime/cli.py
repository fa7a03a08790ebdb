"""`sgedge run` handler."""

from __future__ import annotations

import argparse
import json
import os
import sys


def read_prompt(arg: str, raw: bool = False) -> str:
    """The prompt argument; `-` reads it from standard input (one trailing newline dropped).
    An empty chat prompt is refused (usually an unset shell variable); --raw may start from nothing."""
    from sgedge.errors import InputError

    text = sys.stdin.read().removesuffix("\n") if arg == "-" else arg
    if not raw and not text.strip():
        where = "standard input is empty" if arg == "-" else "the prompt is empty"
        raise InputError(f"{where}; give the text to send, e.g. sgedge run \"How do I make bread?\" "
                         "(or - to read it from standard input)")
    return text


def run(args: argparse.Namespace) -> int:
    from sgedge.runtime.api import Runtime, parse_adapter_arg
    from sgedge.runtime.llama_lib import set_verbose

    set_verbose(args.verbose)
    from sgedge.errors import InputError

    adapters = [parse_adapter_arg(a) for a in args.adapter]
    prompt = read_prompt(args.prompt, args.raw)
    if args.bundle and adapters:
        raise InputError("--adapter applies to --model; a bundle's adapters come from its policies (--region)")
    if args.model and (args.region or args.trusted_key):
        raise InputError("--region and --trusted-key apply to --bundle")
    if not args.bundle and not args.model:
        if adapters:
            raise InputError("--adapter needs --model (the embedded demo's adapters come from --region)")
        from sgedge.demo import demo_bundle

        args.bundle = str(demo_bundle())
    if args.bundle:
        from sgedge.manifest import require_bundle

        require_bundle(args.bundle, "a .gguf file or an ONNX model folder goes to --model")
    with Runtime.open(args.bundle or args.model, args.region, trusted_key=args.trusted_key, verify=args.verify,
                      no_adapter=args.no_adapter, adapters=adapters, backend=args.backend, device=args.device,
                      gpu_layers=args.gpu_layers, threads=args.threads, n_ctx=args.ctx,
                      allow_unbound_adapters=args.allow_unbound_adapter,
                      mode="fused" if args.fused else "dynamic") as rt:
        for note in rt.notes:
            print(f"sgedge: note: {note}", file=sys.stderr)
        region = args.region if args.region is not None else os.environ.get("SGEDGE_REGION")
        if args.bundle and region and not args.no_adapter and rt.policy_key(region) is None:
            # Not an error (the manifest names a default policy), but never silent.
            print(f"sgedge: this bundle has no policy for {region!r}; its default policy {rt.policy!r} applies "
                  f"(policies: {', '.join(sorted(rt.policies))})", file=sys.stderr)
        sink = None
        if not args.json:
            def sink(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()
        result = rt.generate(prompt, raw=args.raw, policy=[] if args.no_adapter else None, max_tokens=args.max_tokens,
                             temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                             seed=args.seed, on_text=sink)
        policy = rt.policy
    if args.json:
        obj = result.to_dict()
        if args.bundle:
            obj["policy"] = policy
        print(json.dumps(obj, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return 0

