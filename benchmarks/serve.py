"""Serving over HTTP: `sgedge serve` against llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`, what a user would otherwise run), in one process.

Builds a random-weight model in SmolLM2-135M's shape (decode_speed.py's), exports it to
GGUF (q8_0 by default) with two rank-16 adapters, then starts, in this process:
  llama-cpp-python's server with adapter A (its --lora_path: fixed at load),
  sgedge serve with adapters A and B resident (each request names its adapters),
and measures, from an HTTP client, the decode rate of a request for N tokens with
adapter A, whole reply and streamed, plus sgedge serve switching between A and B on
every request (llama-cpp-python's server cannot switch: it would take a second server
holding a second copy of the base), and sgedge's Runtime called in-process (what HTTP
costs). Decode rate = (N - 1) / (T(N tokens) - T(1 token)), so prefill and request costs
cancel; T(1) is reported as the time to a one-token reply. Engines are interleaved over
--repeats rounds in a shuffled order; medians, with the median of per-round ratios.
Usage:
    python benchmarks/serve.py [--shape smollm2-135m|qwen2.5-0.5b] [--dtype q8_0] [--tokens 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import socket
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from decode_speed import PROMPT, SHAPES, build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: dict, stream: bool) -> int:
    """One chat request; returns the completion tokens (counted from usage or events)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": stream}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"server on port {port} answered {resp.status}: {data[:500]!r}")
    if not stream:
        return int(json.loads(data)["usage"]["completion_tokens"])
    events = [e[6:] for e in data.decode().split("\n\n") if e.startswith("data: ") and e[6:] != "[DONE]"]
    return sum(1 for e in events if (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content"))


def start_llama_cpp_server(base: Path, adapter: Path, threads: int, n_ctx: int) -> tuple[int, Callable[[], None]]:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    port = free_port()
    app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=port),
                     model_settings=[ModelSettings(model=str(base), lora_path=str(adapter), n_threads=threads,
                                                   n_threads_batch=threads, n_ctx=n_ctx, verbose=False)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise SystemExit("llama-cpp-python's server did not start")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
    return port, stop


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="smollm2-135m")
    p.add_argument("--dtype", default="q8_0")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this process's CPU time (servers and client live in it), which a noisy VM's "
                   "stolen time does not inflate; use it with --threads 1 (llama.cpp's threads spin when idle)")
    p.add_argument("--json", metavar="OUT.json", help="also write the figures as JSON")
    args = p.parse_args(argv)
    n_ctx = 512
    if args.tokens < 2 or args.tokens + 64 > n_ctx:
        raise SystemExit(f"--tokens must be 2..{n_ctx - 64}")

    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.runtime.api import Runtime
    from sgedge.runtime.serve import serve
    from sgedge.testing.synthetic import build_lora

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"building a random {args.shape} model ({args.dtype}) and two rank-{args.rank} adapters ...")
        paths = build(work, args.shape, args.dtype, args.rank)
        lora_b = build_lora(paths["hf"], work / "lora-b", r=args.rank, alpha=2 * args.rank, std=0.02, seed=7)
        adapter_b = export_adapter_gguf(lora_b, work / "adapter-b.gguf", base=paths["hf"], dtype="f16").path
        # As `sgedge serve` opens it: prompt cache on (llama-cpp-python's server keeps one too).
        rt = Runtime.open(paths["base"], adapters=[paths["adapter"], adapter_b], threads=args.threads, n_ctx=n_ctx,
                          prompt_cache=True)
        names = list(rt.adapters)  # [A, B]
        sg = serve(rt, port=0, model_id="bench")
        sg_thread = threading.Thread(target=sg.serve_forever, daemon=True)
        sg_thread.start()
        sg_port = sg.server_address[1]
        lc_port, lc_stop = start_llama_cpp_server(paths["base"], paths["adapter"], args.threads, n_ctx)
        try:
            tags = iter(range(10**9))

            def fresh(text: str = PROMPT) -> list[dict]:
                # A new first line each time: no engine can reuse an earlier prompt's
                # keys/values past the chat template's header, so prefill cancels in the rate.
                return [{"role": "user", "content": f"Request {next(tags)}. {text}"}]

            def body(n: int, messages: list[dict], adapters: list[str] | None = None) -> dict:
                # repeat_penalty 1: llama-cpp-python's server would otherwise apply 1.1 (more work).
                b = {"model": "bench", "messages": messages, "max_tokens": n, "temperature": 0, "repeat_penalty": 1.0}
                return b if adapters is None else {**b, "adapters": adapters}

            turn = [0]

            def switching(n: int, stream: bool, messages: list[dict]) -> int:
                turn[0] += 1
                return post(sg_port, body(n, messages, [names[turn[0] % 2]]), stream)

            def in_process(n: int, stream: bool, messages: list[dict]) -> int:
                return len(rt.generate(messages, max_tokens=n, adapters=[(names[0], 1.0)]).tokens)

            engines: dict[str, Callable[[int, bool, list[dict]], int]] = {
                "llama-cpp-python server + adapter": lambda n, s, m: post(lc_port, body(n, m), s),
                "sgedge serve + adapter": lambda n, s, m: post(sg_port, body(n, m, [names[0]]), s),
                "sgedge serve, adapter switched every request": switching,
                "sgedge Runtime in-process + adapter": in_process,
            }
            # Same work: both servers give the random model's full N tokens (it never ends early).
            for name, run in engines.items():
                got = run(args.tokens, False, fresh())
                if got != args.tokens:
                    raise SystemExit(f"{name} returned {got} tokens, not {args.tokens}: the rates would not compare")
            rows: dict[tuple[str, bool], list[tuple[float, float]]] = {}
            follow: dict[str, list[float]] = {}
            modes = (False, True)
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            reps = 1  # the conversation so far: about 300 tokens (less in a small context)
            while len(rt.encode_prompt(fresh(" ".join([PROMPT] * (reps + 1))))) < min(300, n_ctx // 3):
                reps += 1
            history = " ".join([PROMPT] * reps)
            chats = {  # the next turn of a chat: (port, adapters of turn 1, adapters of turn 2)
                "llama-cpp-python server + adapter": (lc_port, None, None),
                "sgedge serve + adapter": (sg_port, [names[0]], [names[0]]),
                "sgedge serve, policy changed between turns": (sg_port, [names[0]], [names[1]]),
            }
            for rnd in range(args.repeats):
                order = [(e, m) for e in engines for m in modes if not (m and e.endswith("in-process + adapter"))]
                random.Random(rnd).shuffle(order)
                for name, stream in order:
                    run = engines[name]
                    t0 = clock()
                    run(1, stream, fresh())
                    t1 = clock()
                    run(args.tokens, stream, fresh())
                    t2 = clock()
                    rows.setdefault((name, stream), []).append((t1 - t0, t2 - t1))
                for name in random.Random(-rnd).sample(list(chats), len(chats)):
                    port, first_adapters, next_adapters = chats[name]
                    chat = fresh(history)
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                    conn.request("POST", "/v1/chat/completions", json.dumps(body(16, chat, first_adapters)),
                                 {"Content-Type": "application/json"})
                    answer = json.loads(conn.getresponse().read())
                    if "choices" not in answer:
                        raise SystemExit(f"{name}: {answer}")
                    reply = answer["choices"][0]["message"]["content"]
                    conn.close()
                    chat += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Go on."}]
                    t0 = clock()
                    post(port, body(1, chat, next_adapters), False)
                    follow.setdefault(name, []).append(clock() - t0)
                print(f"round {rnd + 1}/{args.repeats} done")
        finally:
            lc_stop()
            sg.shutdown()
            sg.server_close()
            rt.close()
            del lc_stop
            # llama-cpp-python's server leaves anyio streams of the streamed requests in
            # reference cycles; collect them now, quietly, rather than at some later point.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()

    def rate(samples: list[tuple[float, float]]) -> list[float]:
        return [(args.tokens - 1) / (tn - t1) for t1, tn in samples]

    label = {False: "whole reply", True: "streamed"}
    keys = [(e, m) for m in modes for e in engines if (e, m) in rows]
    rates = {f"{e} ({label[m]})": statistics.median(rate(rows[e, m])) for e, m in keys}
    first = {f"{e} ({label[m]})": statistics.median(t1 for t1, _ in rows[e, m]) for e, m in keys}
    print(f"\n{args.shape} {args.dtype}, rank-{args.rank} adapter, {args.tokens} tokens, {args.threads} threads, "
          f"{args.repeats} rounds, {args.clock} clock")
    print(f"{'engine':62s} {'decode tok/s':>12s} {'1-token reply ms':>17s}")
    for key in rates:
        print(f"{key:62s} {rates[key]:12.1f} {1000 * first[key]:17.1f}")
    next_turn = {k: statistics.median(v) for k, v in follow.items()}
    print(f"\n{'next turn of a chat (~300-token history): one-token reply':62s} {'ms':>12s}")
    for key, t in next_turn.items():
        print(f"{key:62s} {1000 * t:12.1f}")

    def ratio(a: tuple[str, bool], b: tuple[str, bool]) -> tuple[float, float]:
        per_round = [x / y for x, y in zip(rate(rows[a]), rate(rows[b]), strict=True)]
        return statistics.median(rate(rows[a])) / statistics.median(rate(rows[b])), statistics.median(per_round)

    ratios = {}
    for m in modes:
        for a, b in (("sgedge serve + adapter", "llama-cpp-python server + adapter"),
                     ("sgedge serve, adapter switched every request", "llama-cpp-python server + adapter"),
                     ("sgedge serve + adapter", "sgedge Runtime in-process + adapter")):
            if (b, m) not in rows:
                continue
            key = f"ratio {a} / {b} ({label[m]})"
            ratios[key], per = ratio((a, m), (b, m))
            print(f"{key}: {ratios[key]:.3f} (per-round median {per:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rates": rates, "first_reply_s": first,
                                               "next_turn_s": next_turn, "ratios": ratios}, indent=1))
    return rates


if __name__ == "__main__":
    main()
