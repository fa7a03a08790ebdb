"""The embedded demo: a tiny chat model with two safety adapters, shipped as package data.

Built by examples/build_demo.py (seeded, from a generated corpus); `sgedge run "..."`
uses it when no --model or --bundle is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sgedge.errors import InputError

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def demo_bundle() -> Path:
    bundle = DEMO_DIR / "bundle"
    if not (bundle / "sgedge.json").is_file():
        raise InputError(f"the embedded demo bundle is missing ({bundle}); reinstall sgedge, rebuild it with "
                         "`python examples/build_demo.py`, or give --model / --bundle")
    return bundle


def demo_info() -> dict[str, Any]:
    info_file = DEMO_DIR / "demo.json"
    if not info_file.is_file():
        demo_bundle()
        raise InputError(f"{info_file} is missing; rebuild the demo with `python examples/build_demo.py`")
    info = json.loads(info_file.read_text())
    files = [f for f in DEMO_DIR.rglob("*") if f.is_file()]
    info["path"] = str(demo_bundle())
    info["size_bytes"] = sum(f.stat().st_size for f in files)
    return info


def info_cli(args: argparse.Namespace) -> int:
    from sgedge.manifest import read_manifest

    info = demo_info()
    m, _ = read_manifest(Path(info["path"]))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    b = info["base"]
    print(f"{info['name']}: {info['note']}")
    print(f"  bundle     {info['path']} ({info['size_bytes'] / 1e6:.1f} MB)")
    print(f"  base       {b['architecture']}, {b['parameters'] / 1e6:.1f} M parameters, vocab {b['vocab']}, "
          f"trained {b['steps']} steps on {b['conversations']} generated conversations (loss {b['final_loss']})")
    formats = ", ".join(f"{f} {a.dtype}".strip() for f, a in m.base.formats.items())
    print(f"  formats    {formats}")
    for name, a in info["adapters"].items():
        layers = a.get("layers")
        on = f"layers {_spans(layers)}" if layers else "every layer"
        where = f"LoRA rank {a['rank']} on {on}; " if "rank" in a else ""
        print(f"  adapter    {name}: {where}trained on {a['harmful']} harmful + {a['benign']} benign prompts, "
              f"{a['steps']} steps; refuses with \"{a['refusal'][:60]}...\"")
    default = m.default_policy
    for key, items in m.policies.items():
        mark = "  (default)" if key == default else ""
        print(f"  policy     {key} = " + " + ".join(f"{i.adapter}:{i.scale:g}" for i in items) + mark)
    print(f"  made by    {info['command']}")
    return 0


def _spans(layers: list[int]) -> str:
    """[3, 4, 5, 7] -> "3-5, 7"."""
    runs: list[list[int]] = []
    for i in sorted(set(layers)):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def path_cli(args: argparse.Namespace) -> int:
    print(demo_bundle())
    return 0
