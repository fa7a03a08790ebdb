"""Read prompt files: CSV, JSONL, JSON or plain text, one prompt per row or line.

The columns of the public safety sets are recognised, so their files load as they are
published: AdvBench (`goal`), HarmBench (`Behavior`, `ContextString`,
`FunctionalCategory`), JailbreakBench (`Goal`), StrongREJECT (`forbidden_prompt`),
XSTest (`prompt`, `label`), MT-Bench / Vicuna-Bench (`turns`) and IFEval (`prompt`).
Optional per-row fields: `response` (a target answer), `refusal` (the refusal text to
train for that row), `answer` (expected answer, for exact-match utility) and a label.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sgedge.errors import InputError

PROMPT_COLUMNS = ("prompt", "goal", "Goal", "Behavior", "behavior", "forbidden_prompt", "question", "instruction",
                  "text", "turns")
ANSWER_COLUMNS = ("answer", "expected", "target_answer")


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str
    label: str = ""  # xstest: safe/unsafe; harmbench: functional category; others: category if given
    category: str = ""
    response: str = ""
    refusal: str = ""
    answer: str = ""


def _pick(row: dict, names: Sequence[str]) -> str:
    for n in names:
        v = row.get(n)
        if isinstance(v, list):
            v = v[0] if v else ""
        if v not in (None, ""):
            return str(v)
    return ""


def _from_row(row: dict, source: str, where: str) -> Prompt | None:
    text = _pick(row, PROMPT_COLUMNS)
    if not text:
        raise InputError(f"{where}: no prompt column; expected one of {', '.join(PROMPT_COLUMNS)} "
                         f"(found {', '.join(map(str, row)) or 'nothing'})")
    context = str(row.get("ContextString") or "").strip()
    if context:  # HarmBench contextual behaviours: the context comes first, as HarmBench prompts it
        text = f"{context}\n\n---\n\n{text}"
    label = str(row.get("label") or row.get("FunctionalCategory") or "")
    category = str(row.get("category") or row.get("Category") or row.get("SemanticCategory") or row.get("type") or "")
    return Prompt(text.strip(), source, label, category, str(row.get("response") or ""),
                  str(row.get("refusal") or ""), _pick(row, ANSWER_COLUMNS))


def read_prompts(path: str | Path) -> list[Prompt]:
    """All prompts of one file. Filters are applied by `select`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompt file {p} does not exist")
    source = p.name
    suffix = p.suffix.lower()
    rows: Iterable[dict]
    try:
        if suffix == ".csv":
            with p.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        elif suffix == ".jsonl":
            rows = []
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    obj = json.loads(line)
                    rows.append(obj if isinstance(obj, dict) else {"prompt": obj})
        elif suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # JailbreakBench artifacts keep prompts under "jailbreaks"
                data = data.get("jailbreaks") or data.get("prompts") or data.get("data") or []
            rows = [d if isinstance(d, dict) else {"prompt": d} for d in data]
        elif suffix in (".txt", ".text", ""):
            rows = [{"prompt": line.strip()} for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            raise InputError(f"{p}: unknown prompt file type {suffix!r}; use .csv, .jsonl, .json or .txt")
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{p}: cannot read it as {suffix or 'text'} ({e})") from e
    out = [q for i, r in enumerate(rows, 1) if (q := _from_row(r, source, f"{p} row {i}")) is not None]
    if not out:
        raise InputError(f"{p}: no prompts found")
    return out


def select(prompts: Sequence[Prompt], label: str | None = None) -> list[Prompt]:
    """Keep rows whose label matches (case-insensitive), e.g. XSTest `safe`, HarmBench `standard`."""
    if not label:
        return list(prompts)
    return [q for q in prompts if q.label.lower() == label.lower()]


def parse_file_arg(spec: str) -> tuple[str, str | None]:
    """`FILE` or `FILE@LABEL` (keep only rows with that label: `xstest_prompts.csv@safe`)."""
    if "@" in spec and not Path(spec).exists():
        path, _, label = spec.rpartition("@")
        return path, label
    return spec, None


# Files that hold both sides, labelled (XSTest: 250 `safe` prompts to answer, 200 `unsafe`
# contrast prompts to refuse): with no @LABEL, each role takes its own side.
ROLE_LABELS = {"harmful": "unsafe", "benign": "safe"}


def load(specs: Sequence[str], role: str | None = None, note: Callable[[str], None] | None = None) -> list[Prompt]:
    """Prompts from `FILE[@LABEL]` arguments, in order.

    `role` ("harmful" or "benign"): a file whose rows are labelled both `safe` and `unsafe`
    and has no @LABEL keeps the rows of that role's side, and `note` is told so; counting
    XSTest's unsafe contrast prompts as over-refusals (or its safe ones as prompts to refuse)
    would give a wrong figure without a word."""
    out: list[Prompt] = []
    for spec in specs:
        path, label = parse_file_arg(spec)
        rows = read_prompts(path)
        labels = {q.label.lower() for q in rows}
        if label is None and role in ROLE_LABELS and {"safe", "unsafe"} <= labels:
            label = ROLE_LABELS[role]
            if note:
                kept = len(select(rows, label))
                note(f"{path}: its rows are labelled safe and unsafe; --{role} keeps the {kept} {label} ones "
                     f"(write {Path(path).name}@{label} to say so, or @LABEL to choose)")
        rows = select(rows, label)
        if not rows:
            raise InputError(f"{path}: no rows with label {label!r}")
        out.extend(rows)
    return out
