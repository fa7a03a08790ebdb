"""Start-up cost of opening a bundle: verification (cached vs full base hashing) and
load, against opening the same base and adapters directly, and the time from process
start to the first token of `sgedge run` (a fresh interpreter each time). Usage:
    python benchmarks/startup.py [--shape smollm2-135m|qwen2.5-0.5b] [--dtype q8_0]
    python benchmarks/startup.py --demo      # the embedded demo bundle only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def process_to_first_token(argv: list[str], repeats: int) -> float:
    """Median wall time of `sgedge run --max-tokens 1 ...` in a new interpreter: process
    start, imports, bundle verification, model load, prefill and one token, exit."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sgedge", "run", "--max-tokens", "1", *argv, "Hi"], check=True,
                       capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def demo(repeats: int) -> None:
    from sgedge.runtime.api import Runtime

    from sgedge.demo import demo_bundle

    def first_token() -> None:
        with Runtime.open(demo_bundle()) as rt:
            rt.generate("Hi", max_tokens=1)

    imports = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sgedge.cli"], check=True)
        imports.append(time.perf_counter() - t0)
    bare = statistics.median(imports)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first_token()
        samples.append(time.perf_counter() - t0)
    print(f"embedded demo bundle, median of {repeats}")
    print(f"  {'new interpreter + import sgedge.cli':48s} {bare * 1000:8.1f} ms")
    print(f"  {'in process: Runtime.open(demo) + first token':48s} {statistics.median(samples) * 1000:8.1f} ms")
    print(f"  {'sgedge run --max-tokens 1 (process start to exit)':48s} "
          f"{process_to_first_token([], repeats) * 1000:8.1f} ms")


def main(argv: list[str] | None = None) -> None:
    from decode_speed import SHAPES
    from sgedge.exporters.bundle import create_bundle
    from sgedge.exporters.synthetic import build_lora, build_model
    from sgedge.runtime.api import Runtime

    from sgedge.bundle_verify import verify_bundle
    from sgedge.manifest import PolicyItem, read_manifest

    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--dtype", default="q8_0")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--demo", action="store_true", help="measure the embedded demo bundle only")
    args = p.parse_args(argv)
    if args.demo:
        demo(args.repeats)
        return
    family, style, cfg, vocab = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SGEDGE_CACHE_DIR"] = str(work / "cache")
        hf = build_model(family, work / "hf", shape=cfg, tokenizer_style=style, vocab_size=vocab, init_std=0.02)
        loras = {n: build_lora(hf, work / n, r=16, alpha=32, std=0.02, seed=i) for i, n in enumerate(["a", "b"])}
        bundle = work / "bundle"
        create_bundle(bundle, hf, loras, {"US": (PolicyItem("a"),), "EU": (PolicyItem("b"),)},
                      default_policy="US", gguf_dtype=args.dtype)
        m, _ = read_manifest(bundle)
        base_mb = sum(f.size for f in m.base.formats["gguf"].files) / 1e6

        def timed(fn) -> float:
            samples = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            return statistics.median(samples)

        def open_close(**kw):
            Runtime.open(bundle, "US", **kw).close()

        def direct():
            Runtime.open(bundle / "base.gguf", adapters=[bundle / m.adapters[n].formats["gguf"].path
                                                         for n in m.adapters]).close()

        verify_bundle(bundle)  # fill the hash cache
        rows = {
            "open base + 2 adapters directly (no bundle)": timed(direct),
            "verify only, base hash cached": timed(lambda: verify_bundle(bundle)),
            "verify only, full (re-hash base)": timed(lambda: verify_bundle(bundle, verify="full")),
            "Runtime.open(bundle), cached": timed(open_close),
            "Runtime.open(bundle), verify=full": timed(lambda: open_close(verify="full")),
            "sgedge run --max-tokens 1 (process start to exit)": process_to_first_token(
                ["--bundle", str(bundle)], args.repeats),
        }
    print(f"{args.shape} {args.dtype} base ({base_mb:.0f} MB), 2 rank-16 adapters, median of {args.repeats}")
    for name, s in rows.items():
        print(f"  {name:48s} {s * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
