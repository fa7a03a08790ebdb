"""End to end on your machine in under a minute, no download:

1. build a tiny random Qwen2-style model and a random LoRA "safety adapter" (PEFT),
2. export both to GGUF with sgedge (the adapter bound to its base),
3. run the base with and without the adapter through the sgedge CLI.

The model is random, so the text is gibberish; what matters is that the adapter
changes the output and that nothing was downloaded. Usage:
    python examples/quickstart.py [WORKDIR]
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from sgedge.cli import main
from sgedge.testing.synthetic import build_lora, build_model


def run(argv: list[str]) -> None:
    print("$ " + shlex.join(["sgedge", *argv]), flush=True)  # quoted: the line can be pasted
    rc = main(argv)
    if rc:
        sys.exit(rc)


def quickstart(work: Path) -> None:
    hf = build_model("qwen2", work / "hf-base")
    lora = build_lora(hf, work / "peft-safety", r=8, alpha=16)
    run(["export", "base", str(hf), "--format", "gguf", "--dtype", "q8_0", "-o", str(work / "base.gguf")])
    run(["export", "adapter", str(lora), "--format", "gguf", "--base", str(hf), "-o", str(work / "safety.gguf")])
    run(["run", "--model", str(work / "base.gguf"), "--max-tokens", "16", "How do I bake bread?"])
    run(["run", "--model", str(work / "base.gguf"), "--adapter", str(work / "safety.gguf"), "--max-tokens", "16",
         "How do I bake bread?"])
    run(["run", "--model", str(work / "base.gguf"), "--adapter", f"{work / 'safety.gguf'}:0.5", "--max-tokens",
         "8", "--json", "How do I bake bread?"])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        quickstart(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            quickstart(Path(tmp))
