"""Stop strings: end a generation where the text first contains one of them.

Text is fed piece by piece as the engine produces it. The scanner passes on what can
no longer be the start of a stop string and holds back the rest, so a streamed reply
never shows part of a stop string that the final text leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence

from sgedge.errors import InputError

MAX_STOPS = 16


def check_stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalise `stop` (a string, a list of strings or None) or raise a clear error."""
    if stop is None:
        return ()
    if not isinstance(stop, str) and not isinstance(stop, list | tuple):
        raise InputError(f"stop is a string or a list of strings (got {type(stop).__name__})")
    items = [stop] if isinstance(stop, str) else list(stop)
    if len(items) > MAX_STOPS:
        raise InputError(f"at most {MAX_STOPS} stop strings (got {len(items)})")
    for s in items:
        if not isinstance(s, str) or not s:
            raise InputError(f"stop strings must be non-empty strings (got {s!r})")
    return tuple(items)


class StopScanner:
    """Feed text pieces; get back what may be shown, and whether a stop string ended it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Return the part of `piece` (with text held back before) that is safe to show."""
        if self.stopped:
            return ""
        text = self._pending + piece
        if not self.stops:
            return text
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._pending = True, ""
            return text[:cut]
        # Hold back the longest tail that could still begin a stop string.
        keep = 0
        for n in range(min(self._hold, len(text)), 0, -1):
            if any(s.startswith(text[-n:]) for s in self.stops):
                keep = n
                break
        self._pending = text[len(text) - keep:]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The text held back when the generation ends without a stop string."""
        text, self._pending = self._pending, ""
        return "" if self.stopped else text
