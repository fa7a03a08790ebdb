"""`sgedge` CLI: a table of invocations, their exit codes and what they print."""

from __future__ import annotations

import json

import pytest

from sgedge.cli import main
from sgedge.runtime.api import parse_adapter_arg


@pytest.fixture(scope="module")
def paths(tiny, tiny_onnx, tmp_path_factory):
    t, o = tiny("llama"), tiny_onnx("llama")
    out = tmp_path_factory.mktemp("cli")
    (out / "h.txt").write_text("a harmful request\n")
    return {"model": str(t.gguf), "a1": str(t.a1), "a2": str(t.a2), "hf": str(t.hf), "lora": str(t.lora1),
            "qwen_a": str(tiny("qwen2").a1), "out": str(out),
            "onnx": str(o.base), "oa1": str(o.a1), "oa2": str(o.a2)}


CASES = [
    # (argv template, exit code, text expected on stdout, text expected on stderr)
    ("run --model {model} --raw --max-tokens 5 Hello", 0, "", None),
    ("run --model {model} --adapter {a1}:0.5 --adapter {a2} --raw --max-tokens 4 --json Hello", 0, '"scale": 0.5', None),
    ("run --model {model} --raw --temperature 0.8 --top-p 0.9 --top-k 20 --seed 3 --max-tokens 4 --json Hi", 0, '"tokens"', None),
    ("run --model {out}/missing.gguf Hi", 1, "", "missing.gguf does not exist"),
    ("run --model {model} --adapter {qwen_a} Hi", 1, "", "does not belong to base"),
    ("run --model {model} --adapter {out}/nope.gguf Hi", 1, "", "adapter {out}/nope.gguf does not exist"),
    ("run --model {model} --adapter {a1}:half Hi", 1, "", "--adapter {a1}:half: scale 'half' is not a number"),
    ("run --model {model} --adapter {a1}:nan Hi", 1, "", "--adapter {a1}:nan: scale 'nan' is not a finite number"),
    ("run --model {onnx} --adapter {oa1}:1e309 Hi", 1, "", "scale '1e309' is not a finite number"),
    ("run --model {model} --temperature -1 Hi", 1, "", "temperature must be a finite number >= 0"),
    ("run --model {model} --max-tokens 0 Hi", 1, "", "max_tokens must be a whole number of at least 1"),
    ("serve --model {model} --model-alias gpt-4o", 1, "", "--model-alias 'gpt-4o': expected NAME=POLICY"),
    ("serve --model {model} --watch -1", 1, "", "--watch takes seconds between checks"),
    ("run --model {model} --max-tokens 100000 --raw Hi", 1, "", "do not fit the context"),
    ("run --model {model}", 2, "", "the following arguments are required: prompt"),
    ("run --model {model} --ctx -5 Hi", 1, "", "n_ctx (--ctx) must be >= 0"),
    ("run --model {onnx} --threads -2 Hi", 1, "", "threads must be >= 1, or 0 / None"),
    ("run --model {model} --gpu-layers -3 Hi", 1, "", "gpu_layers must be -1 (all), 0 or a layer count"),
    ("export base {hf} -o {out}/b.gguf --dtype f32 -q", 0, "wrote {out}/b.gguf (llama, f32", None),
    ("export adapter {lora} -o {out}/a.gguf --base {hf} -q", 0, "rank 8, alpha 16", None),
    ("export adapter {out} -o {out}/x.gguf --base {hf}", 1, "", "has no adapter_config.json"),
    ("export base {out} -o {out}/x.gguf", 1, "", "has no config.json"),
    ("export base {hf} -o {out}/x.gguf --dtype q3", 1, "", "unknown GGUF dtype 'q3'"),
    ("run --model {onnx} --adapter {oa1}:0.5 --adapter {oa2} --max-tokens 4 --json Hello", 0, '"backend": "onnx"', None),
    ("run --model {onnx} --backend onnx --raw --max-tokens 4 Hello", 0, "", None),
    ("run --model {onnx} --adapter {a1} Hi", 1, "", "{a1} is a GGUF LoRA adapter (llama.cpp) and {onnx} an ONNX model folder"),
    ("run --model {model} --adapter {oa1} Hi", 1, "", "{oa1} is an ONNX Runtime adapter (.onnx_adapter) and {model} a GGUF model"),
    ("run --model {onnx} --adapter {out}/h.txt Hi", 1, "", "is not an ONNX Runtime adapter file"),
    ("run --model {model} --backend onnx Hi", 1, "", "needs an ONNX model folder"),
    ("run --model {onnx} --device cuda Hi", 1, "", "has no CUDA"),
    ("export base {hf} --format onnx -o {out}/onnx --dtype q8_0", 1, "", "unknown ONNX dtype 'q8_0'"),
    ("export base {hf} --format onnx -o {out}/onnx --lora-targets q_proj,bogus", 1, "", "bogus not in llama"),
    ("export adapter {lora} --format onnx -o {out}/a.onnx_adapter --base {onnx}", 0, "rank 8, 8 slots", None),
    ("export adapter {lora} --format onnx -o {out}/a.onnx_adapter --base {hf}", 1, "", "not an ONNX base exported by sgedge"),
    ("export base {hf} -o {out}/x.gguf --lora-targets q_proj", 1, "", "applies to --format onnx"),
    ("export base {hf} -o {out}/x.gguf --ep cuda", 1, "", "--ep applies to --format onnx"),
    ("export base {hf} --format onnx -o {out}/onnx --ep cuda", 1, "", "--ep cuda takes fp16 or int4"),
    ("run --bundle {onnx} Hi", 1, "", "{onnx} is not an sgedge bundle (no sgedge.json) (a .gguf file or an ONNX model folder goes to --model)"),
    ("eval --bundle {out}/nowhere --harmful {out}/h.txt", 1, "", "{out}/nowhere is not an sgedge bundle (no sgedge.json)"),
]


@pytest.mark.parametrize(("argv", "code", "stdout", "stderr"), CASES, ids=[c[0][:48] for c in CASES])
def test_cli_table(paths, capsys, argv, code, stdout, stderr):
    rc = main(argv.format(**paths).split())
    out, err = capsys.readouterr()
    assert rc == code, err
    assert stdout.format(**paths) in out
    if stderr is None:
        assert err == "", "successful runs keep stderr clean"
    else:
        assert stderr.format(**paths) in err
        assert err.count("\n") <= 3 if code == 1 else True


def test_run_json_fields(paths, capsys):
    assert main(["run", "--model", paths["model"], "--adapter", paths["a1"], "--json", "--max-tokens", "6",
                 "How do I bake bread?"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert {"text", "tokens", "prompt_tokens", "adapters", "backend", "timings"} <= set(obj)
    assert obj["adapters"] == [{"name": "a1", "scale": 1.0}]
    assert obj["backend"] == "gguf"
    assert {"load_s", "prefill_tok_s", "decode_tok_s"} <= set(obj["timings"])
    assert 0 < len(obj["tokens"]) <= 6 and len(obj["prompt_tokens"]) > 5


def test_run_streams_the_same_text_as_json(paths, capsys):
    argv = ["run", "--model", paths["model"], "--raw", "--max-tokens", "12", "Hello world"]
    assert main(argv) == 0
    streamed = capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    assert streamed == json.loads(capsys.readouterr().out)["text"] + "\n"


def test_device_gpu_without_gpu_build(paths, capsys):
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python has a GPU backend")
    for device in ("gpu", "cuda"):
        assert main(["run", "--model", paths["model"], "--device", device, "Hi"]) == 1
        assert "a GPU was asked for (--device gpu or cuda), but this llama-cpp-python was built without a GPU " \
            "backend" in capsys.readouterr().err


def test_prompt_from_stdin(paths, capsys, monkeypatch):
    import io

    argv = ["run", "--model", paths["model"], "--max-tokens", "6", "--json"]
    assert main([*argv, "Hello there"]) == 0
    direct = json.loads(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n"))
    assert main([*argv, "-"]) == 0
    piped = json.loads(capsys.readouterr().out)
    assert piped["prompt_tokens"] == direct["prompt_tokens"] and piped["tokens"] == direct["tokens"]


@pytest.mark.parametrize(("prompt", "stdin", "message"), [
    ("", "", "the prompt is empty; give the text to send"),
    ("  ", "", "the prompt is empty"),
    ("-", "\n", "standard input is empty"),
])
def test_empty_prompt_is_refused(paths, capsys, monkeypatch, prompt, stdin, message):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["run", "--model", paths["model"], prompt]) == 1
    assert message in capsys.readouterr().err


def test_raw_mode_may_start_from_nothing(paths, capsys):
    assert main(["run", "--model", paths["model"], "--raw", "--max-tokens", "3", "--json", ""]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("a.gguf", ("a.gguf", 1.0)), ("a.gguf:0.5", ("a.gguf", 0.5)), ("C:\\x\\a.gguf", ("C:\\x\\a.gguf", 1.0)),
     ("C:\\x\\a.gguf:2", ("C:\\x\\a.gguf", 2.0)), ("dir:name/a.gguf", ("dir:name/a.gguf", 1.0))],
)
def test_parse_adapter_arg(spec, expected):
    assert parse_adapter_arg(spec) == expected


def test_closed_pipe_ends_quietly():
    # `sgedge run ... | head -1`: the reader leaves early; no traceback, exit 141 like Unix tools.
    import subprocess
    import sys

    code = ("import sgedge.cli as c\n"
            "def gone():\n"
            "    raise BrokenPipeError(32, 'Broken pipe')\n"
            "c.main = gone\n"
            "c.entry()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 141 and proc.stderr == ""


def _parsers(parser, name="sgedge"):
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _parsers(p, f"{name} {sub}")


def test_every_option_with_a_default_shows_it_in_help():
    from sgedge.cli import build_parser

    missing = []
    for name, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            default = action.default
            if (not action.option_strings or default is None or default is False or default == []
                    or action.dest in ("help", "version")):
                continue
            if not action.help or ("default" not in action.help and f"(default: {default})" not in text):
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing


def test_top_level_help_lists_commands_in_one_order(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    import re

    usage = out.split("{", 1)[1].split("}", 1)[0].split(",")
    lines = re.findall(r"^    (\S+)", out.split("positional arguments:")[1], flags=re.M)
    assert lines == usage and "import" in usage


def test_a_run_leaves_no_unclosed_files_behind():
    """llama-cpp-python opens /dev/null twice at import and never closes it; sgedge closes
    those at exit, so no 'ResourceWarning: unclosed file' ends a run (or the test suite)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "default::ResourceWarning", "-m", "sgedge", "run",
                           "--max-tokens", "2", "Hi"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr
