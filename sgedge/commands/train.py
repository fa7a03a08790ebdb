"""`sgedge train`: a LoRA safety adapter (PEFT) on a frozen Hugging Face base (toolkit/train.py)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a LoRA safety adapter (PEFT) on a frozen Hugging Face base")
    t.add_argument("--base", required=True, help="Hugging Face base model directory")
    t.add_argument("--harmful", nargs="+", required=True, metavar="FILE[@LABEL]",
                   help="prompts to refuse: .csv/.jsonl/.json/.txt (AdvBench, HarmBench, JBB, StrongREJECT, "
                   "XSTest columns recognised); a row's `refusal` field overrides the refusal text")
    t.add_argument("--benign", nargs="+", required=True, metavar="FILE[@LABEL]",
                   help="prompts whose answers stay the base's own (or the row's `response`)")
    t.add_argument("-o", "--output", required=True, help="new PEFT adapter directory")
    t.add_argument("--rank", type=int, default=8, help="LoRA rank")
    t.add_argument("--alpha", type=float, help="LoRA alpha (default: 2 x rank)")
    t.add_argument("--targets", help="comma-separated modules (default: all the family's projections)")
    t.add_argument("--layers", metavar="LIST", help="decoder layers that get LoRA, e.g. 4,5 or 2-5 (counted from 0; "
                   "default: every layer)")
    t.add_argument("--epochs", type=float, default=3.0, help="passes over the data (fractions allowed)")
    t.add_argument("--lr", type=float, default=2e-3, help="learning rate")
    t.add_argument("--batch-size", type=int, default=16, help="examples per step")
    t.add_argument("--max-len", type=int, default=256, help="tokens per example (longer ones are cut)")
    t.add_argument("--answer-tokens", type=int, default=64, help="length of the base answers kept for benign prompts")
    t.add_argument("--refusal-style", choices=["short", "alternative"], default="alternative",
                   help="short refusals, or refusals that offer a safe alternative")
    t.add_argument("--refusal-text", help="the refusal to train (overrides --refusal-style)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    t.add_argument("--seed", type=int, default=0, help="seed of the data order and the LoRA initialisation")
    t.add_argument("--save-every", type=int, default=50, help="checkpoint interval in steps")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each side held out; the adapter kept is the step with the lowest validation loss "
                   "(0: off; used when both sides have 20 prompts or more)")
    t.add_argument("--eval-every", type=int, default=25, help="steps between validation checks")
    t.add_argument("--patience", type=int, default=4,
                   help="validation checks without improvement before training stops early")
    t.add_argument("--quant-aware", choices=["q8"], help="train under llama.cpp's 8-bit rounding of the "
                   "activations that meet quantized weights (experimental: no measured gain on SmolLM2's Q4_1 file, "
                   "docs/safety.md)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(handler=train)


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
