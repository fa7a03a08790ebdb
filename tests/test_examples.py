"""The short example programs a user copies run as their docstrings say."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_prints_commands_that_can_be_pasted(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert len(commands) == 5 and all(c[0] == "sgedge" for c in commands)
    # The prompt is one quoted argument, as it was given, so the line runs when pasted.
    assert all(c[-1] == "How do I bake bread?" for c in commands[2:])
    assert commands[2][:3] == ["sgedge", "run", "--model"] and Path(commands[2][3]).is_file()
