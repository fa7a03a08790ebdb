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
        from sgedge.toolkit.train import TrainConfig, parse_layers, train_adapter
    except ImportError as e:  # pragma: no cover - depends on the install
        from sgedge.errors import InputError

        raise InputError(f"sgedge train needs torch and peft: pip install 'sgedge[train]' ({e})") from e
    cfg = TrainConfig(rank=args.rank, alpha=args.alpha if args.alpha is not None else 2.0 * args.rank,
                      targets=args.targets.split(",") if args.targets else None,
                      layers=parse_layers(args.layers) if args.layers is not None else None, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, max_len=args.max_len, answer_tokens=args.answer_tokens,
                      refusal_style=args.refusal_style, refusal_text=args.refusal_text, seed=args.seed,
                      save_every=args.save_every, device=args.device, val_fraction=args.val_fraction,
                      eval_every=args.eval_every, patience=args.patience,
                      quant_aware=args.quant_aware)
    if args.eval_every < 1 or args.patience < 1:
        from sgedge.errors import InputError

        raise InputError("--eval-every and --patience take whole numbers of 1 or more")
    summary = train_adapter(args.base, harmful, benign, args.output, cfg, progress=not args.quiet,
                            resume=not args.no_resume)
    print(f"adapter written to {args.output}: {summary['harmful']} harmful + {summary['benign']} benign prompts, "
          f"{summary['steps']} steps, final loss {summary['final_loss']}, {summary['seconds']} s", file=sys.stderr)
    val = summary.get("validation")
    if val:
        print(f"validation ({val['harmful']} harmful + {val['benign']} benign held out): best loss {val['best_loss']} at "
              f"step {val['best_step']}{', stopped early' if val['stopped_early'] else ''}; that step's adapter is kept",
              file=sys.stderr)
    return 0


def transfer(args: argparse.Namespace) -> int:
    from sgedge.errors import InputError

    refit = None
    if args.refit:
        if not args.harmful or not args.benign:
            raise InputError("--refit trains on the variant: give --harmful FILE and --benign FILE")
        from sgedge.toolkit.evaluate import stderr_note
        from sgedge.toolkit.prompts import load

        harmful, benign = load(args.harmful, "harmful", stderr_note), load(args.benign, "benign", stderr_note)
        try:
            from sgedge.toolkit.train import TrainConfig
        except ImportError as e:  # pragma: no cover - depends on the install
            raise InputError(f"sgedge transfer --refit needs torch and peft: pip install 'sgedge[train]' ({e})") from e
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, refusal_style=args.refusal_style,
                          refusal_text=args.refusal_text, seed=args.seed, device=args.device)
        refit = (harmful, benign, cfg)
    elif args.harmful or args.benign:
        raise InputError("--harmful/--benign are for --refit; add --refit to train on the variant")
    from sgedge.toolkit.transfer import transfer_adapter

    report = transfer_adapter(args.adapter, args.variant, args.output, source=args.source, force=args.force,
                              allow_pickle=args.allow_pickle, refit=refit, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    worst = report.max_drift
    print(f"the variant moved the adapter's {len(report.modules)} target layers by a median "
          f"{report.median_drift:.2%} (most: {worst.drift:.2%}, {worst.module}); the adapter's own change is a "
          f"median {report.median_adapter:.2%}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if report.refit:
        print(f"refit on the variant: {report.refit['steps']} steps, final loss {report.refit['final_loss']}, "
              f"{report.refit['seconds']} s", file=sys.stderr)
    print(f"adapter written to {args.output}, bound to {args.variant}. Export it with `sgedge export adapter "
          f"{args.output} -o OUT.gguf` (the variant is now its base) or `--format onnx --base VARIANT_ONNX_DIR`, "
          "and check its refusals on the variant with `sgedge eval`", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from sgedge.toolkit.evaluate import run_cli

    results = run_cli(args)
    if args.json:
        print(json.dumps(results["summary"], indent=2))
    return 0
