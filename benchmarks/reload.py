"""Live reload of a re-signed bundle (`Runtime.reload()`, `sgedge serve`): latency, and
correctness under load. Usage:
    python benchmarks/reload.py [--shape smollm2-135m] [--dtype q8_0] [--reloads 20] [--rss-reloads 50]

1. Reload latency (verify + load + switch), median over alternating versions, for 1 and
   for 4 changed adapters.
2. Under load: a server with --clients concurrent streaming clients on alternating
   policies while the bundle is patched and reloaded --reloads times. Every reply names
   the bundle version that produced it; each is checked token for token (greedy) against
   a single-threaded reference of that version: zero failed requests, zero mixed replies.
3. RSS after 10 and after --rss-reloads reloads (flat: freed adapters are freed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

NAMES = ("a", "b", "c", "d")
POLICY_OF = {"US": "a", "EU": "b", "KIDS": "c", "TEEN": "d"}
PROMPT = [{"role": "user", "content": "Tell me about the weather in spring."}]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    from decode_speed import SHAPES

    from sgedge.exporters.bundle import add_adapter, create_bundle
    from sgedge.manifest import PolicyItem
    from sgedge.runtime.api import Runtime
    from sgedge.runtime.serve import serve
    from sgedge.signing import keygen, sign_bundle
    from sgedge.testing.synthetic import build_lora, build_model

    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--dtype", default="q8_0")
    p.add_argument("--backend", choices=["gguf", "onnx"], default="gguf")
    p.add_argument("--reloads", type=int, default=20)
    p.add_argument("--rss-reloads", type=int, default=50)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    args = p.parse_args(argv)

    family, style, cfg, _ = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SGEDGE_CACHE_DIR"] = str(work / "cache")
        # The tokenizer's own vocabulary (no padding rows): every reply token is text, so that
        # replies compared as text tell versions apart.
        hf = build_model(family, work / "hf", shape=cfg, tokenizer_style=style, init_std=0.02)
        versions = {v: {n: build_lora(hf, work / f"{n}{v}", r=16, alpha=32, std=0.2, seed=10 * v + i)
                        for i, n in enumerate(NAMES)} for v in (1, 2)}
        bundle = work / "bundle"
        formats = ["gguf"] if args.backend == "gguf" else ["onnx"]
        create_bundle(bundle, hf, versions[1], {k: (PolicyItem(a),) for k, a in POLICY_OF.items()},
                      default_policy="US", gguf_dtype=args.dtype, formats=formats)
        keygen(work / "k.key", work / "k.pub")
        sign_bundle(bundle, work / "k.key")

        def patch(names: tuple[str, ...], v: int) -> None:
            for n in names:
                add_adapter(bundle, n, versions[v][n])
            sign_bundle(bundle, work / "k.key")

        rt = Runtime.open(bundle, backend=args.backend, trusted_key=work / "k.pub")
        print(f"{args.shape} {args.dtype} {args.backend} base, 4 rank-16 adapters; reload = verify + load + switch")
        # 1. Latency.
        for names in (NAMES[:1], NAMES):
            samples, v = [], 1
            for _ in range(6):
                v = 3 - v
                patch(names, v)
                samples.append(rt.reload().seconds)
            print(f"  reload, {len(names)} changed adapter(s): median {statistics.median(samples) * 1000:7.1f} ms "
                  f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f}, n={len(samples)})")
        # References: greedy replies of each version, single-threaded.
        refs: dict[int, dict[str, str]] = {}
        for v in (1, 2):
            patch(NAMES, v)
            rt.reload()
            refs[v] = {k: rt.generate(PROMPT, policy=k, max_tokens=args.max_tokens, ignore_eos=True).text
                       for k in ("US", "EU")}
        assert refs[1] != refs[2], f"the two versions must differ for the check to mean anything: {refs}"
        variant = {rt.bundle_version: 2}  # version string -> adapter variant

        # 2. Under load.
        import http.client

        srv = serve(rt, host="127.0.0.1", port=0, model_id="bench", api_key="k")
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        stop, results, failures = threading.Event(), [], []

        def client(i: int) -> None:
            n = 0
            while not stop.is_set():
                policy = ("US", "EU")[(i + n) % 2]
                n += 1
                body = json.dumps({"messages": PROMPT, "max_tokens": args.max_tokens, "stream": True,
                                   "policy": policy, "ignore_eos": True}).encode()
                try:
                    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=300)
                    conn.request("POST", "/v1/chat/completions", body=body,
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer k"})
                    resp = conn.getresponse()
                    if resp.status != 200:
                        failures.append(f"HTTP {resp.status}: {resp.read()[:200]!r}")
                        continue
                    text, version = [], None
                    for raw in resp.read().decode().split("\n\n"):
                        if not raw.startswith("data: ") or raw == "data: [DONE]":
                            continue
                        event = json.loads(raw[6:])
                        if event.get("choices") and "content" in event["choices"][0].get("delta", {}):
                            text.append(event["choices"][0]["delta"]["content"])
                        version = event.get("sgedge", {}).get("bundle", version)
                    results.append((policy, version, "".join(text)))
                    conn.close()
                except Exception as e:  # noqa: BLE001 (a benchmark counts every kind of failure)
                    failures.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        v = 2
        for _ in range(args.reloads):
            time.sleep(0.3)
            v = 3 - v
            patch(("a", "b"), v)
            variant[srv.reload("benchmark")["bundle"]] = v
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(300)
        mixed = [(pol, ver) for pol, ver, text in results if ver not in variant or text != refs[variant[ver]][pol]]
        seen = {variant.get(ver) for _, ver, _ in results}
        print(f"  under load: {args.clients} streaming clients on alternating policies, {args.reloads} reloads: "
              f"{len(results)} replies from {len({ver for _, ver, _ in results})} bundle versions "
              f"(variants {sorted(x for x in seen if x)}), {len(failures)} failed, {len(mixed)} not equal to "
              "their version's single-threaded reference")
        for f in failures[:3]:
            print(f"    failure: {f}")
        srv.shutdown()
        srv.server_close()
        # 3. Memory.
        marks = {}
        for i in range(1, args.rss_reloads + 1):
            v = 3 - v
            patch(("a",), v)
            rt.reload()
            if i in (10, args.rss_reloads):
                marks[i] = rss_mb()
        print(f"  RSS after 10 reloads {marks[10]:.0f} MB, after {args.rss_reloads}: "
              f"{marks[args.rss_reloads]:.0f} MB")
        rt.close()


if __name__ == "__main__":
    main()
