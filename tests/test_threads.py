"""Automatic thread count under contention (runtime/threads.py): the choice, and the
measure of what other processes use, on a /proc/stat written by the test."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from sgedge.runtime import threads
from sgedge.runtime.threads import AutoThreads, LoadProbe, choose


@pytest.mark.parametrize(("physical", "usable", "others", "want"), [
    (2, 2, 0.0, 2),    # quiet: every core
    (2, 2, 1.0, 1),    # one busy process: the free core
    (2, 2, 0.67, 1),   # a busy process sharing with our 2 spinning threads (fair share 2/3)
    (2, 2, 0.4, 2),    # a light background load: still worth both
    (2, 2, 2.0, 1),    # everything busy: never fewer than one
    (4, 8, 2.0, 4),    # SMT: physical cores cap it
    (8, 4, 0.0, 4),    # an affinity mask of 4 CPUs caps it
])
def test_one_thread_per_core_left_free(physical, usable, others, want):
    assert choose(physical, usable, others) == want


class FakeMachine:
    """/proc/stat and os.times() as the test sets them."""

    def __init__(self, tmp_path, monkeypatch):
        self.stat = tmp_path / "stat"
        self.t = 100.0
        self.busy = 0  # ticks
        self.own = 0.0  # seconds
        monkeypatch.setattr(threads, "_STAT", str(self.stat))
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.t)
        monkeypatch.setattr(threads.os, "times", lambda: SimpleNamespace(user=self.own, system=0.0))
        monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
        self.write()

    def write(self):
        # user nice system idle iowait irq softirq steal: busy split over user and steal
        self.stat.write_text(f"cpu  {self.busy - self.busy // 4} 0 0 5000 0 0 0 {self.busy // 4} 0 0\ncpu0 ...\n")

    def advance(self, seconds, busy_cores, own_cores):
        tick = os.sysconf("SC_CLK_TCK")
        self.t += seconds
        self.busy += round(seconds * busy_cores * tick)
        self.own += seconds * own_cores
        self.write()


def test_the_probe_subtracts_this_process_and_counts_steal(tmp_path, monkeypatch):
    m = FakeMachine(tmp_path, monkeypatch)
    probe = LoadProbe()
    m.advance(1.0, busy_cores=2.0, own_cores=1.33)
    assert probe.others() == pytest.approx(0.67, abs=0.02)
    m.advance(0.1, busy_cores=2.0, own_cores=0.0)
    assert probe.others() is None, "too short a window says nothing"
    m.advance(0.5, busy_cores=0.1, own_cores=0.1)
    # The window runs from the last look that gave a figure: 0.6 s, 0.2 + 0.05 busy-core-seconds
    # of which 0.05 our own.
    assert probe.others() == pytest.approx(0.2 / 0.6, abs=0.02)


def test_auto_threads_follow_a_busy_process_and_come_back(tmp_path, monkeypatch):
    m = FakeMachine(tmp_path, monkeypatch)
    auto = AutoThreads(physical=2)
    assert auto.current == 2
    m.advance(0.5, busy_cores=2.0, own_cores=1.2)  # another process took 0.8 of a core
    assert auto.update() == 1 and auto.current == 1
    m.advance(0.5, busy_cores=2.0, own_cores=1.0)  # still there
    assert auto.update() is None
    m.advance(0.5, busy_cores=1.0, own_cores=1.0)  # it ended
    assert auto.update() == 2


def test_the_first_look_takes_a_shorter_window(tmp_path, monkeypatch):
    """A small model opens and answers within 0.25 s: its first generation still sees a busy machine."""
    m = FakeMachine(tmp_path, monkeypatch)
    auto = AutoThreads(physical=2)
    m.advance(0.02, busy_cores=2.0, own_cores=1.0)
    assert auto.update() is None, "under the first window: nothing to go on"
    m.advance(0.06, busy_cores=2.0, own_cores=1.0)
    assert auto.update() == 1
    m.advance(0.1, busy_cores=1.0, own_cores=1.0)
    assert auto.update() is None, "later looks wait for the full window"
    m.advance(0.2, busy_cores=1.0, own_cores=1.0)
    assert auto.update() == 2


def test_no_proc_stat_keeps_the_physical_count(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_STAT", str(tmp_path / "missing"))
    auto = AutoThreads(physical=2)
    assert auto.update(min_interval=0) is None and auto.current == min(2, threads.usable_cpus())


def test_engine_threads_default_to_automatic_and_obey_an_explicit_count(tiny):
    from sgedge.runtime.gguf_backend import GgufBackend

    t = tiny("llama")
    with GgufBackend(t.gguf, n_ctx=64) as be:
        assert be._auto is not None and be.threads == be._auto.current
    with GgufBackend(t.gguf, n_ctx=64, threads=1) as be:
        assert be._auto is None and be.threads == 1
