"""`sgedge run`: one reply from a model or bundle (the embedded demo with no model)."""

from __future__ import annotations

import argparse
import json
import sys

from sgedge.commands._runtime import open_runtime, read_prompt, runtime_args, sampling_args, sampling_flags
from sgedge.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="generate with a base model and safety adapters")
    r.add_argument("prompt", help="the prompt (a user message unless --raw); - reads it from standard input")
    runtime_args(r, "")
    r.add_argument("--raw", action="store_true", help="plain completion, no chat template")
    r.add_argument("--max-tokens", type=int, default=256, help="reply length limit in tokens")
    sampling_flags(r)
    r.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the reply where it first contains TEXT (left out; repeatable)")
    r.add_argument("--chat-template-kwargs", metavar="JSON",
                   help="more chat template variables, as a JSON object (e.g. '{\"enable_thinking\": false}')")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    r.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sgedge.runtime.api import parse_adapter_arg


    adapters = [parse_adapter_arg(a) for a in args.adapter]
    prompt = read_prompt(args.prompt, args.raw)
    template_kwargs = None
    if args.chat_template_kwargs:
        try:
            template_kwargs = json.loads(args.chat_template_kwargs)
        except json.JSONDecodeError as e:
            raise InputError(f"--chat-template-kwargs is not JSON ({e})") from None
        if not isinstance(template_kwargs, dict):
            raise InputError("--chat-template-kwargs takes a JSON object, e.g. '{\"enable_thinking\": false}'")
    opened = open_runtime(args, adapters)
    with opened.rt as rt:
        sink = None
        if not args.json:
            def sink(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()
        result = rt.generate(prompt, raw=args.raw, policy=[] if args.no_adapter else None, max_tokens=args.max_tokens,
                             **sampling_args(args, opened), seed=args.seed, on_text=sink, stop=args.stop,
                             template_kwargs=template_kwargs)
        policy = rt.policy
    if args.json:
        obj = result.to_dict()
        if opened.bundle:
            obj["policy"] = policy
        print(json.dumps(obj, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return 0
