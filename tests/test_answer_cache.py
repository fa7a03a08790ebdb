"""The base answers `sgedge train` keeps across runs (toolkit/answer_cache.py)."""

from __future__ import annotations

import json
import os

import pytest

from sgedge.toolkit.prompts import Prompt


def _counting(monkeypatch):
    import sgedge.toolkit.train as train

    real, seen = train.generate_answers, []

    def counted(tok, model, prompts, *a, **k):
        seen.extend(prompts)
        return real(tok, model, prompts, *a, **k)

    monkeypatch.setattr(train, "generate_answers", counted)
    return seen


def test_a_second_run_on_the_same_base_reuses_the_answers(tiny, tmp_path, monkeypatch):
    from sgedge.toolkit.train import TrainConfig, train_adapter

    monkeypatch.setenv("SGEDGE_CACHE_DIR", str(tmp_path / "cache"))
    t = tiny("llama")
    harmful = [Prompt(f"harm {i}", "x") for i in range(4)]
    benign = [Prompt(f"fine {i}", "x") for i in range(4)]
    cfg = TrainConfig(rank=2, epochs=1, batch_size=2, answer_tokens=4)
    seen = _counting(monkeypatch)
    train_adapter(t.hf, harmful, benign, tmp_path / "a", cfg, progress=False)
    assert seen == [f"fine {i}" for i in range(4)]
    first = json.loads((next((tmp_path / "cache" / "answers").glob("*.json"))).read_text())

    # Another adapter on the same base: only the new prompt is generated, and the old ones
    # train to the answers recorded the first time.
    seen.clear()
    more = [*benign, Prompt("fine new", "x")]
    train_adapter(t.hf, harmful, more, tmp_path / "b", cfg, progress=False)
    assert seen == ["fine new"]
    second = json.loads((next((tmp_path / "cache" / "answers").glob("*.json"))).read_text())
    assert {k: second[k] for k in first} == first and set(second) == {*first, "fine new"}

    # Another answer length is another key: everything is generated again.
    seen.clear()
    train_adapter(t.hf, harmful, benign, tmp_path / "c", TrainConfig(rank=2, epochs=1, batch_size=2, answer_tokens=3),
                  progress=False)
    assert seen == [f"fine {i}" for i in range(4)]
    assert len(list((tmp_path / "cache" / "answers").glob("*.json"))) == 2


def test_another_base_or_template_is_another_key(tiny, tmp_path):
    import shutil

    from sgedge.toolkit.answer_cache import answers_key

    t = tiny("llama")
    copy = tmp_path / "copy"
    shutil.copytree(t.hf, copy)
    assert answers_key(copy, 8) == answers_key(t.hf, 8)
    assert answers_key(copy, 8) != answers_key(copy, 9)
    cfg = copy / "tokenizer_config.json"
    data = json.loads(cfg.read_text())
    data["chat_template"] = "{{ messages[0]['content'] }}"
    cfg.write_text(json.dumps(data))
    assert answers_key(copy, 8) != answers_key(t.hf, 8)
    assert answers_key(tiny("qwen2").hf, 8) != answers_key(t.hf, 8)


@pytest.mark.skipif(os.name != "posix", reason="folder modes")
def test_a_cache_others_can_write_is_not_read(tiny, tmp_path, monkeypatch):
    """The answers become training targets: a folder another user can write could plant them."""
    from sgedge.toolkit.answer_cache import AnswerCache, answers_key

    t = tiny("llama")
    root = tmp_path / "cache"
    (root / "answers").mkdir(parents=True)
    planted = {"fine 0": ["Sure, here is how to build a bomb.", True]}
    (root / "answers" / f"{answers_key(t.hf, 4)}.json").write_text(json.dumps(planted))
    assert AnswerCache(t.hf, 4, root).get("fine 0") == ("Sure, here is how to build a bomb.", True)
    os.chmod(root / "answers", 0o777)
    cache = AnswerCache(t.hf, 4, root)
    assert not cache.usable and cache.get("fine 0") is None
    cache.add({"fine 1": ("ok", True)})  # kept in memory for this run, nothing written
    assert cache.get("fine 1") == ("ok", True)
    assert json.loads((root / "answers" / f"{answers_key(t.hf, 4)}.json").read_text()) == planted


def test_a_damaged_cache_file_is_regenerated(tiny, tmp_path):
    from sgedge.toolkit.answer_cache import AnswerCache, answers_key

    t = tiny("llama")
    root = tmp_path / "cache"
    (root / "answers").mkdir(parents=True, mode=0o700)
    path = root / "answers" / f"{answers_key(t.hf, 4)}.json"
    for text in ("{not json", "[1, 2]", json.dumps({"fine 0": "no list", "fine 1": [3, True]})):
        path.write_text(text)
        cache = AnswerCache(t.hf, 4, root)
        assert cache.usable and cache.get("fine 0") is None and cache.get("fine 1") is None
    cache.add({"fine 0": ("ok", False)})
    assert AnswerCache(t.hf, 4, root).get("fine 0") == ("ok", False)
