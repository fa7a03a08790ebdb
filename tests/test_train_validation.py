"""`sgedge train` on what a real model showed: the labelled-positions loss, answers cut at
the token limit, and the validation split that picks the step kept."""

from __future__ import annotations

import json

import pytest

FAMILIES = ["llama", "qwen2", "qwen3", "phi3", "mistral"]


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_loss_equals_the_models_own_loss(tiny, family):
    import peft
    import torch
    import transformers

    from sgedge.toolkit.train import _collate, answer_loss

    t = tiny(family)
    model = transformers.AutoModelForCausalLM.from_pretrained(t.hf, dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(model, t.lora1, is_trainable=True)
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    examples = [(torch.randint(0, vocab, (n,)).tolist(), start) for n, start in [(9, 4), (5, 2), (12, 11)]]
    ids, labels, mask = _collate(examples, 0, "cpu")
    want = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
    got = answer_loss(pm, ids, labels, mask)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got.item(), want.item())
    # and its gradient flows to the adapter as the full loss's does
    got.backward()
    grads = [p.grad for n, p in pm.named_parameters() if "lora_" in n and p.grad is not None]
    assert grads and any(g.abs().max() > 0 for g in grads)


def test_an_answer_cut_at_the_limit_gets_no_closing_tokens(tiny):
    from sgedge.toolkit.train import chat_example, load_base

    tok, _ = load_base(tiny("llama").hf)
    whole, start = chat_example(tok, "Hello", "Hi there", 256)
    cut, start2 = chat_example(tok, "Hello", "Hi there", 256, ended=False)
    assert start == start2 and whole[:len(cut)] == cut and len(whole) > len(cut)
    assert tok.decode(cut[start:]) == "Hi there"  # the answer, and nothing that ends the turn


def test_split_validation_takes_a_share_of_each_side():
    from sgedge.toolkit.train import split_validation

    harm, ben = split_validation(100, 50, 0.1, 0)
    assert len(harm) == 10 and len(ben) == 5
    assert all(i < 100 for i in harm) and all(100 <= i < 150 for i in ben)
    assert split_validation(100, 50, 0.1, 0) == (harm, ben)  # seeded
    assert split_validation(10, 50, 0.1, 0) == (set(), set())  # too few to hold any out
    assert split_validation(100, 50, 0.0, 0) == (set(), set())


def test_train_keeps_the_best_validation_step_and_stops_early(tiny, tmp_path):
    from sgedge.toolkit.prompts import Prompt
    from sgedge.toolkit.train import TrainConfig, train_adapter

    t = tiny("llama")
    harmful = [Prompt(f"harm request number {i}", "x") for i in range(24)]
    benign = [Prompt(f"fine request number {i}", "x", response=f"answer {i}") for i in range(24)]
    # A learning rate this high diverges after a few steps: the best step is an early one
    # and patience ends the run before its planned steps.
    cfg = TrainConfig(rank=2, epochs=6, batch_size=4, lr=3.0, val_fraction=0.2, eval_every=2, patience=2)
    summary = train_adapter(t.hf, harmful, benign, tmp_path / "a", cfg, progress=False)
    val = summary["validation"]
    assert val["harmful"] == 4 and val["benign"] == 4
    losses = [(h["harmful"] + h["benign"]) / 2 for h in val["history"]]
    assert val["best_loss"] == pytest.approx(min(losses), abs=1e-4)
    assert val["best_step"] == val["history"][losses.index(min(losses))]["step"]
    assert val["stopped_early"] and summary["steps"] < summary["planned_steps"]
    assert json.loads((tmp_path / "a" / "sgedge_train.json").read_text())["validation"]["best_step"] == val["best_step"]


def test_train_cli_reports_validation(tiny, tmp_path, capsys):
    from sgedge.cli import main

    (tmp_path / "h.txt").write_text("".join(f"harm request {i}\n" for i in range(20)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"prompt": f"fine {i}", "response": "ok"}) + "\n"
                                              for i in range(20)))
    args = ["train", "--base", str(tiny("llama").hf), "--harmful", str(tmp_path / "h.txt"), "--benign",
            str(tmp_path / "b.jsonl"), "--epochs", "1", "--batch-size", "8", "--rank", "2", "--eval-every", "2", "-q"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert "validation (2 harmful + 2 benign held out): best loss" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "b"), "--patience", "0"]) == 1
    assert "--eval-every and --patience" in capsys.readouterr().err
