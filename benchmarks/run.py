"""The full performance table: every engine a user could run, per model shape, in one
process on one machine, plus adapter switch time, resident-adapter memory and the
memory-bandwidth bound. Writes docs/performance.md and docs/performance.png.

    pip install -e ".[all,bench]"
    python benchmarks/run.py [--shapes smollm2-135m,qwen2.5-0.5b] [--repeats 3]

Columns: decode tok/s = (N-1) / (T(N) - T(1)) with N=64 and a short prompt; prefill
tok/s = P / T(1) and TTFT = T(1) for a long prompt of P tokens (no KV reuse between runs),
medians over --repeats rounds x --loads loads of every engine (loaded in balanced
orders: see decode_speed.load_orders), the engines interleaved in each round; switch = one change of the active adapter set
(GGUF: llama_set_adapters_lora; ONNX: cached composition); RSS = peak resident memory
of a fresh process that opens the base with 1 or 4 adapters resident and generates 8
tokens with the first one active;
bound = measured read bandwidth / bytes of weights read per token (the GGUF file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from decode_speed import PROMPT, SHAPES, build, close_runtimes, load_orders, open_runtime, settle  # noqa: E402

LONG_PROMPT = " ".join([PROMPT] * 12)
# The ratios the performance targets are stated in.
RATIOS = (
    ("sgedge gguf fused", "llama-cpp-python q8_0"),
    ("sgedge gguf dynamic + adapter", "llama-cpp-python q8_0 + adapter"),
    ("sgedge gguf dynamic + adapter", "transformers + PEFT f32"),
    ("sgedge onnx int4 dynamic, no adapter active", "onnxruntime-genai int4"),
    ("sgedge onnx int4 dynamic + adapter", "onnxruntime-genai int4 multi-LoRA + adapter"),
    ("sgedge onnx int4 dynamic + adapter", "onnxruntime-genai int4 + adapter (baked)"),
    ("sgedge onnx int4 fused", "onnxruntime-genai int4 + adapter (baked)"),
)
# docs/performance.md below this line is kept when the tables are regenerated.
HAND_WRITTEN = "<!-- kept by benchmarks/run.py: sections below are not generated -->"


def bandwidth_gb_s(threads: int) -> float:
    """Read bandwidth with as many threads as the engines use (numpy releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    parts = [np.ones(64 << 20, dtype=np.float32) for _ in range(threads)]  # 256 MB each
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(lambda a: float(a.sum()), parts))
            best = max(best, sum(a.nbytes for a in parts) / (time.perf_counter() - t0))
    return best / 1e9


def rss_child(model: Path, adapters: list[Path]) -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent at fork.
    code = (
        "from sgedge.runtime.api import Runtime\n"
        f"rt = Runtime.open({str(model)!r}, adapters={[str(a) for a in adapters]!r}, n_ctx=512)\n"
        # All resident, one active (a deployment switching among them per request).
        f"rt.generate('Hello', raw=True, max_tokens=8, adapters={[(a.stem, 1.0) for a in adapters[:1]]!r})\n"
        "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # kB -> MiB


def sample(run: Callable[[str, int], None]) -> tuple[float, float]:
    """One (decode tok/s with the short prompt, T(1) with the long prompt).
    Decode uses a short prompt so that prefill noise does not leak into T(64) - T(1)."""
    settle()
    t0 = time.perf_counter()
    run(PROMPT, 1)
    t1 = time.perf_counter()
    run(PROMPT, 64)
    t2 = time.perf_counter()
    t3 = time.perf_counter()
    run(LONG_PROMPT, 1)
    return 63 / ((t2 - t1) - (t1 - t0)), time.perf_counter() - t3


Run = Callable[[str, int], None]


def exports(paths: dict[str, Path], work: Path) -> dict[str, Path]:
    """The ONNX models every load of the engines reads (exported once)."""
    from decode_speed import plain_builder
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    # onnxruntime-genai's own switchable multi-LoRA model: one LoRA branch per projection,
    # weights as graph inputs, the adapter loaded with og.Adapters ("the same work").
    stock = export_base_onnx(paths["hf"], work / "og-multi-lora", dtype="int4", pack=False).path
    onnx_base = export_base_onnx(paths["hf"], work / "sg-onnx", dtype="int4").path
    return {
        "plain": plain_builder(paths["hf"], work / "og-plain", "int4", None),
        "baked": plain_builder(paths["hf"], work / "og-lora", "int4", paths["lora"]),
        "stock": stock,
        "stock_adapter": export_adapter_onnx(paths["lora"], work / "stock.onnx_adapter", base=stock).path,
        "base": onnx_base,
        "adapter": export_adapter_onnx(paths["lora"], work / "a.onnx_adapter", base=onnx_base).path,
    }


def engines(paths: dict[str, Path], onnx: dict[str, Path], threads: int,
            opened: dict[str, object]) -> list[Callable[[], dict[str, Run]]]:
    """One loader per model; each loads its model and returns its rows. The dynamic
    runtimes are also put in `opened` (first load only) for the switch measurement."""
    from tokenizers import Tokenizer

    og_tok = Tokenizer.from_file(str(onnx["plain"] / "tokenizer.json"))
    kw = {"n_ctx": 1024, "n_threads": threads, "n_threads_batch": threads, "verbose": False}

    def hf() -> dict[str, Run]:
        import peft
        import torch
        import transformers

        torch.set_num_threads(threads)
        tok = transformers.AutoTokenizer.from_pretrained(paths["hf"])
        pm = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(
            paths["hf"], dtype=torch.float32), str(paths["lora"])).eval()

        def run(prompt: str, n: int) -> None:
            with torch.no_grad():
                pm.generate(tok(prompt, return_tensors="pt").input_ids, max_new_tokens=n, min_new_tokens=n,
                            do_sample=False)
        return {"transformers + PEFT f32": run}

    def llama(name: str, **extra: str) -> Callable[[], dict[str, Run]]:
        def load() -> dict[str, Run]:
            from llama_cpp import Llama

            llm = Llama(str(paths["base"]), **kw, **extra)

            def run(prompt: str, n: int) -> None:
                ids = llm.tokenize(prompt.encode(), add_bos=True)
                llm.reset()  # no KV prefix reuse between runs: every engine pays its prefill
                for i, _ in enumerate(llm.generate(ids, top_k=1, temp=0.0, reset=True)):
                    if i + 1 == n:
                        break
            return {name: run}
        return load

    def og_plain(name: str, folder: Path) -> Callable[[], dict[str, Run]]:
        def load() -> dict[str, Run]:
            from decode_speed import plain_og_generate, plain_og_model

            model = plain_og_model(folder, threads)
            return {name: lambda prompt, n: plain_og_generate(model, og_tok.encode(prompt).ids, n)}
        return load

    def og_multi_lora() -> dict[str, Run]:
        import onnxruntime_genai as og
        from decode_speed import plain_og_generate, plain_og_model

        model = plain_og_model(onnx["stock"], threads)
        adapters = og.Adapters(model)
        adapters.load(str(onnx["stock_adapter"]), "a")
        return {"onnxruntime-genai int4 multi-LoRA": lambda prompt, n: plain_og_generate(
                    model, og_tok.encode(prompt).ids, n),
                "onnxruntime-genai int4 multi-LoRA + adapter": lambda prompt, n: plain_og_generate(
                    model, og_tok.encode(prompt).ids, n, adapters)}

    def ours(rt, adapters=None) -> Run:
        return lambda prompt, n: rt.generate(prompt, raw=True, max_tokens=n, adapters=adapters, ignore_eos=True)

    def dynamic(kind: str, base: Path, adapter: Path) -> Callable[[], dict[str, Run]]:
        def load() -> dict[str, Run]:
            rt = open_runtime(base, adapters=[adapter], n_ctx=1024, threads=threads)
            opened.setdefault(kind, rt)
            return {f"sgedge {kind} dynamic, no adapter active": ours(rt, []),
                    f"sgedge {kind} dynamic + adapter": ours(rt)}
        return load

    def fused(kind: str, base: Path, adapter: Path) -> Callable[[], dict[str, Run]]:
        return lambda: {f"sgedge {kind} fused": ours(open_runtime(base, adapters=[adapter], n_ctx=1024,
                                                                   threads=threads, mode="fused"))}

    return [hf, llama("llama-cpp-python q8_0"),
            llama("llama-cpp-python q8_0 + adapter", lora_path=str(paths["adapter"])),
            og_plain("onnxruntime-genai int4", onnx["plain"]),
            og_plain("onnxruntime-genai int4 + adapter (baked)", onnx["baked"]), og_multi_lora,
            dynamic("gguf", paths["base"], paths["adapter"]), fused("gguf", paths["base"], paths["adapter"]),
            dynamic("onnx int4", onnx["base"], onnx["adapter"]), fused("onnx int4", onnx["base"], onnx["adapter"])]


def switch_ms(rt, name: str, pairs: int = 2000) -> float:
    be = rt._backend  # the engine call itself, without a generation around it
    sets = [[(name, 1.0)], []]
    t0 = time.perf_counter()
    for i in range(pairs):
        be.set_active(sets[i % 2])
    return (time.perf_counter() - t0) / pairs * 1000


def measure_shape(shape: str, repeats: int, threads: int, loads: int = 2) -> dict:
    from sgedge.exporters.synthetic import build_lora

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SGEDGE_CACHE_DIR"] = str(work / "cache")
        paths = build(work, shape, "q8_0", 16)
        onnx = exports(paths, work)
        opened: dict[str, object] = {}
        units = engines(paths, onnx, threads, opened)
        # Every engine loaded `loads` times in balanced orders (decode_speed.load_orders:
        # an engine loaded later in a process runs faster here), samples pooled.
        runs: dict[tuple[str, int], Run] = {}
        unit_of: dict[str, int] = {}  # rows are reported in the units' order
        for k, order in enumerate(load_orders(len(units), loads)):
            for i in order:
                for name, run in units[i]().items():
                    runs[name, k] = run
                    unit_of[name] = i
        dyn, onnx_dyn = opened["gguf"], opened["onnx int4"]
        onnx_base, onnx_adapter = onnx["base"], onnx["adapter"]
        for run in runs.values():
            run(PROMPT, 2)
        # Engines interleaved within each round, so that this VM's drift hits them alike.
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in sorted(unit_of, key=unit_of.get)}
        order, shuffle = list(runs), random.Random(0).shuffle
        for _ in range(repeats):
            shuffle(order)
            for key in sorted(order, key=lambda nk: nk[1]):
                samples[key[0]].append(sample(runs[key]))
        rows = {name: {"decode_tok_s": statistics.median(d for d, _ in s),
                       "ttft_s": statistics.median(t for _, t in s)} for name, s in samples.items()}
        n_prompt = len(dyn.encode_prompt(LONG_PROMPT, raw=True))
        for r in rows.values():
            r["prefill_tok_s"] = n_prompt / r["ttft_s"]
        extra, extra_onnx = [paths["adapter"]], [onnx_adapter]
        from sgedge.exporters.gguf_adapter import export_adapter_gguf
        from sgedge.exporters.onnx_adapter import export_adapter_onnx

        for i in range(3):
            lora = build_lora(paths["hf"], work / f"extra{i}", r=16, alpha=32, std=0.02, seed=50 + i)
            extra.append(export_adapter_gguf(lora, work / f"extra{i}.gguf", base=paths["hf"], dtype="f16").path)
            extra_onnx.append(export_adapter_onnx(lora, work / f"extra{i}.onnx_adapter", base=onnx_base).path)
        adapter_mb = sum(p.stat().st_size for p in extra) / 2**20
        base_bytes = paths["base"].stat().st_size
        result = {
            "rows": rows,
            "prompt_tokens": n_prompt,
            "switch_ms_gguf": switch_ms(dyn, paths["adapter"].stem),
            "rss_mib": {"base only": rss_child(paths["base"], []), "1 adapter": rss_child(paths["base"], extra[:1]),
                        "4 adapters": rss_child(paths["base"], extra)},
            "adapter_files_mib": {"1": extra[0].stat().st_size / 2**20, "4": adapter_mb},
            "rss_mib_onnx": {"base only": rss_child(onnx_base, []), "1 adapter": rss_child(onnx_base, extra_onnx[:1]),
                             "4 adapters": rss_child(onnx_base, extra_onnx)},
            "adapter_files_mib_onnx": {"1": extra_onnx[0].stat().st_size / 2**20,
                                       "4": sum(p.stat().st_size for p in extra_onnx) / 2**20},
            "switch_ms_onnx": switch_ms(onnx_dyn, onnx_adapter.stem),
            "base_mib": base_bytes / 2**20,
        }
        close_runtimes()
    return result


def write_docs(results: dict, threads: int, out_md: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Performance", "", f"Generated by `python benchmarks/run.py` on {platform.machine()}, "
             f"{os.cpu_count()} cores, {threads} threads, CPU only. "
             "Random-weight models in each shape; q8_0 GGUF / int4 ONNX bases; a rank-16 adapter on all "
             "7 projections. Absolute numbers on this VM move ~20% between runs; compare within a table. Every "
             "engine is loaded `--loads` times, in balanced orders (an engine loaded later in a process runs "
             "up to ~10% faster here), and its samples pooled; ratios within ~5% are still ties on this "
             "machine (the A/A rows of `benchmarks/decode_speed.py`).", ""]
    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 5), squeeze=False)
    for ax, (shape, r) in zip(axes[0], results.items(), strict=True):
        bw = r["bandwidth_gb_s"]
        bound = bw * 1e9 / (r["base_mib"] * 2**20)
        lines += [f"## {shape}", "", f"Measured {r['date']} ({r.get('loads', 1)} loads x {r.get('repeats', '?')} rounds); "
                  f"numpy read bandwidth {bw:.1f} GB/s in that run.", "",
                  f"Decode: short prompt, 64 tokens. Prefill and time to first token: a "
                  f"{r['prompt_tokens']}-token prompt. Bandwidth bound of the q8_0 rows ({r['base_mib']:.0f} MiB "
                  f"of weights read per token): {bound:.0f} tok/s (int4 rows read less).", "",
                  "| engine | decode tok/s | prefill tok/s | time to first token (ms) |", "|---|---|---|---|"]
        for name, row in r["rows"].items():
            lines.append(f"| {name} | {row['decode_tok_s']:.1f} | {row['prefill_tok_s']:.0f} | "
                         f"{row['ttft_s'] * 1000:.0f} |")
        rows = r["rows"]
        ratios = [(a, b) for a, b in RATIOS if a in rows and b in rows]
        lines += ["", "Ratios (decode): " + "; ".join(
            f"{a} / {b} **{rows[a]['decode_tok_s'] / rows[b]['decode_tok_s']:.2f}x**" for a, b in ratios) + "."]
        rss = r["rss_mib"]
        grow = rss["4 adapters"] - rss["base only"]
        lines += ["", f"Adapter switch (GGUF, `llama_set_adapters_lora`): {r['switch_ms_gguf'] * 1000:.1f} µs. "
                  f"Peak RSS: base {rss['base only']:.0f} MiB, +1 adapter {rss['1 adapter']:.0f} MiB, +4 adapters "
                  f"{rss['4 adapters']:.0f} MiB: 4 resident adapters add {grow:.0f} MiB for "
                  f"{r['adapter_files_mib']['4']:.1f} MiB of adapter files ({grow / r['adapter_files_mib']['4']:.2f}x)."]
        if "rss_mib_onnx" in r:
            ro, fo = r["rss_mib_onnx"], r["adapter_files_mib_onnx"]
            grow_o = ro["4 adapters"] - ro["base only"]
            lines += ["", f"ONNX int4 (`.onnx_adapter`): switch (cached composition; onnxruntime-genai applies it "
                      f"when a generation starts) {r['switch_ms_onnx'] * 1000:.1f} µs. Peak RSS: base "
                      f"{ro['base only']:.0f} MiB, +1 adapter {ro['1 adapter']:.0f} MiB, +4 adapters "
                      f"{ro['4 adapters']:.0f} MiB: 4 resident adapters add {grow_o:.0f} MiB for {fo['4']:.1f} MiB "
                      f"of adapter files ({grow_o / fo['4']:.2f}x)."]
        lines += [""]
        names = list(r["rows"])
        ax.barh(names, [r["rows"][n]["decode_tok_s"] for n in names], color="#4477aa")
        ax.axvline(bound, color="#cc6677", linestyle="--", label=f"q8_0 bandwidth bound {bound:.0f}")
        ax.set_title(f"{shape}: decode tok/s")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    lines += ["![decode speed](performance.png)", ""]
    kept = out_md.read_text().split(HAND_WRITTEN, 1) if out_md.is_file() else []
    if len(kept) == 2:
        lines += [HAND_WRITTEN + kept[1].rstrip("\n"), ""]
    out_md.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    from sgedge.runtime.llama_lib import physical_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loads", type=int, default=2,
                   help="load every engine this many times, in balanced orders, and pool the samples (even)")
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--out", type=Path, default=HERE.parent / "docs")
    p.add_argument("--docs-only", action="store_true", help="rewrite the docs from OUT/performance.json, measure nothing")
    args = p.parse_args(argv)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    # Shapes measured earlier keep their rows (and say when): a run may redo one shape.
    store = args.out / "performance.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    bw = 0.0 if args.docs_only else bandwidth_gb_s(args.threads)
    for shape in [] if args.docs_only else shapes:
        results[shape] = measure_shape(shape, args.repeats, args.threads, args.loads)
        results[shape].update(bandwidth_gb_s=bw, date=time.strftime("%Y-%m-%d"), loads=args.loads,
                              repeats=args.repeats)
        print(shape, json.dumps(results[shape], indent=1, default=float), flush=True)
    args.out.mkdir(exist_ok=True)
    store.write_text(json.dumps({s: results[s] for s in SHAPES if s in results}, indent=1, default=float))
    write_docs({s: results[s] for s in SHAPES if s in results}, args.threads, args.out / "performance.md",
               args.out / "performance.png")
    print(f"wrote {args.out / 'performance.md'} and {args.out / 'performance.png'}")


if __name__ == "__main__":
    main()
