"""`sgedge eval`: refusal, over-refusal, jailbreaks, utility and speed through the runtime (toolkit/evaluate.py)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="measure refusal, over-refusal, jailbreaks, utility and speed of exported artifacts")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="bundle folder (default: the embedded demo)")
    src.add_argument("--model", help="base model: .gguf file or ONNX folder")
    e.add_argument("--policy", action="append", default=[], metavar="KEY",
                   help="bundle policy to evaluate (repeatable; default: the bundle's default policy)")
    e.add_argument("--adapter", action="append", default=[], metavar="PATH[:SCALE]", help="with --model")
    e.add_argument("--no-adapter", action="store_true", help="also evaluate the bare base")
    e.add_argument("--harmful", nargs="+", default=[], metavar="FILE[@LABEL]", help="prompts that should be refused")
    e.add_argument("--benign", nargs="+", default=[], metavar="FILE[@LABEL]",
                   help="prompts that should be answered (over-refusal)")
    e.add_argument("--jailbreak-templates", metavar="FILE", help="templates with [INSERT PROMPT HERE]")
    e.add_argument("--qa", nargs="+", default=[], metavar="FILE", help="question/answer .jsonl/.csv: exact-match accuracy")
    e.add_argument("--ppl", metavar="FILE", help="benign text file: perplexity")
    e.add_argument("--judge", default="keywords", help="keywords (default) or guard:MODEL.gguf")
    e.add_argument("--keywords", metavar="FILE[:LIST]",
                   help="refusal keyword list (JSON like refusal_keywords.json, or one phrase per line)")
    e.add_argument("--limit", type=int, help="at most this many prompts per file (seeded sample)")
    e.add_argument("--max-tokens", type=int, default=48, help="reply length judged per prompt")
    e.add_argument("--backend", choices=["gguf", "onnx"])
    e.add_argument("--ctx", type=int, default=8192, help="context size (long jailbreak prompts need room)")
    e.add_argument("--threads", type=int)
    e.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    e.add_argument("--json", action="store_true", help="print the results as one JSON object")
    e.add_argument("--report", metavar="OUT.html", help="write an HTML report with a chart per metric")
    e.add_argument("-o", "--output", metavar="OUT.json", help="also write the JSON results (with every answer)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(handler=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from sgedge.toolkit.evaluate import EvalOptions, run_eval

    results = run_eval(EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)}))
    if args.json:
        print(json.dumps(results["summary"], indent=2))
    return 0
