"""The base's own greedy answers, kept across `sgedge train` runs.

Benign prompts train to the base's own greedy answer, and generating those answers is a
good part of a run on a CPU (SmolLM2-135M: about 8 minutes for 1,600 prompts). Runs on
the same base share them: `<cache>/answers/<key>.json` maps each prompt to its answer and
whether the answer ended on its own. The key is the base's weight fingerprint, the bytes
of its tokenizer and chat-template files, and the answer length, so a different base,
template or length never reads another's answers.

The file becomes training targets, so it is used only in a folder only this user can
write (the rule of the fused-model cache); elsewhere answers are generated as before.
Answers come from batches of other prompts than a fresh run's would be; greedy decoding
of a padded batch can differ from it in the last bits, and on rare near-ties in a token.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sgedge._fs import atomic_path
from sgedge.binding import base_fingerprint
from sgedge.bundle_verify import cache_root, ensure_private_dir

# Files besides the weights that change what the base answers.
TEMPLATE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                  "generation_config.json", "special_tokens_map.json")


def answers_key(base: Path, answer_tokens: int) -> str:
    h = hashlib.sha256()
    h.update(base_fingerprint(base).encode())
    for name in TEMPLATE_FILES:
        path = base / name
        h.update(f"\0{name}\0".encode())
        if path.is_file():
            h.update(path.read_bytes())
    h.update(f"\0answer_tokens={answer_tokens}".encode())
    return h.hexdigest()[:32]


class AnswerCache:
    """Prompt -> (answer, ended) for one base and answer length; `usable` is False when the
    cache folder is not private (then nothing is read or written)."""

    def __init__(self, base: Path, answer_tokens: int, root: Path | None = None) -> None:
        folder = (root or cache_root()) / "answers"
        self.usable = ensure_private_dir(folder.parent) and ensure_private_dir(folder)
        self.path = folder / f"{answers_key(base, answer_tokens)}.json"
        self.entries: dict[str, tuple[str, bool]] = self._read() if self.usable else {}

    def _read(self) -> dict[str, tuple[str, bool]]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {p: (v[0], bool(v[1])) for p, v in raw.items()
                if isinstance(p, str) and isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)}

    def get(self, prompt: str) -> tuple[str, bool] | None:
        return self.entries.get(prompt)

    def add(self, answers: dict[str, tuple[str, bool]]) -> None:
        """Record new answers and write the file (under a temporary name, then renamed)."""
        self.entries.update(answers)
        if not self.usable:
            return
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({p: [a, e] for p, (a, e) in self.entries.items()}), "utf-8")
