"""`sgedge chat`: a conversation in the terminal, one policy at a time, switchable.

Each turn sends the whole conversation through the model's chat template; the prompt
cache keeps the turns before, so a turn computes only what is new. The embedded demo
learnt single questions only, so there each line starts a new conversation unless
--history is given. Lines starting
with / are commands (/help lists them). Standard input may be a pipe: each line is a
user turn, and the answers go to standard output.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sgedge.commands._runtime import runtime_args, sampling_flags

HELP = """commands:
  /policy NAME   switch to a bundle policy (the conversation goes on under it)
  /policies      list the bundle's policies and their adapters (* marks the active one)
  /bare          the bare base, no safety adapter (only if the bundle allows it)
  /reset         forget the conversation
  /quit          leave (Ctrl-D too)"""


class Session:
    def __init__(self, rt: Any, *, system: str | None, max_tokens: int, sampling: dict[str, Any],
                 history: bool = True, out: Any = sys.stdout, err: Any = sys.stderr) -> None:
        self.rt, self.system, self.max_tokens, self.sampling = rt, system, max_tokens, sampling
        self.history = history
        self.out, self.err = out, err
        # A policy key; [] for the bare base; None for the adapters given at start-up (no bundle).
        self.policy: str | list | None = rt.policy if rt.policy is not None else (
            [] if rt.policies and not rt.active else None)
        self.messages: list[dict[str, str]] = []

    def label(self) -> str:
        if self.policy == []:
            return "bare base (no safety adapter)"
        if self.policy is None:
            return " + ".join(f"{a.name}:{a.scale:g}" for a in self.rt.active)
        items = self.rt.policies[self.policy]
        return f"policy {self.policy} ({' + '.join(f'{a.name}:{a.scale:g}' for a in items)})"

    def command(self, line: str) -> bool:
        """Run a /command; False to leave."""
        from sgedge.errors import InputError

        word, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if word in ("quit", "exit", "q"):
            return False
        if word == "help":
            print(HELP, file=self.err)
        elif word == "reset":
            self.messages = []
            print("sgedge chat: conversation cleared", file=self.err)
        elif word == "policies":
            for key, items in sorted(self.rt.policies.items()):
                mark = "*" if key == self.policy else " "
                print(f" {mark} {key}: {' + '.join(f'{a.name}:{a.scale:g}' for a in items)}", file=self.err)
            if not self.rt.policies:
                print("sgedge chat: not a bundle; the adapters given at start-up apply", file=self.err)
        elif word in ("policy", "bare"):
            try:
                if word == "bare":
                    if not self.rt.allows_no_adapter:
                        raise InputError("this bundle forbids running without a safety adapter")
                    self.policy = []
                else:
                    key = self.rt.policy_key(arg) if arg else None
                    if key is None:
                        known = ", ".join(sorted(self.rt.policies)) or "none (not a bundle)"
                        raise InputError(f"unknown policy {arg!r} (known: {known})")
                    self.policy = key
                print(f"sgedge chat: now {self.label()}", file=self.err)
            except InputError as e:
                print(f"sgedge chat: {e}", file=self.err)
        else:
            print(f"sgedge chat: unknown command /{word}; /help lists them", file=self.err)
        return True

    def turn(self, text: str) -> None:
        from sgedge.errors import InputError

        if not self.history:
            self.messages = []
        self.messages.append({"role": "user", "content": text})
        head = [{"role": "system", "content": self.system}] if self.system else []
        while True:
            convo = head + self.messages
            try:
                n = len(self.rt.encode_prompt(convo))
            except InputError:
                self.messages.pop()
                raise
            if n + self.max_tokens <= self.rt.context_size or len(self.messages) == 1:
                break
            self.messages = self.messages[2:]  # the oldest exchange goes
            print("sgedge chat: the oldest turn no longer fits the context and was dropped", file=self.err)
        kwargs = {} if self.policy is None else {"policy": self.policy}

        def show(piece: str) -> None:
            self.out.write(piece)
            self.out.flush()

        try:
            result = self.rt.generate(convo, max_tokens=self.max_tokens, on_text=show, **self.sampling, **kwargs)
        except InputError:
            self.messages.pop()
            raise
        except KeyboardInterrupt:
            # Ctrl-C stops this reply, not the session; the unanswered turn leaves the conversation.
            self.messages.pop()
            self.out.write("\n")
            self.out.flush()
            print("sgedge chat: reply stopped (Ctrl-C at an empty prompt, twice, or Ctrl-D leaves)", file=self.err)
            return
        self.out.write("\n")
        self.out.flush()
        self.messages.append({"role": "assistant", "content": result.text})


def chat(args: argparse.Namespace) -> int:
    from sgedge.commands._runtime import open_runtime, sampling_args
    from sgedge.errors import InputError
    from sgedge.runtime.api import parse_adapter_arg

    adapters = [parse_adapter_arg(a) for a in args.adapter]
    opened = open_runtime(args, adapters, prompt_cache=True)
    with opened.rt as rt:
        # The tiny demo learnt single questions only: by default each line is a new conversation there.
        demo = opened.demo is not None and opened.demo.name == "toy"
        history = args.history if args.history is not None else not demo
        session = Session(rt, system=args.system, max_tokens=args.max_tokens, history=history,
                          sampling={**sampling_args(args, opened), "seed": args.seed})
        interactive = sys.stdin.isatty()
        if interactive:
            try:
                import readline  # noqa: F401 (line editing and history for input(); not on Windows)
            except ImportError:
                pass
            turns = "" if history else "; each line is a new conversation (--history keeps them)"
            print(f"sgedge chat: {session.label()} on {rt.backend}{turns}; /help for commands, Ctrl-D to leave",
                  file=sys.stderr)
        interrupted = False  # a Ctrl-C at the prompt: a second one in a row leaves
        while True:
            if interactive:
                try:
                    line = input("> ")
                except EOFError:
                    break
                except KeyboardInterrupt:
                    if interrupted:
                        break
                    interrupted = True
                    print("\nsgedge chat: Ctrl-C again (or Ctrl-D) to leave", file=sys.stderr)
                    continue
                interrupted = False
            else:
                line = sys.stdin.readline()
                if not line:
                    break
                line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            try:
                session.turn(line)
            except InputError as e:
                print(f"sgedge chat: {e}", file=sys.stderr)
        if interactive:
            print(file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("chat", help="talk to a model or bundle in the terminal, switching policies (/help)")
    runtime_args(c, " to start with")
    c.add_argument("--system", help="system message opening the conversation")
    c.add_argument("--history", action=argparse.BooleanOptionalAction, default=None,
                   help="send the conversation so far with each line (default: yes; no for the embedded demo, "
                   "which learnt single questions)")
    c.add_argument("--max-tokens", type=int, default=256, help="reply length limit per turn")
    sampling_flags(c)
    c.set_defaults(handler=chat)
