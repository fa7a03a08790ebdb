"""`sgedge train` and `sgedge eval` handlers."""

from __future__ import annotations

import argparse
import json
import sys


def train(args: argparse.Namespace) -> int:
    from sgedge.toolkit.evaluate import stderr_note
    from sgedge.toolkit.prompts import load

    harmful, benign = load(args.harmful, "harmful", stderr_note), load(args.benign, "benign", stderr_note)
    try:
        from sgedge.toolkit.train import TrainConfig, train_adapter
    except ImportError as e:  # pragma: no cover - depends on the install
        from sgedge.errors import InputError

        raise InputError(f"sgedge train needs torch and peft: pip install 'sgedge[train]' ({e})") from e
    cfg = TrainConfig(rank=args.rank, alpha=args.alpha if args.alpha is not None else 2.0 * args.rank,
                      targets=args.targets.split(",") if args.targets else None, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, max_len=args.max_len, answer_tokens=args.answer_tokens,
                      refusal_style=args.refusal_style, refusal_text=args.refusal_text, seed=args.seed,
                      save_every=args.save_every, device=args.device)
    summary = train_adapter(args.base, harmful, benign, args.output, cfg, progress=not args.quiet,
                            resume=not args.no_resume)
    print(f"adapter written to {args.output}: {summary['harmful']} harmful + {summary['benign']} benign prompts, "
          f"{summary['steps']} steps, final loss {summary['final_loss']}, {summary['seconds']} s", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from sgedge.toolkit.evaluate import run_cli

    results = run_cli(args)
    if args.json:
        print(json.dumps(results["summary"], indent=2))
    return 0
