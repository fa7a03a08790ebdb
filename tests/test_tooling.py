"""The repository's own tooling: ruff on every Python file, mypy on the public API."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed (dev extra)")
def test_ruff_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (dev extra)")
def test_mypy_passes_on_the_public_api(tmp_path):
    # Also what holds the engines to one interface: Runtime types its engine as the
    # runtime/backend.py Protocol, so an engine that drifts from it fails here.
    # The package maps runtime/, exporters/ and toolkit/ into sgedge.* with package-dir,
    # which mypy cannot read; a tree of links gives it the installed layout.
    tree = tmp_path / "sgedge"
    tree.mkdir()
    for f in (ROOT / "sgedge").glob("*.py"):
        os.symlink(f, tree / f.name)
    for sub in ("runtime", "exporters", "toolkit"):
        os.symlink(ROOT / sub, tree / sub)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-incremental",
                           "--cache-dir", os.devnull, "sgedge/__init__.py", "sgedge/runtime/api.py",
                           "sgedge/manifest.py", "sgedge/errors.py", "sgedge/runtime/backend.py",
                           "sgedge/runtime/pool.py", "sgedge/runtime/threads.py"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
