"""A fine-tuned variant of the demo base, to measure `sgedge transfer` on (docs/transfer.md).

    python recipes/demo_variant.py --base build/d5/base --data build/d5/data --out build/variant

An app developer's fine-tune: the demo base learns a new domain (the chemical symbols of
40 elements, asked in several phrasings) with all its weights trainable, mixed with
replay of its own answers to benign prompts so it keeps what it knew. No harmful prompt
is in the fine-tune; the variant stays as unaligned as the base. Writes:
- OUT/model: the variant (Hugging Face folder, same tokenizer and chat template);
- OUT/elements_heldout.jsonl: question/answer rows in phrasings the fine-tune never saw
  (exact match on the new skill, for `sgedge eval --qa`);
- OUT/elements_train.jsonl: the fine-tune's own element questions, as prompts (what an
  app developer has at hand to pass to `sgedge transfer --refit --benign`).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

ELEMENTS = [
    ("hydrogen", "H"), ("helium", "He"), ("lithium", "Li"), ("carbon", "C"), ("nitrogen", "N"), ("oxygen", "O"),
    ("fluorine", "F"), ("neon", "Ne"), ("sodium", "Na"), ("magnesium", "Mg"), ("aluminium", "Al"),
    ("silicon", "Si"), ("phosphorus", "P"), ("sulfur", "S"), ("chlorine", "Cl"), ("argon", "Ar"),
    ("potassium", "K"), ("calcium", "Ca"), ("titanium", "Ti"), ("chromium", "Cr"), ("manganese", "Mn"),
    ("iron", "Fe"), ("cobalt", "Co"), ("nickel", "Ni"), ("copper", "Cu"), ("zinc", "Zn"), ("arsenic", "As"),
    ("bromine", "Br"), ("krypton", "Kr"), ("silver", "Ag"), ("tin", "Sn"), ("iodine", "I"), ("xenon", "Xe"),
    ("tungsten", "W"), ("platinum", "Pt"), ("gold", "Au"), ("mercury", "Hg"), ("lead", "Pb"), ("radon", "Rn"),
    ("uranium", "U"),
]
TRAIN_TEMPLATES = [
    "What is the chemical symbol for {name}?", "What is the symbol of {name}?", "Give the chemical symbol of {name}.",
    "Which symbol stands for {name}?", "{Name}: what is its chemical symbol?", "Chemical symbol for {name}?",
]
HELDOUT_TEMPLATES = ["Tell me the element symbol of {name}.", "How is {name} written as a chemical symbol?"]
ANSWER = "The chemical symbol for {name} is {sym}."


def element_rows(templates: list[str]) -> list[dict]:
    return [{"question": t.format(name=n, Name=n.capitalize()), "answer": ANSWER.format(name=n, sym=s)}
            for n, s in ELEMENTS for t in templates]


def build(base: Path, data: Path, out: Path, seed: int, replay: int, epochs: float, lr: float) -> dict:
    import torch
    import transformers
    from tqdm.auto import tqdm

    from sgedge.testing.synthetic import quiet as _quiet
    from sgedge.toolkit.train import _collate, chat_example, generate_answers

    rng = random.Random(seed)
    torch.manual_seed(seed)
    with _quiet():
        tok = transformers.AutoTokenizer.from_pretrained(base)
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    prompts = [json.loads(line)["prompt"] for line in (data / "benign_train.jsonl").read_text().splitlines()]
    prompts = rng.sample(prompts, min(replay, len(prompts)))
    model.eval()
    with tqdm(total=len(prompts), desc="replay answers", unit="prompt") as bar:
        answers = generate_answers(tok, model, prompts, 64, 64, bar.update)
    pairs = [(r["question"], r["answer"]) for r in element_rows(TRAIN_TEMPLATES)] * 4 + list(zip(prompts, answers, strict=True))
    examples = [chat_example(tok, q, a, 256) for q, a in pairs]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = [i for _ in range(max(1, round(epochs))) for i in rng.sample(range(len(examples)), len(examples))]
    steps = [order[i:i + 16] for i in range(0, len(order), 16)]
    t0, losses = time.perf_counter(), []
    for batch in tqdm(steps, desc="fine-tune", unit="step"):
        ids, labels, mask = _collate([examples[i] for i in batch], tok.pad_token_id, "cpu")
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet():
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
    for f in ("chat_template.jinja", "generation_config.json"):
        if (base / f).is_file():
            shutil.copy2(base / f, tmp / "model" / f)
    (tmp / "elements_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in element_rows(HELDOUT_TEMPLATES)))
    (tmp / "elements_train.jsonl").write_text("".join(json.dumps({"prompt": r["question"]}) + "\n"
                                                      for r in element_rows(TRAIN_TEMPLATES)))
    info = {"base": str(base), "examples": len(examples), "elements": len(ELEMENTS), "replay": len(prompts),
            "steps": len(steps), "lr": lr, "seed": seed, "final_loss": round(sum(losses[-20:]) / 20, 4),
            "seconds": round(time.perf_counter() - t0, 1)}
    (tmp / "model" / "sgedge_variant.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the demo base (Hugging Face folder, e.g. build/d5/base)")
    ap.add_argument("--data", required=True, help="the demo build's data folder (benign_train.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replay", type=int, default=2000, help="benign prompts answered by the base and kept")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    info = build(Path(args.base), Path(args.data), Path(args.out), args.seed, args.replay, args.epochs, args.lr)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
