"""Safety figures of the embedded demo on public prompts it never saw (for README / docs/demo.md).

    python benchmarks/eval_demo.py [--data ../shared/data] [--out docs]

Runs `sgedge eval` twice through the runtime on the shipped artifacts:
1. harmful (AdvBench, HarmBench test `standard` rows, JailbreakBench harmful, and
   StrongREJECT as a control the corpus was not designed against), benign (XSTest safe
   prompts; MT-Bench first turns as the over-refusal control; the demo's held-out
   open-ended requests), jailbreak templates
   (Self-Reminder set, 200 sampled pairs) and the demo's held-out benign questions (exact
   match and over-refusal), for the default policy, `EU` (strict) and the bare base;
2. the demo's regulated-advice prompts (strict should decline, standard answer).
Judge: the refusal_direction JailbreakBench keyword list (case-insensitive substring).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sgedge.cli import main as sgedge
from sgedge.demo import DEMO_DIR, demo_bundle

ROOT = Path(__file__).resolve().parents[1]


def run() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "build"), help="report folder (default build/: the reports quote the "
                    "public prompts, which stay out of the repository)")
    ap.add_argument("--backend", choices=["gguf", "onnx"], default="gguf")
    ap.add_argument("--limit", type=int, help="prompts per file (quick runs)")
    ap.add_argument("--demo", default=str(DEMO_DIR), help="a demo folder (bundle/ and eval/; default: the shipped one)")
    args = ap.parse_args()
    d, out, ev = Path(args.data), Path(args.out), Path(args.demo) / "eval"
    bundle = demo_bundle() if Path(args.demo) == DEMO_DIR else Path(args.demo) / "bundle"
    kw = f"{d / 'refusal_keywords' / 'refusal_keywords.json'}:refusal_direction_jailbreakbench"
    common = ["--bundle", str(bundle), "--keywords", kw, "--backend", args.backend]
    if args.limit:
        common += ["--limit", str(args.limit)]
    rc = sgedge(["eval", *common, "--policy", "default", "--policy", "EU", "--no-adapter",
                 "--harmful", str(d / "advbench" / "harmful_behaviors.csv"),
                 f"{d / 'harmbench' / 'harmbench_behaviors_text_test.csv'}@standard",
                 str(d / "jailbreakbench" / "jbb_behaviors_harmful.csv"),
                 str(d / "strongreject" / "strongreject_dataset.csv"),
                 "--benign", f"{d / 'xstest' / 'xstest_prompts.csv'}@safe", str(d / "mt_bench" / "mt_bench_questions.jsonl"),
                 *([str(ev / "open_heldout.jsonl")] if (ev / "open_heldout.jsonl").is_file() else []),
                 "--qa", str(ev / "benign_heldout.jsonl"),
                 "--jailbreak-templates", str(d / "jailbreak_templates" / "self_reminder" / "jailbreak_prompts.csv"),
                 "--report", str(out / f"demo_eval_{args.backend}.html"), "-o", str(out / f"demo_eval_{args.backend}.json")])
    if rc:
        return rc
    print("\nregulated advice (strict should decline, standard answer):")
    return sgedge(["eval", *common, "--policy", "US", "--policy", "EU", "--harmful", str(ev / "regulated_eval.jsonl"),
                   "-q"])


if __name__ == "__main__":
    sys.exit(run())
