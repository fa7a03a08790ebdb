"""`sgedge run` and `sgedge serve` handlers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sgedge.runtime.api import Runtime


def read_prompt(arg: str, raw: bool = False) -> str:
    """The prompt argument; `-` reads it from standard input (one trailing newline dropped).
    An empty chat prompt is refused (usually an unset shell variable); --raw may start from nothing."""
    from sgedge.errors import InputError

    text = sys.stdin.read().removesuffix("\n") if arg == "-" else arg
    if not raw and not text.strip():
        where = "standard input is empty" if arg == "-" else "the prompt is empty"
        raise InputError(f"{where}; give the text to send, e.g. sgedge run \"How do I make bread?\" "
                         "(or - to read it from standard input)")
    return text


def open_runtime(args: argparse.Namespace, adapters: list[tuple[str, float]], *, prompt_cache: bool = False) -> Runtime:
    """Open what `run` / `serve` were given (default: the embedded demo) and say its notes."""
    from sgedge.runtime.api import Runtime
    from sgedge.runtime.llama_lib import set_verbose

    from sgedge.errors import InputError

    set_verbose(args.verbose)
    if args.bundle and adapters:
        raise InputError("--adapter applies to --model; a bundle's adapters come from its policies (--region)")
    if args.model and (args.region or args.trusted_key):
        raise InputError("--region and --trusted-key apply to --bundle")
    if not args.bundle and not args.model:
        if adapters:
            raise InputError("--adapter needs --model (the embedded demo's adapters come from --region)")
        from sgedge.demo import default_bundle

        chosen = default_bundle()
        args.bundle = str(chosen.path)
        args.default_sampling = chosen.sampling
    if args.bundle:
        from sgedge.manifest import require_bundle

        require_bundle(args.bundle, "a .gguf file or an ONNX model folder goes to --model")
    rt = Runtime.open(args.bundle or args.model, args.region, trusted_key=args.trusted_key, verify=args.verify,
                      no_adapter=args.no_adapter, adapters=adapters, backend=args.backend, device=args.device,
                      gpu_layers=args.gpu_layers, threads=args.threads, n_ctx=args.ctx,
                      allow_unbound_adapters=args.allow_unbound_adapter,
                      mode=run_mode(args), prompt_cache=prompt_cache,
                      pool_memory=getattr(args, "pool_memory", None))
    for note in rt.notes:
        print(f"sgedge: note: {note}", file=sys.stderr)
    region = args.region if args.region is not None else os.environ.get("SGEDGE_REGION")
    if args.bundle and region and not args.no_adapter and rt.policy_key(region) is None:
        # Not an error (the manifest names a default policy), but never silent.
        print(f"sgedge: this bundle has no policy for {region!r}; its default policy {rt.policy!r} applies "
              f"(policies: {', '.join(sorted(rt.policies))})", file=sys.stderr)
    return rt


def run_mode(args: argparse.Namespace) -> str:
    """--mode, with --fused as its older spelling."""
    from sgedge.errors import InputError

    mode = getattr(args, "mode", None)
    if getattr(args, "fused", False):
        if mode not in (None, "fused"):
            raise InputError(f"--fused and --mode {mode} contradict each other")
        return "fused"
    return mode or "dynamic"


def sampling_args(args: argparse.Namespace) -> dict[str, float]:
    """--temperature / --top-p / --top-k as given; those left out take the defaults of the
    bundle that runs with no model (SmolLM2's: 0.2 / 0.9), else greedy."""
    defaults = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, **getattr(args, "default_sampling", {})}
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}


def run(args: argparse.Namespace) -> int:
    from sgedge.runtime.api import parse_adapter_arg

    from sgedge.errors import InputError

    adapters = [parse_adapter_arg(a) for a in args.adapter]
    prompt = read_prompt(args.prompt, args.raw)
    template_kwargs = None
    if args.chat_template_kwargs:
        try:
            template_kwargs = json.loads(args.chat_template_kwargs)
        except json.JSONDecodeError as e:
            raise InputError(f"--chat-template-kwargs is not JSON ({e})") from None
        if not isinstance(template_kwargs, dict):
            raise InputError("--chat-template-kwargs takes a JSON object, e.g. '{\"enable_thinking\": false}'")
    with open_runtime(args, adapters) as rt:
        sink = None
        if not args.json:
            def sink(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()
        result = rt.generate(prompt, raw=args.raw, policy=[] if args.no_adapter else None, max_tokens=args.max_tokens,
                             **sampling_args(args), seed=args.seed, on_text=sink, stop=args.stop,
                             template_kwargs=template_kwargs)
        policy = rt.policy
    if args.json:
        obj = result.to_dict()
        if args.bundle:
            obj["policy"] = policy
        print(json.dumps(obj, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _reload_quietly(server, trigger: str) -> None:
    from sgedge.runtime.openai_api import ApiError

    try:
        server.reload(trigger)
    except ApiError:
        pass  # logged by the server; the old set keeps serving


def _aliases(specs: list[str]) -> dict[str, str]:
    from sgedge.errors import InputError

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

    from sgedge.errors import InputError

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0-65535 (got {args.port})")
    if args.max_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1 (got {args.max_tokens})")
    if not 0 <= args.watch < 1e6:
        raise InputError(f"--watch takes seconds between checks (got {args.watch})")
    api_key = args.api_key or os.environ.get("SGEDGE_API_KEY") or None
    adapters = [parse_adapter_arg(a) for a in args.adapter]
    with open_runtime(args, adapters, prompt_cache=not args.no_prompt_cache) as rt:
        # Named in replies that no policy made (a request's own adapters, the bare base).
        source = Path(args.model or args.bundle).resolve()
        model_id = source.stem if source.is_file() else source.name
        if args.bundle:
            from sgedge.demo import default_bundle

            model_id = "sgedge-demo" if source == default_bundle().path.resolve() else model_id
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
