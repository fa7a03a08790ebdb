"""`sgedge transfer`: move a safety adapter to a fine-tuned variant of its base (toolkit/transfer.py)."""

from __future__ import annotations

import argparse
import json
import sys

from sgedge.errors import InputError
from sgedge.notes import note as say_note


def register(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("transfer", help="move a safety adapter to a fine-tuned variant of its base "
                       "(checks the fit, optionally refits)")
    x.add_argument("adapter", help="PEFT safety adapter directory, trained on the base")
    x.add_argument("--to", required=True, dest="variant", metavar="VARIANT_DIR",
                   help="Hugging Face directory of the fine-tuned variant")
    x.add_argument("--from", dest="source", metavar="BASE_DIR",
                   help="the base the adapter was trained on (default: base_model_name_or_path, if local)")
    x.add_argument("-o", "--output", required=True, help="new PEFT adapter directory, bound to the variant")
    x.add_argument("--refit", action="store_true",
                   help="continue training the adapter on the variant (needs --harmful and --benign)")
    x.add_argument("--harmful", nargs="+", default=[], metavar="FILE[@LABEL]", help="with --refit: prompts to refuse")
    x.add_argument("--benign", nargs="+", default=[], metavar="FILE[@LABEL]",
                   help="with --refit: prompts whose answers stay the variant's own")
    x.add_argument("--epochs", type=float, default=0.5, help="with --refit (default 0.5)")
    x.add_argument("--lr", type=float, default=1e-3, help="with --refit (default 1e-3)")
    x.add_argument("--batch-size", type=int, default=16, help="with --refit: examples per step")
    x.add_argument("--refusal-style", choices=["short", "alternative"], default="alternative",
                   help="with --refit: short refusals, or refusals that offer a safe alternative")
    x.add_argument("--refusal-text", help="the refusal to train (overrides --refusal-style)")
    x.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to refit")
    x.add_argument("--seed", type=int, default=0, help="with --refit: seed of the data order")
    x.add_argument("--force", action="store_true",
                   help="transfer even if the variant does not look like a fine-tune of the base")
    x.add_argument("--allow-pickle", action="store_true", help="accept a pickled adapter_model.bin")
    x.add_argument("--json", action="store_true", help="print the check's figures as JSON")
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    x.set_defaults(handler=transfer)


def transfer(args: argparse.Namespace) -> int:

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
        say_note(note)
    if report.refit:
        print(f"refit on the variant: {report.refit['steps']} steps, final loss {report.refit['final_loss']}, "
              f"{report.refit['seconds']} s", file=sys.stderr)
    print(f"adapter written to {args.output}, bound to {args.variant}. Export it with `sgedge export adapter "
          f"{args.output} -o OUT.gguf` (the variant is now its base) or `--format onnx --base VARIANT_ONNX_DIR`, "
          "and check its refusals on the variant with `sgedge eval`", file=sys.stderr)
    return 0
