"""How many threads llama.cpp decodes with when the machine is not ours alone.

llama.cpp splits every operation of a token over its threads and waits at a barrier
after each one; this build's threads wait there spinning (OpenMP). When another process
holds a core, the thread that shares it is descheduled for whole time slices and every
barrier waits for it: on 2 cores with one busy process, 2 threads decoded SmolLM2 at 0.37x
of what 1 thread gave (docs/performance.md). One thread per core that
is free is the right count, and "free" changes while an app runs.

With no explicit thread count, the engine measures what other processes used since its
last look (Linux: /proc/stat's busy time of all CPUs, less this process's own CPU time;
steal counts as busy: a hypervisor's other guests hold the core) and decodes with one
thread per core they left free, at least one and at most the physical cores. It looks
again before each generation and every few tenths of a second while decoding, so a
compile that starts or ends mid-reply moves the count within a few tokens. Where the
busy time cannot be read (other systems), the count stays at the physical cores.
"""

from __future__ import annotations

import math
import os
import time

MIN_INTERVAL_S = 0.25  # shorter windows are mostly rounding of the 10 ms tick
# The first look, at the first generation, takes a shorter window: a small model opens and
# answers its first requests within 0.25 s, and would run them all on every core of a busy
# machine otherwise (5 ticks per core: coarse, but the choice only turns at half a core).
FIRST_INTERVAL_S = 0.05
_STAT = "/proc/stat"


def _sample() -> tuple[float, float, float] | None:
    """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process)."""
    try:
        with open(_STAT, "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu" or len(fields) < 8:
        return None
    try:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
        steal = int(fields[8]) if len(fields) > 8 else 0
    except ValueError:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    own = os.times()
    return time.monotonic(), (user + nice + system + irq + softirq + steal) / tick, own.user + own.system


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose(physical: int, usable: int, others: float) -> int:
    """Threads for `others` cores' worth of CPU in use by other processes: one per core
    left free (a core more than half free counts), within [1, physical]."""
    free = usable - max(0.0, others)
    return max(1, min(physical, usable, math.floor(free + 0.5)))


class LoadProbe:
    """What other processes used between two looks; None when it cannot tell."""

    def __init__(self) -> None:
        self._last = _sample()

    def others(self, min_interval: float = MIN_INTERVAL_S) -> float | None:
        """Cores' worth of CPU other processes used since the last look that returned a
        figure (None: not readable here, or less than `min_interval` since then)."""
        if self._last is None:
            return None
        now = _sample()
        if now is None:
            return None
        dt = now[0] - self._last[0]
        if dt < min_interval:
            return None
        busy = (now[1] - self._last[1]) - (now[2] - self._last[2])
        self._last = now
        return max(0.0, busy / dt)


class AutoThreads:
    """The thread count of one engine with no explicit `threads`: `current` now, and
    `update()` -> the new count when it should change (else None)."""

    def __init__(self, physical: int) -> None:
        self.physical = max(1, physical)
        self.usable = usable_cpus()
        self.current = min(self.physical, self.usable)
        self._probe = LoadProbe()
        self._looked = False

    def update(self, min_interval: float = MIN_INTERVAL_S) -> int | None:
        others = self._probe.others(min_interval if self._looked else min(min_interval, FIRST_INTERVAL_S))
        if others is None:
            return None
        self._looked = True
        n = choose(self.physical, self.usable, others)
        if n == self.current:
            return None
        self.current = n
        return n
