"""Notes: advice that is not an error (a fallback taken, a setting that costs speed), said
the same way wherever it comes from: one line on standard error, `sgedge: note: ...`.
Errors are `sgedge: error: ...` (sgedge/cli.py)."""

from __future__ import annotations

import sys


def note(message: str) -> None:
    print(f"sgedge: note: {message}", file=sys.stderr, flush=True)
