"""`sgedge serve`: a model or bundle behind a local OpenAI-compatible HTTP API (runtime/serve.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sgedge.commands._runtime import open_runtime, runtime_args
from sgedge.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="serve a model or bundle over a local OpenAI-compatible HTTP API")
    runtime_args(s, " for requests that name none")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on API calls (default: $SGEDGE_API_KEY)")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN call the API (an Electron or Tauri window, e.g. "
                   "http://localhost:5173; repeatable; * allows any page)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="accept requests whose Host header names NAME (default: loopback names and the --host "
                   "address only, against DNS rebinding; repeatable; * accepts any)")
    s.add_argument("--model-alias", action="append", default=[], metavar="NAME=POLICY",
                   help="a request whose model is NAME runs POLICY (repeatable; e.g. gpt-4o=EU for a client that "
                   "cannot change its model name); other unknown names get 404 model_not_found")
    s.add_argument("--any-model", action="store_true",
                   help="run the start-up policy for a model name the server does not know, instead of 404 "
                   "(the behaviour before model names were checked)")
    s.add_argument("--watch", type=float, metavar="SECONDS", default=0,
                   help="check the bundle's manifest and signature every SECONDS and reload when they change "
                   "(also: SIGHUP, or POST /admin/reload with --api-key)")
    s.add_argument("--lock-policy", action="store_true",
                   help="refuse requests that name another policy or other adapters than the start-up one")
    s.add_argument("--max-tokens", type=int, default=512,
                   help="reply length when a request sets none (cut to the context left)")
    s.add_argument("--ready-file", metavar="PATH",
                   help="once listening, write {\"url\", \"pid\"} as JSON to PATH (for an app that starts the server "
                   "with --port 0)")
    s.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="stop when standard input closes: started by an app with a pipe, the server ends with the app")
    s.add_argument("--no-prompt-cache", action="store_true",
                   help="compute every prompt whole (default: a chat's next turn reuses the keys/values of the "
                   "turn before, under the same adapters; ONNX: greedy requests)")
    s.add_argument("-q", "--quiet", action="store_true", help="no line per request on standard error")
    s.set_defaults(handler=serve)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _reload_quietly(server, trigger: str) -> None:
    from sgedge.runtime.openai_api import ApiError

    try:
        server.reload(trigger)
    except ApiError:
        pass  # logged by the server; the old set keeps serving


def _aliases(specs: list[str]) -> dict[str, str]:

    out = {}
    for spec in specs:
        name, sep, policy = spec.partition("=")
        if not sep or not name or not policy:
            raise InputError(f"--model-alias {spec!r}: expected NAME=POLICY, e.g. gpt-4o=EU")
        out[name] = policy
    return out


def serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from sgedge.runtime.api import parse_adapter_arg
    from sgedge.runtime.serve import serve as make_server


    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0-65535 (got {args.port})")
    if args.max_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1 (got {args.max_tokens})")
    if not 0 <= args.watch < 1e6:
        raise InputError(f"--watch takes seconds between checks (got {args.watch})")
    api_key = args.api_key or os.environ.get("SGEDGE_API_KEY") or None
    adapters = [parse_adapter_arg(a) for a in args.adapter]
    opened = open_runtime(args, adapters, prompt_cache=not args.no_prompt_cache)
    with opened.rt as rt:
        # Named in replies that no policy made (a request's own adapters, the bare base).
        source = opened.source.resolve()
        model_id = source.stem if source.is_file() else source.name
        if opened.bundle and opened.demo is None and args.bundle:
            from sgedge.demo import default_bundle

            is_demo = source == default_bundle().path.resolve()  # the same folder, named with --bundle
            model_id = "sgedge-demo" if is_demo else model_id
        elif opened.demo is not None:
            model_id = "sgedge-demo"
        log = None if args.quiet else (lambda line: print(f"sgedge serve: {line}", file=sys.stderr, flush=True))
        server = make_server(rt, host=args.host, port=args.port, model_id=model_id, api_key=api_key,
                             lock_policy=args.lock_policy, max_tokens=args.max_tokens,
                             cors_origins=args.cors_origin, allowed_hosts=args.allowed_host,
                             model_aliases=_aliases(args.model_alias), any_model=args.any_model, log=log)
        switching = "locked (--lock-policy)" if args.lock_policy else "per request (body 'policy' or 'model')"
        policies = f"; policies: {', '.join(sorted(rt.policies))}" if rt.policies else ""
        print(f"sgedge serve: {server.describe_default()} on {rt.backend}; switching {switching}{policies}",
              file=sys.stderr)
        if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"sgedge serve: warning: listening on {args.host} with no --api-key: anyone who can reach "
                  "this port can use the model", file=sys.stderr)
        if "*" in args.cors_origin and api_key is None:
            print("sgedge serve: warning: --cors-origin * with no --api-key: any web page open in a browser on "
                  "this machine can use the model; name the app's origin instead, or set a key", file=sys.stderr)
        why = ["stopped"]
        stop_watch = threading.Event()

        def watch() -> None:
            # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside the
            # buffered reader holds its lock, and the interpreter cannot close stdin at exit
            # ("Fatal Python error: could not acquire lock for stdin" after SIGTERM).
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):  # what the app writes is ignored; only the end counts
                pass
            why[0] = "standard input closed; stopped"
            server.shutdown()

        try:
            # Stopped like Ctrl-C by a service manager from here on, inside the try: an app that
            # reads the ready file may send SIGTERM at once (installed after it, that raced).
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _stop_on_sigterm)
                if hasattr(signal, "SIGHUP") and rt.bundle_version is not None:
                    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
                        target=_reload_quietly, args=(server, "SIGHUP"), daemon=True).start())
            if args.watch:
                if rt.bundle_version is None:
                    raise InputError("--watch reloads a bundle; this server runs loose model files")
                threading.Thread(target=server.watch, args=(rt._reload.path, args.watch, stop_watch),
                                 daemon=True).start()
            # The URL line last: scripts and tests wait for it.
            print(f"sgedge serve: listening on {server.url} (OpenAI-compatible; Ctrl-C stops)", file=sys.stderr,
                  flush=True)
            if args.ready_file:
                from sgedge._fs import atomic_path

                with atomic_path(args.ready_file) as tmp:  # never seen half-written
                    tmp.write_text(json.dumps({"url": server.url, "pid": os.getpid()}))
            if args.exit_on_stdin_eof:
                threading.Thread(target=watch, daemon=True).start()
            server.serve_forever()
            print(f"sgedge serve: {why[0]}", file=sys.stderr)
        except KeyboardInterrupt:
            print("sgedge serve: stopped", file=sys.stderr)
        finally:
            stop_watch.set()
            server.server_close()
            if args.ready_file:
                Path(args.ready_file).unlink(missing_ok=True)
    return 0
