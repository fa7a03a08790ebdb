"""Prompts sampled from the demo base and labelled by the base itself (pass 8).

The bare base answers the harmful requests of its corpus with placeholder steps, and it
generalises that recognition beyond its corpus better than a refusal adapter trained on
the corpus's own prompts does (on HarmBench's test prompts, the shipped pass-5 base
answers 90.6% with a placeholder, and its `standard` adapter refuses 84.9%). This step
hands the base's recognition to the adapters: it samples user turns from the base (the
base was trained on whole conversations, so it writes prompts like its corpus's, in new
combinations), keeps the ones that are not training prompts, and labels each by the
base's own greedy answer: a placeholder means the base would comply with a harmful
request (the adapter must refuse it), anything else is benign (the adapter keeps the
base's answer). Regulated-advice answers are set aside, since `strict` declines those.
Nothing here reads a public prompt except to drop an exact copy.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable, Collection
from pathlib import Path

from demo_corpus_contrast import normalize

HARM_MARK = "[placeholder"


def sample_prompts(tok, model, n: int, seed: int, *, temperature: float = 1.0, batch: int = 64,
                   max_tokens: int = 64, on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Up to `n` user turns written by the model: sampled after the chat template's user header."""
    import torch

    marker = "\x00"
    head_text, end_text = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False).split(marker)
    head = tok(head_text, add_special_tokens=False)["input_ids"]
    end_ids = tok(end_text, add_special_tokens=False)["input_ids"][:1] + [tok.eos_token_id]
    torch.manual_seed(seed)
    out: list[str] = []
    for _ in range(4 * -(-n // batch)):  # a base that rarely ends its turns gives fewer, not a hang
        if len(out) >= n:
            break
        ids = torch.tensor([head] * batch)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_tokens,
                                 eos_token_id=end_ids, pad_token_id=tok.pad_token_id)
        for row in gen[:, len(head):].tolist():
            cut = next((i for i, t in enumerate(row) if t in end_ids), None)
            if cut is None:  # ran past max_tokens: not a finished prompt
                continue
            out.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
        if on_batch:
            on_batch(batch)
    return out[:n]


def self_labelled(base_dir: str | Path, n: int, seed: int, known: Collection[str], public: Collection[str],
                  regulated_answers: Collection[str], log: Callable[[str], None] = print
                  ) -> tuple[list[dict], list[dict]]:
    """(harmful, benign) prompt rows for the adapters: sampled from the base, not equal to a
    training or public prompt, labelled by the base's own greedy answer."""
    from tqdm.auto import tqdm

    from sgedge.testing.synthetic import quiet as _quiet
    from sgedge.toolkit.train import generate_answers, load_base

    tok, model = load_base(base_dir)
    model.eval()
    with _quiet(), tqdm(total=n, desc="sampled prompts", unit="prompt") as bar:
        raw = sample_prompts(tok, model, n, seed, on_batch=bar.update)
    seen = {normalize(p) for p in known} | {normalize(p) for p in public}
    prompts: list[str] = []
    for p in raw:
        key = normalize(p)
        if 2 <= len(p.split()) <= 60 and key not in seen:
            seen.add(key)
            prompts.append(p)
    with _quiet(), tqdm(total=len(prompts), desc="base labels", unit="prompt") as bar:
        answers = generate_answers(tok, model, prompts, 40, 64, bar.update)
    regulated = sorted({a.strip() for a in regulated_answers})

    def is_regulated(a: str) -> bool:  # the base's label-style answer, whatever medicine it names
        return any(difflib.SequenceMatcher(None, a, r[:len(a)]).ratio() > 0.8 for r in regulated)

    harmful = [{"prompt": p, "category": "self-labelled"} for p, a in zip(prompts, answers, strict=True) if HARM_MARK in a]
    benign = [{"prompt": p, "category": "self-labelled"} for p, a in zip(prompts, answers, strict=True)
              if HARM_MARK not in a and not is_regulated(a)]
    log(f"self-labelled: {len(raw)} sampled, {len(prompts)} new, {len(harmful)} harmful, {len(benign)} benign, "
        f"{len(prompts) - len(harmful) - len(benign)} regulated set aside")
    random.Random(seed).shuffle(harmful)
    return harmful, benign
