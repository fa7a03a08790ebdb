"""Start-up cost of opening a bundle: verification (cached vs full base hashing) and
load, against opening the same base and adapters directly. Usage:
    python benchmarks/startup.py [--shape smollm2-135m|qwen2.5-0.5b] [--dtype q8_0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


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
    args = p.parse_args(argv)
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
        }
    print(f"{args.shape} {args.dtype} base ({base_mb:.0f} MB), 2 rank-16 adapters, median of {args.repeats}")
    for name, s in rows.items():
        print(f"  {name:48s} {s * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
