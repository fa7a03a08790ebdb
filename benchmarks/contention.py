"""Decode speed on a busy machine: automatic thread count against explicit ones (issue 29).

Each configuration runs in a fresh process (OpenMP reads its settings at load), the way
`sgedge run` opens the bundle with no model (default policy, dynamic adapter): --tokens
greedy tokens, --requests requests, the median decode rate (tokens / decode seconds).
Scenarios: quiet, and busy (one process spinning on one core beside it, started first,
not pinned). Configurations: --threads 1, --threads N (the physical cores), automatic
(no --threads; runtime/threads.py), and each of the last two with OMP_WAIT_POLICY=PASSIVE
(OpenMP threads sleep at once at a barrier instead of spinning first). Rounds interleave
the configurations in a shuffled order; medians over rounds, and each configuration's
ratio to the best explicit count of its scenario.
Usage:
    python benchmarks/contention.py [--model smollm2|toy] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(bundle: str, threads: int | None, tokens: int, requests: int) -> None:
    from sgedge.runtime.api import Runtime

    with Runtime.open(bundle, threads=threads) as rt:
        rates, used, changes = [], [], [0]
        auto = getattr(rt._backend, "_auto", None)
        if auto is not None:  # count the automatic count's changes (a flapping count costs speed)
            update = auto.update

            def counted(*a: object, **k: object) -> int | None:
                n = update(*a, **k)
                changes[0] += n is not None
                return n

            auto.update = counted
        rt.generate("Hello", max_tokens=4)  # warm-up
        for i in range(requests):
            res = rt.generate(f"Write a short story about a lighthouse, part {i}.", max_tokens=tokens,
                              ignore_eos=True)
            rates.append(res.timings.generated_tokens / res.timings.decode_s)
            used.append(rt._backend.threads)
    print(json.dumps({"rate": statistics.median(rates), "threads_end": used[-1], "changes": changes[0]}))


def spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str] | None = None) -> dict:
    from sgedge.runtime.llama_lib import physical_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "toy"], default="smollm2")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", nargs=2, metavar=("BUNDLE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]) or None, args.tokens, args.requests)
        return {}
    from sgedge.demo import demo_bundle, smollm2_bundle

    if args.model == "smollm2":
        bundle, why = smollm2_bundle()
        if bundle is None:
            raise SystemExit(f"--model smollm2: {why}")
    else:
        bundle = demo_bundle()
    n = physical_cores()
    configs = {"--threads 1": ("1", {}), f"--threads {n}": (str(n), {}), "automatic": ("0", {}),
               f"--threads {n}, OMP passive": (str(n), {"OMP_WAIT_POLICY": "PASSIVE"}),
               "automatic, OMP passive": ("0", {"OMP_WAIT_POLICY": "PASSIVE"})}
    rates: dict[tuple[str, str], list[float]] = {}
    ends: dict[tuple[str, str], list[int]] = {}
    for r in range(args.rounds):
        for scenario in ("quiet", "busy"):
            for name in random.Random(r).sample(list(configs), len(configs)):
                threads, env = configs[name]
                busy = spinner() if scenario == "busy" else None
                try:
                    time.sleep(0.3)
                    out = subprocess.run([sys.executable, __file__, "--worker", str(bundle), threads,
                                          "--tokens", str(args.tokens), "--requests", str(args.requests)],
                                         capture_output=True, text=True, env={**os.environ, **env}, timeout=900)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                if out.returncode != 0:
                    raise SystemExit(f"{name} ({scenario}) failed: {out.stderr[-2000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                rates.setdefault((scenario, name), []).append(got["rate"])
                ends.setdefault((scenario, name), []).append(got["threads_end"])
                print(f"round {r + 1} {scenario:5s} {name:28s} {got['rate']:8.1f} tok/s "
                      f"(threads at the end: {got['threads_end']}, changes: {got['changes']})", flush=True)
    results: dict = {"model": args.model, "physical_cores": n, "tokens": args.tokens}
    for scenario in ("quiet", "busy"):
        med = {name: statistics.median(rates[(scenario, name)]) for name in configs}
        best = max(med["--threads 1"], med[f"--threads {n}"])
        for name in configs:
            results[f"{scenario}: {name}: tokens/s"] = round(med[name], 1)
            results[f"{scenario}: {name} / best explicit"] = round(med[name] / best, 3)
            results[f"{scenario}: {name}: threads at the end"] = ends[(scenario, name)]
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
