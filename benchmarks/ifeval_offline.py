"""NLTK data for lm-eval's IFEval checkers, without a download.

lm-eval's checkers split sentences (`length_constraints:number_sentences`) and words
(`change_case:capital_word_frequency`) with NLTK's Punkt tokenizer, whose English model
(`punkt_tab`) `nltk.download` fetches from GitHub, which this machine cannot reach, and
no PyPI package carries. Importing this module gives NLTK an *untrained* Punkt model (no
abbreviation, collocation or sentence-starter lists: Punkt's generic rules alone) in a
private folder. That changes only those two checkers, and only where a reply has an
abbreviation such as "Dr." mid-sentence; benchmarks/safety_smollm2.py says so beside
its figures. With the real `punkt_tab` installed, NLTK finds it first and this is unused.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nltk

FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def _install() -> Path | None:
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return None
    except LookupError:
        pass
    root = Path(tempfile.mkdtemp(prefix="sgedge-nltk-"))
    lang = root / "tokenizers" / "punkt_tab" / "english"
    lang.mkdir(parents=True)
    for name in FILES:
        (lang / name).write_text("")
    nltk.data.path.insert(0, str(root))
    return root


UNTRAINED = _install()
