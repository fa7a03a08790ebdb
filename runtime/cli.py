"""`sgedge run` handler."""

from __future__ import annotations

import argparse
import json
import sys


def run(args: argparse.Namespace) -> int:
    from sgedge.runtime.api import Runtime, parse_adapter_arg
    from sgedge.runtime.llama_lib import set_verbose

    set_verbose(args.verbose)
    adapters = [parse_adapter_arg(a) for a in args.adapter]
    with Runtime.open(args.model, adapters=adapters, backend=args.backend, device=args.device,
                      gpu_layers=args.gpu_layers, threads=args.threads, n_ctx=args.ctx,
                      allow_unbound_adapters=args.allow_unbound_adapter) as rt:
        sink = None
        if not args.json:
            def sink(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()
        result = rt.generate(args.prompt, raw=args.raw, max_tokens=args.max_tokens,
                             temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                             seed=args.seed, on_text=sink)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return 0

