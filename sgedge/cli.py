"""Command line: the dispatcher of `sgedge VERB ...`.

Each verb is one module of `sgedge/commands/` that owns its parser (`register`) and its
handler; those modules import only the standard library at load, and what a handler
needs when it runs (so `sgedge run` never loads torch). `main(argv) -> int` is pure: it
parses, calls the handler, and turns SgedgeError into one clear line on stderr and exit
code 1. Usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sgedge import __version__
from sgedge.commands import (
    bundle,
    chat,
    demo,
    export,
    import_gguf,
    keygen,
    run,
    serve,
    train,
    transfer,
)
from sgedge.commands import eval as eval_
from sgedge.errors import SgedgeError

# In the order `sgedge --help` lists them.
COMMANDS = (run, chat, serve, export, import_gguf, bundle, keygen, train, transfer, eval_, demo)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False or default == []
                or default is argparse.SUPPRESS or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default: {action.default})"


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers (made by add_subparsers with this class) share the formatter."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sgedge", description="Swappable LoRA safety adapters for local LLMs.")
    parser.add_argument("--version", action="version", version=f"sgedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    # The usage line lists the commands in the order their help lines come.
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on usage errors and --help
        return int(e.code or 0)
    try:
        return int(args.handler(args) or 0)
    except SgedgeError as e:
        print(f"sgedge: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sgedge: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`sgedge run ... | head -1`): stop quietly, as Unix tools do.
        # Point stdout at /dev/null so that the interpreter's final flush cannot fail again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE
    sys.exit(code)
