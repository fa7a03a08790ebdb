"""`sgedge eval`: measure exported artifacts through the runtime (what ships is what is measured).

Configurations are bundle policies (`--policy KEY`, repeatable), the adapters given with
`--model`, and the bare base (`--no-adapter`); each runs the same prompts with greedy
decoding on one Runtime (the base is loaded once, adapters switch per call). Metrics:

- harmful refusal rate, per file and overall (judge: keywords or a guard model);
- over-refusal: refusal rate on benign prompts (always the keyword judge: a guard
  model scores harm, not refusals);
- jailbreak attack success rate: harmful prompts wrapped in templates, 1 - refusal rate;
- utility: exact-match accuracy on question/answer files, perplexity on a text file;
- speed: median prefill and decode tokens/s of the generations above.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sgedge.errors import InputError
from sgedge.manifest import read_manifest, require_bundle
from sgedge.notes import note as say_note
from sgedge.toolkit.judge import KeywordJudge, keyword_judge, make_judge, rate, wilson_ci
from sgedge.toolkit.prompts import Prompt, load, parse_file_arg, read_prompts, select

SLOT = "[INSERT PROMPT HERE]"


@dataclass
class Config:
    name: str
    policy: Any = None     # bundle policy key, [] for the bare base, or None with `adapters`
    adapters: list[tuple[str, float]] | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"policy": self.policy} if self.policy is not None else {"adapters": self.adapters or []}


@dataclass
class Task:
    kind: str            # harmful | benign | jailbreak | qa
    source: str
    items: list[Prompt]
    results: dict[str, list[dict]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # prompts longer than the model's context


def _limit(items: list[Prompt], limit: int | None, seed: int) -> list[Prompt]:
    if limit is None or len(items) <= limit:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def normalize(text: str) -> str:
    return " ".join(text.strip().lower().split()).rstrip(".!?")


def _jailbreaks(templates_file: str, harmful: list[Prompt], limit: int | None, seed: int) -> list[Prompt]:
    rows = read_prompts(templates_file)
    templates = [r.text for r in rows if SLOT in r.text]
    if not templates:
        raise InputError(f"--jailbreak-templates {templates_file}: no template contains {SLOT}")
    if not harmful:
        raise InputError("--jailbreak-templates needs --harmful prompts to fill the templates with")
    rng = random.Random(seed)
    n = min(limit or 100, len(templates) * len(harmful))
    pairs = rng.sample(range(len(templates) * len(harmful)), n)
    out = []
    for k in sorted(pairs):
        t, h = templates[k // len(harmful)], harmful[k % len(harmful)]
        out.append(Prompt(t.replace(SLOT, h.text), Path(templates_file).name, category=h.source))
    return out


@dataclass
class EvalOptions:
    """What `sgedge eval` measures, on what (the command's options, typed)."""

    bundle: str | None = None
    model: str | None = None
    policy: list[str] = field(default_factory=list)
    adapter: list[str] = field(default_factory=list)  # PATH[:SCALE], with model
    no_adapter: bool = False
    harmful: list[str] = field(default_factory=list)  # FILE[@LABEL]
    benign: list[str] = field(default_factory=list)
    jailbreak_templates: str | None = None
    qa: list[str] = field(default_factory=list)
    ppl: str | None = None
    judge: str = "keywords"
    keywords: str | None = None
    limit: int | None = None
    max_tokens: int = 48
    backend: str | None = None
    ctx: int = 8192
    threads: int | None = None
    seed: int = 0
    json: bool = False
    report: str | None = None
    output: str | None = None
    quiet: bool = False


def stderr_note(msg: str) -> None:
    say_note(msg)


def demo_defaults(opts: EvalOptions) -> EvalOptions:
    """With no prompt files on the embedded demo, evaluate the sets it ships: its held-out
    benign questions (over-refusal and exact match) and its regulated-advice prompts
    (declined by the strict policy only, by design), said on stderr."""
    if opts.harmful or opts.benign or opts.qa or opts.ppl or opts.jailbreak_templates or opts.bundle or opts.model:
        return opts
    from sgedge.demo import DEMO_DIR, SMOLLM2_DIR, default_bundle

    chosen = default_bundle()
    if chosen.name == "smollm2":
        ev = SMOLLM2_DIR / "eval"
        harmful, benign = ev / "harmful_heldout.jsonl", ev / "benign_heldout.jsonl"
        regulated = ev / "regulated_eval.jsonl"
        if not harmful.is_file():
            return opts
        opts = replace(opts, harmful=[str(harmful)], benign=[str(benign), str(regulated)])
        stderr_note("no prompt files given: evaluating the SmolLM2 bundle's own held-out sets (harmful_heldout.jsonl "
                    "and benign_heldout.jsonl: prompts the recipe wrote and never trained on; regulated_eval.jsonl: "
                    "personal medical, legal and financial advice, which the strict policy declines by design); "
                    "give --harmful / --benign files (e.g. HarmBench, XSTest) for the public sets")
        return opts
    ev = DEMO_DIR / "eval"
    benign, regulated = ev / "benign_heldout.jsonl", ev / "regulated_eval.jsonl"
    if not benign.is_file():
        return opts
    opts = replace(opts, qa=[str(benign)], benign=[str(benign)] + ([str(regulated)] if regulated.is_file() else []))
    stderr_note("no prompt files given: evaluating the embedded demo's own sets (benign_heldout.jsonl: over-refusal "
                "and exact match; regulated_eval.jsonl: personal medical, legal and financial advice, which the "
                "strict policy declines by design); give --harmful FILE (e.g. AdvBench) for harmful refusal")
    return opts


def build_tasks(opts: EvalOptions) -> list[Task]:
    """The prompt sets `opts` names (run_eval applies demo_defaults first)."""
    tasks: list[Task] = []
    harmful_all: list[Prompt] = []
    for spec in opts.harmful:
        items = _limit(load([spec], "harmful", stderr_note), opts.limit, opts.seed)
        harmful_all += items
        tasks.append(Task("harmful", spec, items))
    for spec in opts.benign:
        tasks.append(Task("benign", spec, _limit(load([spec], "benign", stderr_note), opts.limit, opts.seed)))
    if opts.jailbreak_templates:
        tasks.append(Task("jailbreak", opts.jailbreak_templates,
                          _jailbreaks(opts.jailbreak_templates, harmful_all, opts.limit, opts.seed)))
    for spec in opts.qa:
        path, label = parse_file_arg(spec)
        items = [q for q in select(read_prompts(path), label) if q.answer]
        if not items:
            raise InputError(f"--qa {spec}: no rows with both a question and an answer column")
        tasks.append(Task("qa", spec, _limit(items, opts.limit, opts.seed)))
    if not tasks and not opts.ppl:
        raise InputError("nothing to evaluate: give --harmful, --benign, --qa or --ppl files")
    return tasks


def perplexity(rt: Any, cfg: Config, text_file: str, max_tokens: int = 512) -> float:
    import numpy as np

    p = Path(text_file)
    if not p.is_file():
        raise InputError(f"--ppl {p}: no such file")
    nll, count = 0.0, 0
    for para in [x for x in p.read_text(encoding="utf-8").split("\n\n") if x.strip()]:
        ids = rt.encode_prompt(para.strip(), raw=True)[:max_tokens]
        if len(ids) < 2:
            continue
        logits = np.asarray(rt.logits(ids, **cfg.kwargs()), dtype=np.float64)[:-1]
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        nll -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
        count += len(ids) - 1
    if not count:
        raise InputError(f"--ppl {p}: no text to score")
    return round(math.exp(nll / count), 4)


def _summary(tasks: Sequence[Task], configs: Sequence[Config], judge: Any, kw: KeywordJudge,
             ppl: dict[str, float]) -> dict[str, Any]:
    metrics: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        m: dict[str, Any] = {"harmful_by_file": {}, "benign_by_file": {}, "qa_by_file": {}}
        harm, ben, jb, qa, dec, pre = [], [], [], [], [], []
        for t in tasks:
            rows = t.results[cfg.name]
            flags = [r["refused"] for r in rows]
            if t.kind == "harmful":
                m["harmful_by_file"][t.source] = {"n": len(rows), "refusal_rate": rate(flags), "ci95": wilson_ci(flags)}
                harm += flags
            elif t.kind == "benign":
                m["benign_by_file"][t.source] = {"n": len(rows), "refusal_rate": rate(flags), "ci95": wilson_ci(flags)}
                ben += flags
            elif t.kind == "jailbreak":
                jb += flags
            else:
                ok = [r["correct"] for r in rows]
                m["qa_by_file"][t.source] = {"n": len(rows), "exact_match": rate(ok), "ci95": wilson_ci(ok),
                                             "refusal_rate": rate(flags)}
                qa += ok
            dec += [r["decode_tok_s"] for r in rows if r["decode_tok_s"]]
            pre += [r["prefill_tok_s"] for r in rows if r["prefill_tok_s"]]
        m["harmful_refusal_rate"] = rate(harm) if harm else None
        m["over_refusal_rate"] = rate(ben) if ben else None
        m["jailbreak_asr"] = round(1 - rate(jb), 4) if jb else None
        m["qa_exact_match"] = rate(qa) if qa else None
        # Sample size and 95% interval of each rate: 80.0% against 86.7% at n=15 is one prompt.
        m["n"] = {"harmful_refusal_rate": len(harm), "over_refusal_rate": len(ben), "jailbreak_asr": len(jb),
                  "qa_exact_match": len(qa)}
        m["ci95"] = {"harmful_refusal_rate": wilson_ci(harm) if harm else None,
                     "over_refusal_rate": wilson_ci(ben) if ben else None,
                     "jailbreak_asr": [round(1 - x, 4) for x in reversed(wilson_ci(jb))] if jb else None,
                     "qa_exact_match": wilson_ci(qa) if qa else None}
        m["perplexity"] = ppl.get(cfg.name)
        m["decode_tok_s"] = round(statistics.median(dec), 1) if dec else None
        m["prefill_tok_s"] = round(statistics.median(pre), 1) if pre else None
        metrics[cfg.name] = m
    return {"configs": [c.name for c in configs], "metrics": metrics, "judge": judge.describe(),
            "over_refusal_judge": kw.describe(),
            "tasks": [{"kind": t.kind, "source": t.source, "n": len(t.items),
                       "skipped_too_long": max(t.skipped.values(), default=0)} for t in tasks]}


def open_runtime(opts: EvalOptions) -> tuple[Any, list[Config], str]:
    from sgedge.runtime.api import Runtime, parse_adapter_arg

    if opts.model:
        if opts.policy:
            raise InputError("--policy applies to --bundle; with --model give --adapter")
        adapters = [parse_adapter_arg(a) for a in opts.adapter]
        rt = Runtime.open(opts.model, adapters=adapters, backend=opts.backend, threads=opts.threads, n_ctx=opts.ctx)
        configs = []
        if adapters:
            configs.append(Config("+".join(f"{Path(p).stem}:{s:g}" for p, s in adapters),
                                  adapters=[(a.name, a.scale) for a in rt.active]))
        if opts.no_adapter or not adapters:
            configs.append(Config("no adapter", policy=[]))
        return rt, configs, str(opts.model)
    if opts.adapter:
        raise InputError("--adapter applies to --model; a bundle's adapters come from --policy")
    bundle = opts.bundle
    if bundle is None:
        from sgedge.demo import default_bundle

        bundle = str(default_bundle().path)
    require_bundle(bundle, "a .gguf file or an ONNX model folder goes to --model")
    manifest, _ = read_manifest(bundle)
    keys = []
    for k in opts.policy:  # checked before the model is loaded; "eu" names the EU policy
        name = manifest.policy_key(k)
        if name is None:
            raise InputError(f"--policy {k}: not in the bundle (policies: {', '.join(manifest.policies)})")
        keys.append(name)
    rt = Runtime.open(bundle, keys[0] if keys else None, backend=opts.backend, threads=opts.threads, n_ctx=opts.ctx)
    if not keys:
        if rt.policy is None:
            rt.close()
            raise InputError(f"{bundle}: no default policy; choose one with --policy ({', '.join(rt.policies)})")
        keys = [rt.policy]
    configs = [Config(k, policy=k) for k in keys]
    if opts.no_adapter:
        configs.append(Config("no adapter", policy=[]))
    return rt, configs, str(bundle)


def run_eval(opts: EvalOptions) -> dict[str, Any]:
    from tqdm.auto import tqdm

    opts = demo_defaults(opts)
    tasks = build_tasks(opts)
    kw = keyword_judge(opts.keywords)
    judge = make_judge(opts.judge, opts.keywords, opts.threads)
    rt, configs, target = open_runtime(opts)
    for note in rt.notes:
        stderr_note(note)
    t0 = time.perf_counter()
    ppl: dict[str, float] = {}
    try:
        total = sum(len(t.items) for t in tasks) * len(configs)
        with tqdm(total=total, desc="eval", unit="prompt", disable=opts.quiet, file=sys.stderr) as bar:
            for cfg in configs:
                bar.set_postfix(config=cfg.name)
                for t in tasks:
                    rows = t.results.setdefault(cfg.name, [])
                    for q in t.items:
                        try:
                            r = rt.generate(q.text, max_tokens=opts.max_tokens, seed=opts.seed, **cfg.kwargs())
                        except InputError as e:
                            if "do not fit the context" not in str(e):
                                raise
                            t.skipped[cfg.name] = t.skipped.get(cfg.name, 0) + 1
                            bar.update(1)
                            continue
                        text = r.text.strip()
                        row = {"prompt": q.text, "answer": text, "decode_tok_s": r.timings.as_dict()["decode_tok_s"],
                               "prefill_tok_s": r.timings.as_dict()["prefill_tok_s"]}
                        if t.kind in ("harmful", "jailbreak"):
                            row["refused"] = judge.is_refusal(q.text, text)
                        elif t.kind == "benign":
                            row["refused"] = kw.is_refusal(q.text, text)
                        else:
                            row["expected"] = q.answer
                            row["correct"] = normalize(text) == normalize(q.answer)
                            row["refused"] = kw.is_refusal(q.text, text)
                        rows.append(row)
                        bar.update(1)
                if opts.ppl:
                    ppl[cfg.name] = perplexity(rt, cfg, opts.ppl)
    finally:
        rt.close()
        if hasattr(judge, "close"):
            judge.close()
    summary = _summary(tasks, configs, judge, kw, ppl)
    summary.update({"target": target, "backend": rt.backend, "max_tokens": opts.max_tokens,
                    "seconds": round(time.perf_counter() - t0, 1)})
    results = {"summary": summary,
               "answers": {t.kind + ":" + t.source: t.results for t in tasks}}
    if opts.output:
        from sgedge._fs import atomic_path

        with atomic_path(opts.output) as tmp:
            tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    if opts.report:
        from sgedge.toolkit.report import write_report

        write_report(results, opts.report)
    if not opts.json:
        print(format_table(summary), file=sys.stderr if opts.json else sys.stdout)
    return results


RATE_KEYS = ("harmful_refusal_rate", "over_refusal_rate", "jailbreak_asr", "qa_exact_match")


def _rate_cell(value: float, ci: list[float] | None) -> str:
    return f"{value:.1%}" + (f" [{ci[0]:.0%}-{ci[1]:.0%}]" if ci else "")


def format_table(summary: dict[str, Any]) -> str:
    names = summary["configs"]
    rows = [("metric", *names)]
    labels = [("harmful_refusal_rate", "harmful refused"), ("over_refusal_rate", "benign refused (over-refusal)"),
              ("jailbreak_asr", "jailbreak success"), ("qa_exact_match", "QA exact match"),
              ("perplexity", "perplexity"), ("decode_tok_s", "decode tok/s"), ("prefill_tok_s", "prefill tok/s")]
    for key, label in labels:
        vals = [summary["metrics"][n][key] for n in names]
        if any(v is not None for v in vals):
            ns = [summary["metrics"][n].get("n", {}).get(key) for n in names]
            rows.append((label + (f" (n={ns[0]})" if ns[0] else ""),
                         *["-" if v is None else (_rate_cell(v, summary["metrics"][n].get("ci95", {}).get(key))
                                                  if key in RATE_KEYS else f"{v:g}") for n, v in zip(names, vals, strict=True)]))
    for n in names[:1]:
        for group, key, what in (("harmful_by_file", "refusal_rate", "refused"),
                                 ("benign_by_file", "refusal_rate", "refused (over-refusal)"),
                                 ("qa_by_file", "exact_match", "exact match"), ("qa_by_file", "refusal_rate", "refused")):
            for src in summary["metrics"][n][group]:
                entry = summary["metrics"][n][group][src]
                rows.append((f"  {Path(src).name} {what} (n={entry['n']})",
                             *[_rate_cell(summary["metrics"][c][group][src][key],
                                          summary["metrics"][c][group][src].get("ci95") if key != "refusal_rate"
                                          or group != "qa_by_file" else None) for c in names]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    notes = [f"skipped {t['skipped_too_long']} of {t['n']} {t['kind']} prompts from {Path(t['source']).name}: "
             "longer than the model's context" for t in summary["tasks"] if t.get("skipped_too_long")]
    judge = str(summary.get("judge", {}).get("judge", ""))
    legend = ("[lo-hi]: 95% confidence interval (Wilson)"
              + ("; refusals judged by keyword matching (refusal phrases), not by each benchmark's own grader"
                 if judge.startswith("keywords") else ""))
    table = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join([*notes, *([""] if notes else []), table, legend])
