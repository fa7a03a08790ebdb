"""`Runtime.close()` from any thread at any moment, and prompts that are not text
(issue 25): before, closing under an open stream crashed the process (GGUF) or let the
generation run on (ONNX), and closing from another thread blocked for ever."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from sgedge.errors import InputError
from sgedge.runtime.api import Runtime


def _open(tiny, tiny_onnx, fmt):
    t = tiny("llama")
    if fmt == "gguf":
        return Runtime.open(t.gguf, adapters=[t.a1])
    return Runtime.open(tiny_onnx("llama").base, adapters=[tiny_onnx("llama").a1])


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_close_under_a_half_read_stream_ends_it_with_an_error(tiny, tiny_onnx, fmt):
    rt = _open(tiny, tiny_onnx, fmt)
    stream = rt.stream("Hello", max_tokens=50, ignore_eos=True)
    next(stream)
    rt.close()
    with pytest.raises(InputError, match=r"this generation was ended: its Runtime was closed"):
        next(stream)
    with pytest.raises(InputError, match=r"this Runtime is closed"):
        rt.generate("Hello", max_tokens=2)


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_close_from_another_thread_returns_and_the_stream_stops(tiny, tiny_onnx, fmt):
    rt = _open(tiny, tiny_onnx, fmt)
    stream = rt.stream("Hello", max_tokens=200, ignore_eos=True)
    next(stream)  # this thread holds the engine, suspended
    closer = threading.Thread(target=rt.close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive()  # returned, did not wait for the stream
    with pytest.raises(InputError, match=r"was ended"):
        for _ in stream:
            pass


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_close_while_another_thread_generates(tiny, tiny_onnx, fmt):
    rt = _open(tiny, tiny_onnx, fmt)
    outcome: list[object] = []
    started = threading.Event()

    def run() -> None:
        try:
            rt.generate("Hello", max_tokens=400, ignore_eos=True, on_text=lambda _: started.set())
            outcome.append("finished")
        except InputError as e:
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60)
    rt.close()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(outcome) == 1
    assert outcome[0] == "finished" or "was ended" in str(outcome[0])


def test_a_later_call_on_the_same_thread_ends_an_unfinished_stream(tiny):
    t = tiny("llama")
    with Runtime.open(t.gguf, adapters=[t.a1]) as rt:
        whole = rt.generate("Hello", max_tokens=6, ignore_eos=True).text
        first = rt.stream("Bonjour", max_tokens=50, ignore_eos=True)
        next(first)
        assert rt.generate("Hello", max_tokens=6, ignore_eos=True).text == whole
        with pytest.raises(InputError, match=r"a later call on the same thread took the engine"):
            next(first)


def test_threads_share_a_runtime_under_closing_without_crashing(tiny):
    # In a child process: a crash (segfault) would show as a signal, not a failure.
    code = f"""
import threading
from sgedge.runtime.api import Runtime
from sgedge.errors import InputError
rt = Runtime.open({str(tiny("llama").gguf)!r}, adapters=[{str(tiny("llama").a1)!r}])
def work():
    for _ in range(20):
        try:
            rt.generate("Hello", max_tokens=8, ignore_eos=True)
            rt.encode_prompt("Hello again")
        except InputError:
            return
threads = [threading.Thread(target=work) for _ in range(6)]
[t.start() for t in threads]
import time; time.sleep(0.3)
rt.close()
[t.join(60) for t in threads]
print("ok", sum(t.is_alive() for t in threads))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok 0", (run.returncode, run.stderr[-800:])


@pytest.mark.parametrize("prompt", ["\udc80", [{"role": "user", "content": "hi \ud800"}], 42, [1, 2]])
def test_a_prompt_that_is_not_text_is_an_input_error(tiny, prompt):
    t = tiny("llama")
    with Runtime.open(t.gguf) as rt:
        with pytest.raises(InputError):
            rt.generate(prompt, max_tokens=2)


BAD_CALLS = [
    {"max_tokens": "3"}, {"max_tokens": True}, {"temperature": float("nan")}, {"top_p": float("inf")},
    {"top_k": 10**40}, {"seed": "x"}, {"stop": 5}, {"policy": 5}, {"adapters": "a1"}, {"template_kwargs": 5},
]


@pytest.mark.parametrize("kwargs", BAD_CALLS, ids=[str(k)[:40] for k in BAD_CALLS])
def test_wrong_arguments_are_input_errors(tiny, kwargs):
    t = tiny("llama")
    with Runtime.open(t.gguf, adapters=[t.a1]) as rt:
        with pytest.raises(InputError):
            rt.generate("Hello", **{"max_tokens": 2, **kwargs})
        with pytest.raises(InputError):
            rt.generate([{"role": "user", "content": None}], max_tokens=2)
