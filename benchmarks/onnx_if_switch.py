"""Experiment (not a product path): could one `If` remove the empty LoRA slots' cost?

Takes sgedge's packed int4 ONNX export of a random SmolLM2-135M-shape model and wraps
the whole graph in If(sgedge.lora_on): one branch is the graph with its LoRA operators,
the other the same graph without them, both reading the same outer-scope weights. The
flag is a one-element float graph input (default 0) that an adapter file sets to 1
(ONNX Runtime's adapter format only takes float parameters). Then it checks tokens
against the slotted export and measures, with stock onnxruntime-genai at one thread:
decode tok/s (process CPU time, engines loaded --loads times and interleaved) and peak
RSS of a fresh process per model. CHANGELOG.md ("Measurement history", "One thread, third look") has
the result: speed comes back, memory does not (ONNX Runtime prepacks the int4 weights
once per kernel, and each branch has its own kernels).
A second variant wraps each LoRA slot in its own If instead (branches without base
weights, so no second prepacked copy); it is slower than the plain empty slots ("if-slot"
rows: skipping an If costs more than running three operators on empty tensors).
Two more measure what is left ("one-node": each slot one Add, the floor of a fused LoRA
operator; "rank1": rank-1 zero defaults instead of empty ones), and `--micro` times
slot forms in plain ONNX Runtime (a chain of 120 slots).

    python benchmarks/onnx_if_switch.py [--loads 3] [--repeats 5] [--micro]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
from decode_speed import SHAPES, decode_rate, plain_builder, plain_og_generate, plain_og_model  # noqa: E402

FLAG = "sgedge.lora_on"
_LORA = re.compile(r"/lora_A/MatMul$|/lora_B/MatMul$|/lora/Add$")
IDS = list(range(100, 120))


def _save(m, top, src: Path, dst: Path) -> None:
    """`top` as the graph of a copy of the model folder `src` at `dst`."""
    import onnx
    from onnx import helper

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if not f.name.startswith("model.onnx"):
            shutil.copy(f, dst / f.name)
    onnx.save(helper.make_model(top, opset_imports=m.opset_import, ir_version=m.ir_version), str(dst / "model.onnx"),
              save_as_external_data=True, location="model.onnx.data", size_threshold=1024)


def wrap_in_if(src: Path, dst: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src / "model.onnx"), load_external_data=True)
    g = m.graph
    outer = {i.name for i in g.input} | {i.name for i in g.initializer}

    def branch(tag: str, drop_lora: bool):
        alias: dict[str, str] = {}
        nodes = []
        for n in g.node:
            if drop_lora and _LORA.search(n.name):
                if n.op_type == "Add":  # base + x·A·B  ->  base
                    alias[n.output[0]] = next(i for i in n.input if "lora_B" not in i)
                continue
            nodes.append(n)

        def name(x: str) -> str:
            while x in alias:
                x = alias[x]
            return x if x in outer or not x else f"{tag}/{x}"

        out = []
        for n in nodes:
            c = copy.deepcopy(n)
            c.name = f"{tag}/{n.name}"
            c.input[:] = [name(i) for i in c.input]
            c.output[:] = [name(o) for o in c.output]
            out.append(c)
        outputs = []
        for o in g.output:
            v = copy.deepcopy(o)
            v.name = name(o.name)
            outputs.append(v)
        return helper.make_graph(out, f"{tag}_branch", [], outputs)

    top = helper.make_graph(
        [helper.make_node("Cast", [FLAG], [f"{FLAG}.bool"], to=TensorProto.BOOL),
         helper.make_node("If", [f"{FLAG}.bool"], [o.name for o in g.output], name="/sgedge/lora_switch",
                          then_branch=branch("t", False), else_branch=branch("e", True))],
        g.name, [*g.input, helper.make_tensor_value_info(FLAG, TensorProto.FLOAT, [1])], list(g.output),
        [*g.initializer, numpy_helper.from_array(np.array([0.0], np.float32), FLAG)])
    _save(m, top, src, dst)


def _lora_triples(g):
    """(index of the Add, the Add, its base input y, the x·A MatMul, the ·B MatMul) for
    every LoRA slot of graph `g`."""
    producer = {o: n for n in g.node for o in n.output}
    for k, add in enumerate(g.node):
        if not add.name.endswith("/lora/Add"):
            continue
        b_out = next(i for i in add.input if "lora_B" in i)
        b_mm = producer[b_out]
        yield (k, add, next(i for i in add.input if i != b_out), producer[next(i for i in b_mm.input if "lora_A" in i)],
               b_mm)


def wrap_slots_in_if(src: Path, dst: Path) -> None:
    """The per-slot variant: each LoRA triple (x·A, ·B, + y) becomes If(flag) with the
    triple as one branch and Identity(y) as the other. The branches hold no base weights,
    so nothing is prepacked twice; the question is whether one If costs less to skip
    than three operators on empty tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src / "model.onnx"), load_external_data=True)
    g = m.graph
    drop: set[str] = set()  # node names: protobuf hands out new wrapper objects, so no id()
    swaps: dict[int, object] = {}
    for k, add, y, a_mm, b_mm in _lora_triples(g):
        inner = {a_mm.output[0], b_mm.output[0], add.output[0]}

        def local(x: str, tag: str, inner=inner) -> str:
            return f"{tag}/{x}" if x in inner else x

        then_nodes = []
        for n in (a_mm, b_mm, add):
            c = copy.deepcopy(n)
            c.name = f"then/{n.name}"
            c.input[:] = [local(i, "then") for i in c.input]
            c.output[:] = [local(o, "then") for o in c.output]
            then_nodes.append(c)
        out_vi = helper.make_tensor_value_info(f"then/{add.output[0]}", TensorProto.FLOAT, None)
        else_vi = helper.make_tensor_value_info(f"else/{add.output[0]}", TensorProto.FLOAT, None)
        then_g = helper.make_graph(then_nodes, f"{add.name}/on", [], [out_vi])
        else_g = helper.make_graph([helper.make_node("Identity", [y], [else_vi.name])], f"{add.name}/off", [],
                                   [else_vi])
        swaps[k] = helper.make_node("If", [f"{FLAG}.bool"], [add.output[0]], name=f"{add.name}/if",
                                    then_branch=then_g, else_branch=else_g)
        drop |= {a_mm.name, b_mm.name}
    nodes = [helper.make_node("Cast", [FLAG], [f"{FLAG}.bool"], to=TensorProto.BOOL)]
    nodes += [swaps.get(k, n) for k, n in enumerate(g.node) if n.name not in drop]
    top = helper.make_graph(nodes, g.name, [*g.input, helper.make_tensor_value_info(FLAG, TensorProto.FLOAT, [1])],
                            list(g.output), [*g.initializer, numpy_helper.from_array(np.array([0.0], np.float32), FLAG)])
    _save(m, top, src, dst)
    print(f"per-slot If: {len(swaps)} slots wrapped")


def one_node_slots(src: Path, dst: Path) -> None:
    """The floor a fused LoRA operator could reach: each LoRA triple becomes one Add of
    `y` and a zero vector that is a graph input with a default (so ONNX Runtime cannot
    fold it away), i.e. one node per slot that reads `y` and writes a new `y`, as a
    custom operator applying y + x·A·B would at rank 0. Not a model that runs adapters."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src / "model.onnx"), load_external_data=True)
    g = m.graph
    inputs = {i.name: i for i in g.input}
    drop: set[str] = set()  # node names: protobuf hands out new wrapper objects, so no id()
    swaps: dict[int, object] = {}
    zeros, zero_inputs = [], []
    for k, add, y, a_mm, b_mm in _lora_triples(g):
        b_weight = next(i for i in b_mm.input if i in inputs)
        width = inputs[b_weight].type.tensor_type.shape.dim[-1].dim_value
        name = f"{add.name}/zero"
        zeros.append(numpy_helper.from_array(np.zeros([width], np.float32), name))
        zero_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [width]))
        swaps[k] = helper.make_node("Add", [y, name], [add.output[0]], name=f"{add.name}/one")
        drop |= {a_mm.name, b_mm.name}
    nodes = [swaps.get(k, n) for k, n in enumerate(g.node) if n.name not in drop]
    top = helper.make_graph(nodes, g.name, [*g.input, *zero_inputs], list(g.output), [*g.initializer, *zeros])
    _save(m, top, src, dst)
    print(f"one node per slot: {len(swaps)} slots")


def rank1_defaults(src: Path, dst: Path) -> None:
    """The slotted graph with rank-1 zero defaults ([in, 1] / [1, out]) instead of empty
    ones: same operators, but no MatMul over an empty axis."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src / "model.onnx"), load_external_data=True)
    g = m.graph
    inputs = {i.name for i in g.input}
    n = 0
    for k, init in enumerate(g.initializer):
        if init.name in inputs and (".lora_A." in init.name or ".lora_B." in init.name) and 0 in init.dims:
            shape = [d if d else 1 for d in init.dims]
            g.initializer[k].CopyFrom(numpy_helper.from_array(np.zeros(shape, np.float32), init.name))
            n += 1
    _save(m, g, src, dst)
    print(f"rank-1 zero defaults: {n} LoRA inputs")


def micro(n: int = 120, width: int = 576, rounds: int = 30) -> None:
    """µs per slot for a chain of `n` slots in plain ONNX Runtime (one thread, CPU clock):
    the three operators on empty LoRA inputs, Reshape-MatMul-Gemm-Reshape (Gemm's C input
    taking the Add), and one Add of a zero vector (the floor of a fused operator)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def build(kind: str) -> bytes:
        vi = helper.make_tensor_value_info
        nodes, inits, inputs, cur = [], [], [vi("x", TensorProto.FLOAT, [1, 1, width])], "x"
        if kind == "gemm":
            inits += [numpy_helper.from_array(np.array([-1, width], np.int64), "to2d"),
                      numpy_helper.from_array(np.array([1, 1, width], np.int64), "to3d")]
        for i in range(n):
            if kind == "one Add":
                inits.append(numpy_helper.from_array(np.zeros([width], np.float32), f"z{i}"))
                inputs.append(vi(f"z{i}", TensorProto.FLOAT, [width]))
                nodes.append(helper.make_node("Add", [cur, f"z{i}"], [f"y{i}"]))
            else:
                inits += [numpy_helper.from_array(np.zeros([width, 0], np.float32), f"A{i}"),
                          numpy_helper.from_array(np.zeros([0, width], np.float32), f"B{i}")]
                inputs += [vi(f"A{i}", TensorProto.FLOAT, [width, "r"]), vi(f"B{i}", TensorProto.FLOAT, ["r", width])]
                if kind == "three operators":
                    nodes += [helper.make_node("MatMul", [cur, f"A{i}"], [f"a{i}"]),
                              helper.make_node("MatMul", [f"a{i}", f"B{i}"], [f"b{i}"]),
                              helper.make_node("Add", [cur, f"b{i}"], [f"y{i}"])]
                else:
                    nodes += [helper.make_node("Reshape", [cur, "to2d"], [f"x{i}"]),
                              helper.make_node("MatMul", [f"x{i}", f"A{i}"], [f"a{i}"]),
                              helper.make_node("Gemm", [f"a{i}", f"B{i}", f"x{i}"], [f"g{i}"]),
                              helper.make_node("Reshape", [f"g{i}", "to3d"], [f"y{i}"])]
            cur = f"y{i}"
        graph = helper.make_graph(nodes, kind, inputs, [vi(cur, TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        return model.SerializeToString()

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3  # the overridable defaults are meant: no warning per input
    kinds = ("three operators", "gemm", "one Add")
    sessions = {k: ort.InferenceSession(build(k), so, providers=["CPUExecutionProvider"]) for k in kinds}
    x = np.random.default_rng(0).random((1, 1, width), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for k, sess in sessions.items():
            t0 = time.process_time()
            for _ in range(50):
                sess.run(None, {"x": x})
            times[k].append((time.process_time() - t0) / 50 / n * 1e6)
    print(f"plain ONNX Runtime, {n} slots {width} wide, one thread, CPU clock, {rounds} rounds:")
    for k, v in times.items():
        print(f"  {k:16s} {statistics.median(v):.2f} µs per slot")


def add_flag(adapter: Path, out: Path) -> None:
    import onnxruntime as ort

    fmt = ort.AdapterFormat.read_adapter(str(adapter))
    params = dict(fmt.get_parameters())
    params[FLAG] = ort.OrtValue.ortvalue_from_numpy(np.array([1.0], np.float32))
    new = ort.AdapterFormat()
    new.set_adapter_version(fmt.get_adapter_version())
    new.set_model_version(fmt.get_model_version())
    new.set_parameters(params)
    new.export_adapter(str(out))


def tokens(model, adapter: Path | None, n: int = 24) -> list[int]:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(IDS) + n, do_sample=False)
    gen = og.Generator(model, params)
    if adapter is not None:
        a = og.Adapters(model)
        a.load(str(adapter), "a")
        gen.set_active_adapter(a, "a")
    gen.append_tokens(IDS)
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out


RSS_CHILD = """
import onnxruntime_genai as og
from decode_speed import plain_og_generate, plain_og_model
m = plain_og_model({folder!r}, 1)
a = None
if {adapter!r}:
    a = og.Adapters(m)
    a.load({adapter!r}, "a")
plain_og_generate(m, {ids!r}, 8, a)
print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])
"""


def peak_rss_mb(folder: Path, adapter: Path | None) -> float:
    code = RSS_CHILD.format(here=str(HERE), folder=str(folder), adapter=str(adapter or ""), ids=IDS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(HERE)})  # decode_speed, beside this file
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    import onnxruntime_genai as og

    from sgedge.exporters.onnx_adapter import export_adapter_onnx
    from sgedge.exporters.onnx_base import export_base_onnx
    from sgedge.testing.synthetic import build_lora, build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loads", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--micro", action="store_true", help="only the plain ONNX Runtime chain of slots")
    args = p.parse_args()
    if args.micro:
        micro()
        return
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        family, style, cfg, vocab = SHAPES["smollm2-135m"]
        hf = build_model(family, w / "hf", shape=cfg, tokenizer_style=style, vocab_size=vocab, init_std=0.02)
        lora = build_lora(hf, w / "lora", r=16, alpha=32, std=0.02)
        models = {"plain": plain_builder(hf, w / "plain", "int4", None),
                  "slots": export_base_onnx(hf, w / "slots", dtype="int4").path}
        adapter = export_adapter_onnx(lora, w / "a.onnx_adapter", base=models["slots"]).path
        wrap_in_if(models["slots"], w / "if")
        models["if"] = w / "if"
        wrap_slots_in_if(models["slots"], w / "if-slot")
        models["if-slot"] = w / "if-slot"
        one_node_slots(models["slots"], w / "one-node")
        models["one-node"] = w / "one-node"
        rank1_defaults(models["slots"], w / "rank1")
        models["rank1"] = w / "rank1"
        flagged = w / "a_flag.onnx_adapter"
        add_flag(adapter, flagged)
        cases = {"plain": ("plain", None), "slots": ("slots", None), "if": ("if", None),
                 "slots + adapter": ("slots", adapter), "if + adapter": ("if", flagged),
                 "if-slot": ("if-slot", None), "if-slot + adapter": ("if-slot", flagged),
                 "one-node": ("one-node", None), "rank1": ("rank1", None), "rank1 + adapter": ("rank1", adapter)}

        ref = {k: tokens(plain_og_model(models[m], 1), a) for k, (m, a) in cases.items() if k != "plain"}
        print("tokens: if == slots without adapter:", ref["if"] == ref["slots"],
              "| with adapter:", ref["if + adapter"] == ref["slots + adapter"],
              "| the adapter changes them:", ref["slots + adapter"] != ref["slots"],
              "| per-slot if == slots:", ref["if-slot"] == ref["slots"], ref["if-slot + adapter"] == ref["slots + adapter"],
              "| one node == slots:", ref["one-node"] == ref["slots"],
              "| rank-1 zeros == slots:", ref["rank1"] == ref["slots"], ref["rank1 + adapter"] == ref["slots + adapter"])

        runs = {}
        for k in range(args.loads):
            for name, (m, a) in cases.items():
                model = plain_og_model(models[m], 1)
                ads = None
                if a is not None:
                    ads = og.Adapters(model)
                    ads.load(str(a), "a")
                runs[(name, k)] = (lambda mm, aa: lambda n: plain_og_generate(mm, IDS, n, aa))(model, ads)
        for r in runs.values():
            r(4)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        order = list(runs)
        for i in range(args.repeats):
            random.Random(i).shuffle(order)
            for key in sorted(order, key=lambda nk: nk[1]):
                samples[key[0]].append(decode_rate(runs[key], 64, time.process_time))
        med = {k: statistics.median(v) for k, v in samples.items()}
        print(f"decode tok/s, one thread, CPU clock, {args.repeats} rounds x {args.loads} loads:")
        for name, rate in med.items():
            print(f"  {name:16s} {rate:7.1f}   peak RSS {peak_rss_mb(models[cases[name][0]], cases[name][1]):6.0f} MiB")
        for a, b in (("slots", "plain"), ("if", "plain"), ("if + adapter", "slots + adapter"),
                     ("if-slot", "plain"), ("if-slot + adapter", "slots + adapter"), ("one-node", "plain"),
                     ("one-node", "slots"), ("rank1", "plain"), ("rank1", "slots"), ("rank1 + adapter", "slots + adapter")):
            per_round = statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))
            print(f"  {a} / {b}: {med[a] / med[b]:.3f} (median of per-round ratios {per_round:.3f})")


if __name__ == "__main__":
    main()
