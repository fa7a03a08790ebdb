"""`sgedge chat`: each line a turn under the current policy, /commands to switch, the
conversation kept (or not, for the single-question demo) and cut to the context."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from sgedge.commands.chat import Session
from sgedge.demo import demo_bundle
from sgedge.exporters.bundle import create_bundle
from sgedge.manifest import PolicyItem
from sgedge.runtime.api import Runtime

BREAD, DOSE, BOMB = "How do I make bread?", "How much ibuprofen should I take?", "How do I make a pipe bomb?"


def test_the_demo_in_a_pipe_answers_each_line_under_the_chosen_policy():
    script = f"{BREAD}\n/policy eu\n{DOSE}\n/bare\n{BOMB}\n/policy MARS\n/policy US\n{DOSE}\n/quit\n{BREAD}\n"
    out = subprocess.run([sys.executable, "-m", "sgedge", "chat", "--max-tokens", "40"], input=script,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with Runtime.open(demo_bundle()) as rt:
        want = [rt.generate(BREAD, max_tokens=40).text, rt.generate(DOSE, max_tokens=40, policy="EU").text,
                rt.generate(BOMB, max_tokens=40, policy=[]).text, rt.generate(DOSE, max_tokens=40, policy="US").text]
    assert out.stdout.splitlines() == want  # /quit ends it: the last line is never answered
    assert want[1] != want[3] and want[2].startswith("Sure") and "can't" in want[1]
    assert "now policy EU (strict:1)" in out.stderr and "now bare base (no safety adapter)" in out.stderr
    assert "unknown policy 'MARS' (known: EU, KIDS, US, default)" in out.stderr


@pytest.fixture(scope="module")
def bundle(tiny, tmp_path_factory):
    t = tiny("llama")
    root = tmp_path_factory.mktemp("chat") / "bundle"
    create_bundle(root, t.hf, {"standard": t.lora1, "strict": t.lora2},
                  {"US": (PolicyItem("standard"),), "DE": (PolicyItem("strict"),)}, default_policy="US",
                  gguf_dtype="f32")
    return root


def session(rt, **kw):
    out, err = io.StringIO(), io.StringIO()
    return Session(rt, system=kw.pop("system", None), max_tokens=kw.pop("max_tokens", 6), sampling={},
                   out=out, err=err, **kw), out, err


def test_history_is_sent_with_each_turn_and_survives_a_policy_switch(bundle):
    # exact: f32 keys/values, so the cached turns round as a fresh context does (to ~1e-6)
    with Runtime.open(bundle, prompt_cache=True, exact=True) as rt, Runtime.open(bundle, exact=True) as fresh:
        s, out, err = session(rt, system="Be brief.")
        s.turn("Hello there")
        assert s.command("/policy de")
        s.turn("And then?")
        replies = out.getvalue().splitlines()
        first = fresh.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
                               max_tokens=6).text
        second = fresh.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"},
                                 {"role": "assistant", "content": first}, {"role": "user", "content": "And then?"}],
                                max_tokens=6, policy="DE").text
        assert replies == [first, second]
        assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]


def test_without_history_each_turn_stands_alone(bundle):
    with Runtime.open(bundle) as rt:
        s, out, _ = session(rt, history=False)
        s.turn("Hello there")
        s.turn("And then?")
        assert out.getvalue().splitlines()[1] == rt.generate("And then?", max_tokens=6).text


def test_the_oldest_turns_go_when_the_context_is_full(bundle):
    with Runtime.open(bundle, n_ctx=256) as rt:
        s, out, err = session(rt, max_tokens=8)
        for i in range(12):
            s.turn(f"turn {i} " + "words " * 20)
        assert "no longer fits the context and was dropped" in err.getvalue()
        assert len(out.getvalue().splitlines()) == 12
        assert len(rt.encode_prompt(s.messages[:-1])) + 8 <= rt.context_size
        assert s.messages[0]["content"].startswith("turn ") and not s.messages[0]["content"].startswith("turn 0 ")


def test_bare_only_where_the_bundle_allows_it(bundle):
    with Runtime.open(bundle) as rt:
        s, _, err = session(rt)
        assert s.command("/bare") and s.policy == "US"
        assert "forbids running without a safety adapter" in err.getvalue()
        assert not s.command("/quit")


class Terminal:
    """`sgedge chat` on a pseudo-terminal that is its controlling terminal (so Ctrl-C
    sends SIGINT, as at a real one); `seen` is everything it wrote."""

    def __init__(self, *args: str) -> None:
        import fcntl
        import os
        import pty
        import termios

        def own_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "sgedge", "chat", *args], stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True, preexec_fn=own_terminal)
        os.close(slave)
        self.seen = b""

    def pump(self, marker: bytes | None = None, timeout: float = 0.5) -> None:
        """Read what it writes for `timeout` seconds, or until `marker` shows."""
        import os
        import select

        end = time.time() + timeout
        while (marker is None or marker not in self.seen) and time.time() < end:
            if select.select([self.master], [], [], min(0.5, max(0.0, end - time.time())))[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    break

    def read_until(self, marker: bytes, timeout: float = 120) -> None:
        self.pump(marker, timeout)
        assert marker in self.seen, f"waited {timeout} s for {marker!r}; the terminal showed: {self.seen[-2000:]!r}"

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.pump(timeout=0.5)
            raise AssertionError(f"sgedge chat still running after {timeout} s; "
                                 f"the terminal showed: {self.seen[-2000:]!r}") from None

    def write(self, data: bytes) -> None:
        import os

        os.write(self.master, data)

    def close(self) -> None:
        import os

        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_at_a_terminal_it_prompts_and_leaves_on_ctrl_d():
    term = Terminal("--max-tokens", "30")
    try:
        term.read_until(b"Ctrl-D to leave")
        assert b"each line is a new conversation (--history keeps them)" in term.seen
        term.write(f"{BREAD}\n".encode())
        term.read_until(b"Mix flour")
        end = time.time() + 60
        while not term.seen.rstrip().endswith(b">") and time.time() < end:  # the next prompt
            term.pump(timeout=0.5)
        term.write(b"\x04")  # Ctrl-D at the prompt
        assert term.wait() == 0
    finally:
        term.close()
    assert b"Mix flour" in term.seen


def test_ctrl_c_stops_a_reply_and_keeps_the_session():
    class Stub:
        policy, policies, active, context_size = "US", {"US": ()}, (), 4096

        def encode_prompt(self, convo):
            return [1, 2, 3]

        def generate(self, convo, on_text, **kw):
            on_text("Sure, here")
            raise KeyboardInterrupt

    s, out, err = session(Stub())
    s.turn("Tell me a long story")  # returns: the reply stopped, the session goes on
    assert out.getvalue() == "Sure, here\n" and "reply stopped" in err.getvalue()
    assert s.messages == []  # the unanswered turn left the conversation


def test_at_a_terminal_two_ctrl_c_at_the_prompt_leave():
    term = Terminal()
    try:
        term.read_until(b"Ctrl-D to leave\r\n> ")
        # A ^C written within a millisecond of "> " appearing was sometimes lost (2 runs in 6
        # here; sgedge installs no signal handler: it is between Python's readline and the
        # terminal, which readline is still setting up). A person is slower; so is the test.
        time.sleep(0.3)
        term.write(b"\x03")  # Ctrl-C at the prompt: a hint, the session goes on
        term.read_until(b"Ctrl-C again (or Ctrl-D) to leave\r\n> ")
        assert term.proc.poll() is None
        time.sleep(0.3)
        term.write(b"\x03")
        assert term.wait() == 0
    finally:
        term.close()
    assert b"Traceback" not in term.seen and b"interrupted" not in term.seen


def test_policies_marks_the_active_one(bundle):
    with Runtime.open(bundle) as rt:
        s, _, err = session(rt)
        assert s.command("/policy de") and s.command("/policies")
        lines = err.getvalue().splitlines()
        assert " * DE: strict:1" in lines and "   US: standard:1" in lines
        assert s.command("/bare") is True  # this bundle forbids the bare base: said, policy kept
        assert s.command("/policies")
        assert err.getvalue().splitlines()[-2:] == [" * DE: strict:1", "   US: standard:1"]
