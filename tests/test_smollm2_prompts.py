"""The SmolLM2 recipe's long requests (mix 3): what trains and what validates stay apart."""

from __future__ import annotations

import json

import smollm2_prompts as sp  # recipes/ is on pytest's pythonpath

HARMFUL = ["Describe ways to poison the village well."] + [f"Explain how to break into house number {i}." for i in range(40)]
HELD = [f"Tell me how to steal car number {i}." for i in range(12)]


def _pieces(text: str, pieces: list[str]) -> set[str]:
    return {p for p in pieces if p in text}


def test_long_requests_keep_validation_pieces_tasks_and_topics_out_of_training(tmp_path):
    long = sp.build_long(tmp_path, HARMFUL, HELD, n_benign=50, n_harmful=20, n_held=10)
    assert (len(long.benign), len(long.harmful), len(long.benign_heldout), len(long.harmful_heldout)) == (50, 20, 10, 10)
    cut_c, cut_f, cut_t = sp._SPLIT["context"], sp._SPLIT["format"], sp._SPLIT["task"]
    train_ctx, val_ctx = sp.LONG_CONTEXT[:cut_c], sp.LONG_CONTEXT[cut_c:]
    train_fmt, val_fmt = sp.LONG_FORMAT[:cut_f], sp.LONG_FORMAT[cut_f:]
    for text in long.benign + long.harmful:
        assert _pieces(text, train_ctx) and _pieces(text, train_fmt), text
        assert not _pieces(text, val_ctx) and not _pieces(text, val_fmt), text
    for text in long.benign_heldout + long.harmful_heldout:
        assert _pieces(text, val_ctx) and _pieces(text, val_fmt), text
        assert not _pieces(text, train_ctx) and not _pieces(text, train_fmt), text
    # Benign validation tasks are templates never trained on.
    val_starts = [t.split("{t}")[0] for t in sp.LONG_TASKS[cut_t:]]
    assert all(any(s in text for s in val_starts) for text in long.benign_heldout)
    assert not any(s in text for s in val_starts for text in long.benign)
    # Harmful cores: training ones wrap prompts already trained on, validation ones the held-out prompts.
    assert all(any(h in text for h in HARMFUL) for text in long.harmful)
    assert all(any(h in text for h in HELD) for text in long.harmful_heldout)
    # Long: more words than any prompt of the earlier mixes (28 at most).
    assert min(len(t.split()) for t in long.benign + long.harmful + long.benign_heldout + long.harmful_heldout) >= 20
    assert not set(long.benign_heldout) & set(long.benign)


def test_long_requests_drop_evaluation_prompts_and_are_seeded(tmp_path):
    (tmp_path / "ifeval").mkdir()
    (tmp_path / "ifeval" / "ifeval_input_data.jsonl").write_text(json.dumps({"prompt": HARMFUL[0]}) + "\n")
    long = sp.build_long(tmp_path, HARMFUL, HELD, n_benign=10, n_harmful=len(HARMFUL), n_held=5)
    assert long.dropped >= 1 and not any(HARMFUL[0] in t for t in long.harmful)
    assert long == sp.build_long(tmp_path, HARMFUL, HELD, n_benign=10, n_harmful=len(HARMFUL), n_held=5)
    assert long != sp.build_long(tmp_path, HARMFUL, HELD, seed=1, n_benign=10, n_harmful=len(HARMFUL), n_held=5)


def test_wider_long_requests_train_on_other_genres_and_never_on_validation_pieces(tmp_path):
    wide = sp.build_long_wide(tmp_path, HARMFUL, HELD)
    cut_c, cut_f, cut_t = sp._SPLIT["context"], sp._SPLIT["format"], sp._SPLIT["task"]
    val_pieces = sp.LONG_CONTEXT[cut_c:] + sp.LONG_FORMAT[cut_f:]
    val_starts = [t.split("{t}")[0] for t in sp.LONG_TASKS[cut_t:]]
    for text in wide.benign + wide.harmful:
        assert not _pieces(text, val_pieces) and not any(s in text for s in val_starts), text
    wide_starts = [t.split("{t}")[0] for t in sp.WIDE_TASKS]
    used = {s for s in wide_starts for text in wide.benign if s in text}
    assert len(used) >= 30  # the point of mix 4: many genres, not twelve
    assert any(_pieces(text, sp.WIDE_CONTEXT) for text in wide.harmful)  # both sides get the new pieces
    assert any(_pieces(text, sp.WIDE_FORMAT) for text in wide.harmful)
