"""The runtime never imports torch: proven in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys


def test_runtime_generation_does_not_import_torch(tiny, tiny_onnx):
    t, o = tiny("qwen2"), tiny_onnx("qwen2")
    code = f"""
import json, sys
import sgedge, sgedge.runtime
from sgedge import Runtime
from sgedge.cli import main
with Runtime.open({str(t.gguf)!r}, adapters=[{str(t.a1)!r}]) as rt:
    r = rt.generate("Hello", raw=True, max_tokens=4)
rc = main(["run", "--model", {str(t.gguf)!r}, "--adapter", {str(t.a2)!r} + ":0.5", "--raw", "--max-tokens", "3", "--json", "Hi"])
rc += main(["run", "--model", {str(o.base)!r}, "--adapter", {str(o.a1)!r}, "--max-tokens", "3", "--json", "Hi"])
with Runtime.open({str(o.base)!r}, adapters=[{str(o.a1)!r}, {str(o.a2)!r}]) as rt:
    r2 = rt.generate("Hello", max_tokens=4, adapters=[("a1", 1.0), ("a2", 0.5)])
# Nor a second ONNX Runtime (the onnxruntime package) next to onnxruntime-genai's, even to compose.
second_ort = "onnxruntime" in sys.modules
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft"))
print(json.dumps({{"tokens": min(len(r.tokens), len(r2.tokens)), "rc": rc, "heavy": heavy, "ort": second_ort}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["tokens"] > 0 and report["rc"] == 0
    assert report["heavy"] == [] and report["ort"] is False
