"""Numerical check of sgedge on a GPU against transformers + PEFT (fp32, CPU).

Two phases, so that the part needing no GPU runs while llama-cpp-python builds:
    python benchmarks/gpu/check.py build DIR     # CPU: tiny models, exports, references
    python benchmarks/gpu/check.py run DIR [--backends gguf,onnx]   # GPU: compare
and, on a shape folder that `benchmarks/run.py --build-only --onnx-ep cuda` made:
    python benchmarks/gpu/check.py build-speed WORK/SHAPE   # CPU: the same base for --ep cpu
    python benchmarks/gpu/check.py speed WORK/SHAPE         # GPU: decode tok/s of both

`build` makes a tiny random model per family with two PEFT adapters (rank 8 and 4),
exports GGUF f32 (+ f32 adapters) and ONNX bases for the CPU provider (fp32) and for
CUDA (fp16), and saves transformers + PEFT logits for no adapter, one, one at 0.5 and
two stacked (1.0 + 0.5). `run` opens every export on the GPU with sgedge (dynamic and
fused), prints the max logit difference to the reference and how many greedy tokens
equal the reference's argmax, and says which device the engine really used. It prints
figures; it asserts nothing (a GPU lease is too short to stop at the first surprise).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "phi3")
CASES = {"none": [], "one": [("a1", 1.0)], "half": [("a1", 0.5)], "stacked": [("a1", 1.0), ("a2", 0.5)]}
PROMPT = "Safety adapters keep the base model frozen. Hello world 42!"
ONNX_VARIANTS = (("fp32", "cpu"), ("fp16", "cuda"))



def _load(path: Path):
    """A module from a file beside this package (tests/reference.py, benchmarks/decode_speed.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def build(root: Path) -> None:
    reference = _load(Path(__file__).resolve().parents[2] / "tests" / "reference.py")
    hf_logits, hf_model = reference.hf_logits, reference.hf_model
    from transformers import AutoTokenizer

    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx
    from sgedge.testing.synthetic import build_lora, build_model

    for i, fam in enumerate(FAMILIES):
        d = root / fam
        hf = build_model(fam, d / "hf", seed=i)
        loras = {"a1": build_lora(hf, d / "lora1", r=8, alpha=16, seed=11),
                 "a2": build_lora(hf, d / "lora2", r=4, alpha=4, seed=22)}
        export_base_gguf(hf, d / "base.gguf", dtype="f32")
        for name, lora in loras.items():
            export_adapter_gguf(lora, d / f"{name}.gguf", base=hf, dtype="f32")
        for dtype, ep in ONNX_VARIANTS:
            base = export_base_onnx(hf, d / f"onnx-{dtype}-{ep}", dtype=dtype, ep=ep).path
            for name, lora in loras.items():
                export_adapter_onnx(lora, d / f"{name}-{dtype}-{ep}.onnx_adapter", base=base)
        ids = AutoTokenizer.from_pretrained(hf)(PROMPT).input_ids
        # 24 more tokens to check greedy continuations teacher-forced: the reference's own
        # greedy tokens with each adapter set.
        ref = {}
        for case, items in CASES.items():
            model = hf_model(hf, [(loras[n], s) for n, s in items])
            seq = list(ids)
            for _ in range(24):
                seq.append(int(hf_logits(model, seq)[-1].argmax()))
            ref[case] = {"tokens": seq, "logits": hf_logits(model, seq)}
            np.save(d / f"ref-{case}.npy", ref[case]["logits"])
        (d / "ref.json").write_text(json.dumps({"prompt_ids": ids, **{c: r["tokens"] for c, r in ref.items()}}))
        print(f"built {fam}", flush=True)


def compare(rt, d: Path, ref: dict, label: str, cases=CASES, fused_case: str | None = None) -> None:
    n_prompt = len(ref["prompt_ids"])
    for case, items in cases.items():
        want = np.load(d / f"ref-{case}.npy")
        seq = ref[case]
        got = rt.logits(seq, adapters=None if fused_case else items)
        diff = float(np.abs(got - want).max())
        argmax = got[n_prompt - 1:-1].argmax(-1)
        same = int((argmax == np.array(seq[n_prompt:])).sum())
        print(f"  {label:34s} {case:8s} max |logit - ref| {diff:9.2e}   greedy {same}/{len(seq) - n_prompt} "
              f"(spread {float(want.std()):.2f})", flush=True)


def run(root: Path, backends: list[str], device: str = "cuda") -> None:
    from sgedge.runtime.api import Runtime

    for fam in FAMILIES:
        d = root / fam
        ref = json.loads((d / "ref.json").read_text())
        print(f"{fam}:", flush=True)
        runs = []
        if "gguf" in backends:  # llama.cpp's defaults (f16 KV cache), then exact=True (f32 KV cache)
            runs += [("gguf f32", d / "base.gguf", [d / "a1.gguf", d / "a2.gguf"], {}),
                     ("gguf f32 exact", d / "base.gguf", [d / "a1.gguf", d / "a2.gguf"], {"exact": True})]
        if "onnx" in backends:
            runs += [(f"onnx {dtype} (built for {ep})", d / f"onnx-{dtype}-{ep}",
                      [d / f"a1-{dtype}-{ep}.onnx_adapter", d / f"a2-{dtype}-{ep}.onnx_adapter"], {})
                     for dtype, ep in ONNX_VARIANTS]
        for label, base, adapters, kw in runs:
            try:
                t0 = time.perf_counter()
                with Runtime.open(base, adapters=[(adapters[0], 1.0), (adapters[1], 1.0)], device=device, **kw) as rt:
                    # Adapter names are the file stems; CASES says a1 / a2.
                    names = {"a1": adapters[0].stem, "a2": adapters[1].stem}
                    cases = {c: [(names[n], s) for n, s in items] for c, items in CASES.items()}
                    print(f"  {label}: engine device {rt._backend.device}, opened in "
                          f"{time.perf_counter() - t0:.1f} s", flush=True)
                    compare(rt, d, ref, label + " dynamic", cases)
                with Runtime.open(base, adapters=[(adapters[0], 1.0), (adapters[1], 0.5)], device=device,
                                  mode="fused", **kw) as rt:
                    compare(rt, d, ref, label + " fused", {"stacked": cases["stacked"]}, fused_case="stacked")
            except Exception as e:  # keep going: every other figure is still worth having
                print(f"  {label}: FAILED {type(e).__name__}: {e}", flush=True)


SPEED_DTYPE = "int4"


def build_speed(shape_dir: Path) -> None:
    """The int4 base of a run.py shape folder exported for the CPU provider as well."""
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    base = export_base_onnx(shape_dir / "hf", shape_dir / f"sg-onnx-{SPEED_DTYPE}-cpu", dtype=SPEED_DTYPE).path
    export_adapter_onnx(shape_dir / "lora", shape_dir / f"a-{SPEED_DTYPE}-cpu.onnx_adapter", base=base)
    print(f"built {base}", flush=True)


def speed(shape_dir: Path, device: str, rounds: int = 3) -> None:
    """Decode tok/s on the GPU of the same int4 base and adapter exported for the CPU
    provider and for CUDA (does --ep matter there?), interleaved, 2 loads each."""
    import statistics

    decode_speed = _load(Path(__file__).resolve().parents[1] / "decode_speed.py")
    TEXT, decode_rate = decode_speed.PROMPT, decode_speed.decode_rate
    from sgedge.runtime.api import Runtime

    rts, samples = {}, {}
    for ep in ("cpu", "cuda", "cuda", "cpu"):
        base, adapter = shape_dir / f"sg-onnx-{SPEED_DTYPE}-{ep}", shape_dir / f"a-{SPEED_DTYPE}-{ep}.onnx_adapter"
        rts[(ep, len(rts))] = Runtime.open(base, adapters=[adapter], device=device)
    for _ in range(rounds):
        for (ep, _), rt in rts.items():
            for label, adapters in (("no adapter", []), ("+ adapter", None)):
                run = lambda n, rt=rt, a=adapters: rt.generate(TEXT, raw=True, max_tokens=n, adapters=a,  # noqa: E731
                                                              ignore_eos=True)
                samples.setdefault(f"{SPEED_DTYPE} built for {ep}, {label}", []).append(decode_rate(run, 64))
    print(f"{shape_dir.name}: ONNX {SPEED_DTYPE} on {device}, decode tok/s (median of {rounds} rounds x 2 loads; "
          f"engine device {next(iter(rts.values()))._backend.device})")
    for name, got in samples.items():
        print(f"  {name:40s} {statistics.median(got):8.1f}")
    for rt in rts.values():
        rt.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["build", "run", "build-speed", "speed"])
    p.add_argument("dir", type=Path)
    p.add_argument("--backends", default="gguf,onnx")
    p.add_argument("--device", default="cuda", help="cpu: try the script where there is no GPU")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.phase == "build":
        build(args.dir)
    elif args.phase == "run":
        run(args.dir, args.backends.split(","), args.device)
    elif args.phase == "build-speed":
        build_speed(args.dir)
    else:
        speed(args.dir, args.device)


if __name__ == "__main__":
    main()
