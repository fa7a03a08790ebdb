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
    for sub in (ROOT / "sgedge").iterdir():  # sgedge.commands, .formats, .testing
        if (sub / "__init__.py").is_file():
            os.symlink(sub, tree / sub.name)
    for sub in ("runtime", "exporters", "toolkit"):
        os.symlink(ROOT / sub, tree / sub)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-incremental",
                           "--cache-dir", os.devnull, "sgedge/__init__.py", "sgedge/runtime/api.py",
                           "sgedge/manifest.py", "sgedge/errors.py", "sgedge/runtime/backend.py",
                           "sgedge/runtime/pool.py", "sgedge/runtime/threads.py", "sgedge/runtime/options.py"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def _python_tree(dest: Path) -> Path:
    """The package's .py files in the installed layout (sgedge/runtime, ...), copied: the
    repository maps runtime/, exporters/ and toolkit/ into sgedge.* with package-dir."""
    import shutil

    for src, dst in (("sgedge", dest / "sgedge"), ("runtime", dest / "sgedge" / "runtime"),
                     ("exporters", dest / "sgedge" / "exporters"), ("toolkit", dest / "sgedge" / "toolkit")):
        for f in (ROOT / src).rglob("*.py"):
            rel = f.relative_to(ROOT / src)
            if src == "sgedge" and rel.parts[0] in ("runtime", "exporters", "toolkit"):
                continue
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
    return dest


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter not installed (dev extra)")
def test_the_floors_hold(tmp_path):
    """pyproject.toml's import-linter contracts: dispatcher > commands > toolkit > runtime |
    exporters > core, and test-model builders out of the production path."""
    proc = _lint_imports(_python_tree(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter not installed (dev extra)")
@pytest.mark.parametrize(("module", "line", "contract"), [
    ("runtime/types.py", "import sgedge.toolkit.train", "Floors"),          # the runtime reaching up
    ("exporters/gguf_adapter.py", "import sgedge.runtime.api", "Floors"),   # exporters on the runtime
    ("sgedge/manifest.py", "import sgedge.runtime.api", "Core"),            # core reaching up
    ("toolkit/train.py", "import sgedge.testing.synthetic", "Test-model builders"),
])
def test_a_lower_floor_importing_a_higher_one_fails(tmp_path, module, line, contract):
    tree = _python_tree(tmp_path)
    parts = module.split("/")
    target = tree / "sgedge" / "/".join(parts[1:]) if parts[0] == "sgedge" else tree / "sgedge" / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    proc = _lint_imports(tree)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]
    broken = proc.stdout.split("Broken contracts", 1)[1]
    assert contract in broken, broken[:2000]


def _sgedge_imports():
    """Every `from sgedge... import name` in the repository's own scripts and packages."""
    import ast
    for folder in ("sgedge", "exporters", "runtime", "toolkit", "recipes", "benchmarks", "examples", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else ():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("sgedge"):
                    for alias in node.names:
                        yield path.relative_to(ROOT), node.lineno, node.module, alias.name


def test_every_sgedge_import_in_the_repository_resolves():
    """Imports inside functions only fail when that function runs (a renamed helper broke the demo
    build this way); resolve them all statically so a rename shows up here first."""
    import importlib
    broken = []
    for path, line, module, name in _sgedge_imports():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            broken.append(f"{path}:{line}: {module} ({exc})")
            continue
        if name != "*" and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                broken.append(f"{path}:{line}: {module} has no {name}")
    assert not broken, "\n".join(broken)
