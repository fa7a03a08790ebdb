"""`sgedge train`: a PEFT LoRA safety adapter on a frozen base.

Harmful prompts are trained to a refusal; benign prompts to the base's own greedy answer
(generated once and cached), so the adapter changes what it must and keeps the rest.
The output is a standard PEFT adapter directory that the exporters take as is.

Work happens in `<out>.sgedge-train/` beside the output: the cached benign answers and a
checkpoint (adapter + optimizer + step) every `save_every` steps. Running the same
command again resumes from it; the finished adapter is written under a temporary name
and renamed onto `<out>`, and the work folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgedge._fs import atomic_path, sweep_stale, temp_prefix
from sgedge.binding import base_fingerprint
from sgedge.errors import InputError
from sgedge.notes import note as say_note
from sgedge.toolkit.prompts import Prompt

ANSWER_CHUNK = 256  # base answers generated between two writes of the answer cache
REFUSALS = {
    "short": "I'm sorry, but I can't help with that.",
    "alternative": "I'm sorry, but I can't help with that. If you have another question, I'm happy to help.",
}


@dataclass
class TrainConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] | None = None
    # Decoder layers that get LoRA (PEFT's layers_to_transform); None: every layer.
    layers: list[int] | None = None
    epochs: float = 3.0
    lr: float = 2e-3
    batch_size: int = 16
    max_len: int = 256
    answer_tokens: int = 64
    refusal_style: str = "alternative"
    refusal_text: str | None = None
    seed: int = 0
    save_every: int = 50
    device: str = "auto"
    # Share of each side (harmful, benign) held out to pick the best step; 0 turns it off.
    # Used only when both sides have at least MIN_VAL_SIDE prompts.
    val_fraction: float = 0.0
    eval_every: int = 25
    patience: int = 4  # evaluations without a better validation loss before training stops
    # "q8": train under llama.cpp's 8-bit rounding of the inputs of quantized matmuls
    # (toolkit/quant_aware.py); None: plain float training.
    quant_aware: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def refusal(self) -> str:
        if self.refusal_text:
            return self.refusal_text
        if self.refusal_style not in REFUSALS:
            raise InputError(f"unknown --refusal-style {self.refusal_style!r}; use {', '.join(REFUSALS)} "
                             "or give --refusal-text")
        return REFUSALS[self.refusal_style]


def parse_layers(text: str) -> list[int]:
    """`--layers`: comma-separated decoder layer indices and ranges ("4,5", "2-5", "0,3-5")."""
    layers: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            span = range(int(lo), int(hi) + 1) if sep else range(int(lo), int(lo) + 1)
        except ValueError:
            raise InputError(f"--layers {text!r}: give layer numbers and ranges such as 4,5 or 2-5") from None
        if not span:
            raise InputError(f"--layers {text!r}: the range {part} is empty; write it low-high")
        layers.update(span)
    if not layers:
        raise InputError("--layers is empty; give layer numbers such as 4,5 or leave it out for every layer")
    return sorted(layers)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch build sees no CUDA GPU; use --device cpu")
    return name


def load_base(base_dir: str | Path, device: str = "cpu", option: str = "--base") -> tuple[Any, Any]:
    """The Hugging Face tokenizer and model of `base_dir`, checked for what training needs
    (`option` names the command-line option that gave it, for the messages)."""
    import torch
    import transformers

    from sgedge.exporters.peft_io import quiet as _quiet

    base = Path(base_dir)
    if not (base / "config.json").is_file():
        raise InputError(f"{option} {base}: not a Hugging Face model directory (no config.json)")
    with _quiet():
        tok = transformers.AutoTokenizer.from_pretrained(base)
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    if not tok.chat_template:
        raise InputError(f"{option} {base}: the tokenizer has no chat template; safety adapters are trained on "
                         "chat turns. Add one to tokenizer_config.json")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model


MIN_VAL_SIDE = 20


def chat_example(tok: Any, prompt: str, response: str, max_len: int, ended: bool = True) -> tuple[list[int], int]:
    """Token ids of one user turn + assistant answer, and where the answer starts.

    The prompt is tokenized exactly as the runtime does (apply_chat_template with a
    generation prompt); the answer is the rest of the rendered conversation, closing
    tokens included, so the adapter learns to stop. An answer cut at a token limit
    (`ended=False`) gets no closing tokens: the adapter must not learn to stop there.
    """
    user = [{"role": "user", "content": prompt}]
    head_text = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full_text = tok.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    if not full_text.startswith(head_text):
        raise InputError("the chat template renders the assistant turn in a way sgedge cannot split "
                         "(the conversation does not start with the generation prompt)")
    head = list(tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=False))
    rest = full_text[len(head_text):].rstrip("\n") if ended else response
    tail = tok(rest, add_special_tokens=False)["input_ids"]
    ids = (head + tail)[:max_len]
    return ids, min(len(head), len(ids))


def generate_answers(tok: Any, model: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                     on_step: Callable[[int], None] | None = None, ended: list[bool] | None = None) -> list[str]:
    """The base's own greedy answers, batched with left padding. `ended`, when given,
    receives for each answer whether it ended on its own (False: cut at the limit)."""
    import torch

    out: list[str] = []
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            heads = [list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)) for p in chunk]
            width = max(map(len, heads))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(h)) + h for h in heads], device=model.device)
            mask = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads], device=model.device)
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for row in gen[:, width:]:
                out.append(tok.decode(row, skip_special_tokens=True).strip())
                if ended is not None:  # generation stops at eos_token_id (then pads)
                    ended.append(bool((row == tok.eos_token_id).any()))
            if on_step:
                on_step(len(chunk))
    finally:
        tok.padding_side = old_side
    return out


def _base_answers(tok: Any, model: Any, base: Path, prompts: Sequence[str], cfg: TrainConfig,
                  progress: bool) -> tuple[list[str], list[bool]]:
    """The base's greedy answer to each prompt, and whether it ended on its own: from the
    shared answer cache (toolkit/answer_cache.py) where it has them, generated otherwise
    (in chunks, each recorded as it is done, so an interrupted run keeps what it made)."""
    from tqdm.auto import tqdm

    from sgedge.exporters.peft_io import quiet as _quiet
    from sgedge.toolkit.answer_cache import AnswerCache

    cache = AnswerCache(base, cfg.answer_tokens)
    missing = list(dict.fromkeys(p for p in prompts if cache.get(p) is None))
    reused = len(set(prompts)) - len(missing)
    if not cache.usable and progress:
        say_note(f"the answer cache {cache.path.parent} is not a folder only you can write: the base's answers "
                 "are generated and not kept (`chmod 700` it, or point $SGEDGE_CACHE_DIR at one)")
    if reused and progress:
        say_note(f"{reused} of {len(set(prompts))} base answers come from the answer cache ({cache.path.parent})")
    with _quiet(), tqdm(total=len(missing), desc="base answers", unit="prompt", disable=not progress) as bar:
        for i in range(0, len(missing), ANSWER_CHUNK):
            part = missing[i:i + ANSWER_CHUNK]
            ended: list[bool] = []
            got = generate_answers(tok, model, part, cfg.answer_tokens, max(cfg.batch_size, 32), bar.update, ended)
            if len(ended) != len(got):
                ended = [True] * len(got)
            cache.add(dict(zip(part, zip(got, ended, strict=True), strict=True)))
    pairs = [cache.get(p) for p in prompts]
    return [a for a, _ in pairs], [e for _, e in pairs]  # type: ignore[misc]


def _config_key(base: Path, harmful: Sequence[Prompt], benign: Sequence[Prompt], cfg: TrainConfig) -> str:
    h = hashlib.sha256()
    h.update(str(base.resolve()).encode())
    h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    for p in [*harmful, *benign]:
        h.update(json.dumps(asdict(p), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _batches(n: int, batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(math.ceil(epochs)):
        perm = list(range(n))
        rng.shuffle(perm)
        order.extend(perm)
    order = order[: max(1, int(round(n * epochs)))]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _collate(examples: Sequence[tuple[list[int], int]], pad_id: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (seq, start) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, start: len(seq)] = torch.tensor(seq[start:])
        mask[i, : len(seq)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _read_json(path: Path) -> Any:
    """A work file's JSON, or None when it is missing or unreadable (cut short: redo it)."""
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _state_key(state_file: Path) -> str | None:
    state = _read_json(state_file)
    return state.get("key") if isinstance(state, dict) else None


# Families whose logits are exactly lm_head(final hidden state): the loss can then skip
# the vocabulary projection at every position that has no label (prompt and padding),
# most of the positions here and a large share of a small model's compute.
_PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3", "phi3"}


def answer_loss(pm: Any, ids: Any, labels: Any, mask: Any) -> Any:
    """The causal LM loss of `pm` on the labelled positions (the same value as
    `pm(..., labels=labels).loss`), computing logits only where there are labels."""
    import torch

    base = pm.get_base_model()
    decoder, head = getattr(base, "model", None), base.get_output_embeddings()
    if getattr(base.config, "model_type", None) not in _PLAIN_HEAD or decoder is None or head is None:
        return pm(input_ids=ids, attention_mask=mask, labels=labels).loss
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def split_validation(n_harmful: int, n_benign: int, fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """Indices (into harmful + benign) held out for validation, a `fraction` of each side."""
    if fraction <= 0 or min(n_harmful, n_benign) < MIN_VAL_SIDE:
        return set(), set()
    if not 0 < fraction < 0.5:
        raise InputError(f"--val-fraction {fraction}: give a share between 0 and 0.5 (0 turns validation off)")
    rng = random.Random(seed + 7919)
    harm = set(rng.sample(range(n_harmful), max(1, int(n_harmful * fraction))))
    ben = {n_harmful + i for i in rng.sample(range(n_benign), max(1, int(n_benign * fraction)))}
    return harm, ben


def train_adapter(base_dir: str | Path, harmful: Sequence[Prompt], benign: Sequence[Prompt], out_dir: str | Path,
                  cfg: TrainConfig | None = None, *, progress: bool = True, resume: bool = True,
                  init_adapter: str | Path | None = None,
                  extra_files: dict[str, str] | None = None) -> dict[str, Any]:
    """Train a LoRA safety adapter and write it to `out_dir` (PEFT format). Returns a summary.

    `init_adapter` starts from an existing PEFT adapter (its rank, alpha and targets; cfg's
    are ignored) instead of a fresh LoRA: `sgedge transfer --refit` continues an adapter on
    a fine-tuned variant this way. `extra_files` (name -> text) are written into the output
    before it is renamed into place."""
    import peft
    import torch
    from tqdm.auto import tqdm

    from sgedge.exporters.peft_io import quiet as _quiet
    from sgedge.exporters.peft_io import save_peft
    from sgedge.families import family_for_config

    cfg = cfg or TrainConfig()
    base, out = Path(base_dir), Path(out_dir)
    if not harmful:
        raise InputError("no harmful prompts: give --harmful FILE (prompts the adapter must refuse)")
    if not benign:
        raise InputError("no benign prompts: give --benign FILE (prompts whose answers the adapter must keep)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose another -o or remove it")
    refusal = cfg.refusal()
    if cfg.layers is not None and init_adapter is None and (base / "config.json").is_file():
        n_layers = int(json.loads((base / "config.json").read_text()).get("num_hidden_layers", 0))
        bad = [i for i in cfg.layers if not 0 <= i < n_layers]
        if bad or not cfg.layers:
            raise InputError(f"--layers {','.join(map(str, bad or cfg.layers)) or '(none)'}: the base has "
                             f"{n_layers} decoder layers, numbered 0 to {n_layers - 1}")
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    work = out.with_name(out.name + ".sgedge-train")
    if init_adapter is not None:
        # The adapter's own rank, alpha and targets are trained on; record them, not cfg's defaults.
        init_adapter = Path(init_adapter).resolve()
        acfg = json.loads((init_adapter / "adapter_config.json").read_text("utf-8"))
        targets = acfg.get("target_modules")
        cfg.rank, cfg.alpha = int(acfg.get("r", cfg.rank)), float(acfg.get("lora_alpha", cfg.alpha))
        cfg.targets = sorted(targets) if isinstance(targets, list) else None
        layers = acfg.get("layers_to_transform")
        cfg.layers = [layers] if isinstance(layers, int) else (sorted(layers) if layers else None)
        cfg.extra = {**cfg.extra, "init_adapter": str(init_adapter)}
    key = _config_key(base, harmful, benign, cfg)
    state_file = work / "state.json"
    if work.exists() and (not resume or _state_key(state_file) != key):
        shutil.rmtree(work)  # another run's, or cut short while written: start over
    work.mkdir(parents=True, exist_ok=True)
    with atomic_path(state_file) as tmp:
        tmp.write_text(json.dumps({"key": key}))

    tok, model = load_base(base, device, "--to" if init_adapter is not None else "--base")
    fam = family_for_config(json.loads((base / "config.json").read_text()))
    t0 = time.perf_counter()

    # 1. Benign targets: given responses, else the base's own answers (cached for resume).
    answers_file = work / "benign_answers.json"
    need = [p.text for p in benign if not p.response]
    cached = _read_json(answers_file)
    generated, ended = (cached.get("answers"), cached.get("ended")) if isinstance(cached, dict) else (None, None)
    if not isinstance(generated, list) or len(generated) != len(need):
        generated, ended = _base_answers(tok, model, base, need, cfg, progress)
        with atomic_path(answers_file) as tmp:
            tmp.write_text(json.dumps({"answers": generated, "ended": ended}))
    if not isinstance(ended, list) or len(ended) != len(generated):
        ended = [True] * len(generated)
    it = iter(zip(generated, ended, strict=True))
    benign_targets = [(p.response, True) if p.response else next(it) for p in benign]

    examples = [chat_example(tok, p.text, p.refusal or refusal, cfg.max_len) for p in harmful]
    examples += [chat_example(tok, p.text, a, cfg.max_len, bool(done))
                 for p, (a, done) in zip(benign, benign_targets, strict=True)]
    val_harm, val_ben = split_validation(len(harmful), len(benign), cfg.val_fraction, cfg.seed)
    usable = [i for i, e in enumerate(examples) if e[1] < len(e[0])]
    train_ex = [examples[i] for i in usable if i not in val_harm and i not in val_ben]
    val_sides = [[examples[i] for i in usable if i in side] for side in (val_harm, val_ben)]
    if not train_ex:
        raise InputError(f"every prompt is longer than --max-len {cfg.max_len} tokens; raise it")
    if cfg.val_fraction > 0 and not val_harm and progress:
        say_note(f"no validation split: it needs {MIN_VAL_SIDE} harmful and {MIN_VAL_SIDE} benign prompts "
              f"(given {len(harmful)} and {len(benign)}); training runs every step")

    # 2. LoRA on the frozen base (under the runtime's activation rounding if asked).
    if cfg.quant_aware:
        from sgedge.toolkit.quant_aware import fake_quantize_inputs

        fake_quantize_inputs(model, cfg.quant_aware)
    if init_adapter is not None:
        with _quiet():
            pm = peft.PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        lcfg = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha,
                               target_modules=list(cfg.targets or fam.lora_modules),
                               layers_to_transform=list(cfg.layers) if cfg.layers is not None else None,
                               lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        try:
            with _quiet():
                pm = peft.get_peft_model(model, lcfg)
        except ValueError as e:
            raise InputError(f"--targets: {e}") from e
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    batches = _batches(len(train_ex), cfg.batch_size, cfg.epochs, cfg.seed)
    warm = max(1, len(batches) // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / len(batches)))
    step = 0
    # Validation: the best state so far (by the mean of the two sides' losses) and how many
    # evaluations have passed without a better one.
    best: dict[str, Any] = {"loss": None, "step": 0, "state": None, "stale": 0, "history": []}
    ckpt = work / "checkpoint.pt"
    if ckpt.is_file():
        try:
            st = torch.load(ckpt, map_location=device, weights_only=True)
            peft.set_peft_model_state_dict(pm, st["adapter"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            step = int(st["step"])
            best = st.get("best") or best
        except Exception as e:  # written atomically, so only a damaged disk or a hand edit gets here
            raise InputError(f"the checkpoint {ckpt} cannot be resumed ({type(e).__name__}: {str(e)[:200]}); "
                             "run without --resume to start over") from None

    def save_ckpt() -> None:
        with atomic_path(ckpt) as tmp:
            torch.save({"adapter": peft.get_peft_model_state_dict(pm), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step, "best": best}, tmp)

    def validate() -> bool:
        """Record the validation loss at `step`; whether training should stop."""
        pm.eval()
        with torch.no_grad():
            sides = []
            for side in val_sides:
                total = 0.0
                for i in range(0, len(side), cfg.batch_size):
                    chunk = side[i:i + cfg.batch_size]
                    total += answer_loss(pm, *_collate(chunk, tok.pad_token_id, device)).item() * len(chunk)
                sides.append(total / len(side))
        pm.train()
        val = sum(sides) / 2
        best["history"].append({"step": step, "harmful": round(sides[0], 4), "benign": round(sides[1], 4)})
        if best["loss"] is None or val < best["loss"]:
            best.update(loss=val, step=step, stale=0,
                        state={k: v.detach().clone() for k, v in peft.get_peft_model_state_dict(pm).items()})
        else:
            best["stale"] += 1
        return best["stale"] >= cfg.patience

    validating = bool(val_sides[0] and val_sides[1])
    stopped = False
    pm.train()
    losses: list[float] = []
    with tqdm(total=len(batches), initial=step, desc="training", unit="step", disable=not progress) as bar:
        while step < len(batches):
            ids, labels, mask = _collate([train_ex[i] for i in batches[step]], tok.pad_token_id, device)
            loss = answer_loss(pm, ids, labels, mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            post = {"loss": f"{sum(losses[-20:]) / len(losses[-20:]):.3f}"}
            if validating and (step % cfg.eval_every == 0 or step == len(batches)):
                stopped = validate()
                last = best["history"][-1]
                post["val"] = f"{last['harmful']:.3f}/{last['benign']:.3f}"
            bar.set_postfix(post)
            bar.update(1)
            if stopped:
                break
            if step % cfg.save_every == 0 and step < len(batches):
                save_ckpt()
    if validating and best["state"] is not None:
        peft.set_peft_model_state_dict(pm, best["state"])
    pm.eval()

    # 3. Write the PEFT directory atomically, pointing at the local base.
    summary = {"base": str(base.resolve()), "base_fingerprint": base_fingerprint(base),
               "harmful": len(harmful), "benign": len(benign), "steps": step, "planned_steps": len(batches),
               "validation": ({"harmful": len(val_sides[0]), "benign": len(val_sides[1]), "best_step": best["step"],
                               "best_loss": round(best["loss"], 4), "stopped_early": stopped,
                               "history": best["history"]} if validating else None),
               "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4) if losses else None,
               "seconds": round(time.perf_counter() - t0, 1), "refusal": refusal, "device": device,
               "config": asdict(cfg)}
    sweep_stale(out)
    tmp_out = out.with_name(f"{temp_prefix(out)}partial")
    shutil.rmtree(tmp_out, ignore_errors=True)
    save_peft(pm, tmp_out, base)
    (tmp_out / "sgedge_train.json").write_text(json.dumps(summary, indent=2))
    for name, text in (extra_files or {}).items():
        (tmp_out / name).write_text(text)
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(tmp_out, out)
    shutil.rmtree(work, ignore_errors=True)
    return summary
