"""`sgedge serve`: a local HTTP server with an OpenAI-compatible API, for apps not
written in Python.

One Runtime (base loaded once, every adapter resident) answers every request; each
request may name a bundle policy and gets that policy's adapters, with no reload.
Generations run one at a time (the Runtime's lock); other requests wait their turn.
Standard library only: nothing here imports more than the runtime itself does.
"""

from __future__ import annotations

import hmac
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sgedge.runtime.api import Runtime
from sgedge.runtime.openai_api import (
    ApiError,
    Request,
    chunk,
    error_body,
    final_chunks,
    parse_request,
    response,
)

from sgedge.errors import InputError, SgedgeError

MAX_BODY = 8 << 20  # bytes; a prompt that fits any context fits in far less
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
          "/chat/completions": "chat", "/completions": "completion"}


class SgedgeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, rt: Runtime, host: str, port: int, *, model_id: str, api_key: str | None = None,
                 lock_policy: bool = False, max_tokens: int = 512, cors_origins: Sequence[str] = (),
                 log: Callable[[str], None] | None = None) -> None:
        self.rt, self.model_id, self.api_key = rt, model_id, api_key
        self.lock_policy, self.max_tokens, self.log = lock_policy, max_tokens, log
        self.cors_origins = tuple(o.rstrip("/") for o in cors_origins)
        self.started = int(time.time())
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def cors_allows(self, origin: str | None) -> bool:
        """Whether a web page from `origin` may call the API (--cors-origin)."""
        return bool(origin) and ("*" in self.cors_origins or origin.rstrip("/") in self.cors_origins)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection dropped while reading or writing is routine for a local server;
        # anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/v1"

    # -- what a request selects ------------------------------------------------------
    def choose(self, req: Request) -> tuple[dict[str, Any], str | None]:
        """Generation keywords for the request's policy choice, and the policy's name."""
        rt = self.rt
        policy, adapters = req.policy, req.adapters
        if policy is None and adapters is None and req.model and rt.policy_key(req.model) is not None:
            policy = req.model  # OpenAI clients pick a "model": the policies are listed as models
        if self.lock_policy and (policy is not None and rt.policy_key(policy) != rt.policy
                                 or adapters is not None
                                 and [(n, float(s)) for n, s in adapters] != [(a.name, a.scale) for a in rt.active]):
            raise ApiError(403, f"this server runs {self.describe_default()} only (started with --lock-policy)",
                           "policy")
        if policy is not None:
            return {"policy": policy}, rt.policy_key(policy) or policy
        if adapters is not None:
            return {"adapters": adapters}, None
        return {}, rt.policy

    def describe_default(self) -> str:
        rt = self.rt
        adapters = " + ".join(f"{a.name}:{a.scale:g}" for a in rt.active) or "no adapter (bare base)"
        return f"policy {rt.policy!r} ({adapters})" if rt.policy else adapters

    def models(self) -> list[dict[str, Any]]:
        rt = self.rt
        if not rt.policies:
            return [{"id": self.model_id, "object": "model", "created": self.started, "owned_by": "sgedge",
                     "sgedge": {"adapters": [{"name": a.name, "scale": a.scale} for a in rt.active]}}]
        return [{"id": key, "object": "model", "created": self.started, "owned_by": "sgedge",
                 "sgedge": {"policy": key, "default": key == rt.policy,
                            "adapters": [{"name": a.name, "scale": a.scale} for a in items]}}
                for key, items in sorted(rt.policies.items())]


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: SgedgeServer
    protocol_version = "HTTP/1.1"
    server_version = "sgedge"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per generation instead (see _log)

    def _log(self, status: int, note: str = "") -> None:
        if self.server.log is not None:
            self.server.log(f"{self.command} {self.path} {status}{' ' + note if note else ''}")

    # -- plumbing ------------------------------------------------------------------
    def end_headers(self) -> None:
        origin = self.headers.get("Origin") if getattr(self, "headers", None) is not None else None
        if self.server.cors_allows(origin):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
        super().end_headers()

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: ApiError) -> None:
        self._log(e.status, e.message)
        self._send_json(e.status, e.body())

    def _authorised(self) -> bool:
        key = self.server.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else ""
        if hmac.compare_digest(token.encode(), key.encode()):
            return True
        self._error(ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' with the key "
                                  "the server was started with (--api-key / $SGEDGE_API_KEY)"))
        return False

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "send the JSON body with a Content-Length header")
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if n > MAX_BODY:
            raise ApiError(413, f"the request body is {n} bytes; the limit is {MAX_BODY}")
        try:
            return json.loads(self.rfile.read(n) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None

    # -- routes --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":  # no key needed: a liveness probe reveals nothing but the policies
            rt = self.server.rt
            self._send_json(200, {"status": "ok", "backend": rt.backend, "mode": rt.mode, "policy": rt.policy,
                                  "adapters": [{"name": a.name, "scale": a.scale} for a in rt.active],
                                  "lock_policy": self.server.lock_policy})
            return
        if not self._authorised():
            return
        models = self.server.models()
        if path in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": models})
        elif path.startswith(("/v1/models/", "/models/")):
            wanted = path.rsplit("/", 1)[1]
            match = [m for m in models if m["id"] == wanted]
            if match:
                self._send_json(200, match[0])
            else:
                self._error(ApiError(404, f"no model {wanted!r} here (models: {', '.join(m['id'] for m in models)})"))
        else:
            self._error(ApiError(404, f"no route GET {path}; see GET /v1/models, POST /v1/chat/completions"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        try:
            kind = ROUTES.get(path)
            body = self._body()  # read it in any case, so the connection stays usable
            if kind is None:
                raise ApiError(404, f"no route POST {path}; use /v1/chat/completions or /v1/completions")
            if not self._authorised():
                return
            req = parse_request(kind, body, header_policy=self.headers.get("X-Sgedge-Policy"))
            self._generate(req)
        except ApiError as e:
            self._error(e)
        except _ClientGone:
            self._log(499, "client went away; generation stopped")
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):  # gone before its reply was written
            self._log(499, "client went away before the reply")
            self.close_connection = True
        except Exception as e:  # a bug, not the client's fault: say so, keep serving
            import traceback

            traceback.print_exc(file=sys.stderr)
            self._error(ApiError(500, f"internal error: {type(e).__name__}: {e}"))

    def do_OPTIONS(self) -> None:  # noqa: N802 (a browser's CORS preflight)
        origin = self.headers.get("Origin")
        if not self.server.cors_origins:
            self._error(ApiError(405, "no CORS: start the server with --cors-origin ORIGIN to let a web page "
                                      "(an Electron or Tauri window) call it, or call it from the app's native side"))
        elif not self.server.cors_allows(origin):
            self._error(ApiError(403, f"origin {origin!r} is not allowed (--cors-origin: "
                                      f"{', '.join(self.server.cors_origins)})"))
        else:
            self.send_response(204)
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Sgedge-Policy")
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Content-Length", "0")
            self.end_headers()

    # -- generation ------------------------------------------------------------------
    def _generate(self, req: Request) -> None:
        srv = self.server
        kwargs, policy = srv.choose(req)
        model = policy or srv.model_id
        started = False

        def event(obj: Any) -> None:
            try:
                self.wfile.write(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")
                self.wfile.flush()
            except OSError as e:  # BrokenPipeError, ConnectionResetError...
                raise _ClientGone() from e

        def start() -> None:
            # Headers go out with the first piece: errors found before it (unknown policy,
            # prompt too long) still get a plain HTTP error.
            nonlocal started
            if started:
                return
            started = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if req.kind == "chat":
                event(chunk(req, model, role=True))

        def on_text(text: str) -> None:
            start()
            event(chunk(req, model, text))

        t0 = time.perf_counter()
        try:
            if req.sampling["max_tokens"] is None:
                # Not asked for: the server's default, cut to the room the prompt leaves.
                prompt = srv.rt.encode_prompt(req.prompt, raw=req.kind == "completion",
                                              template_kwargs=req.template_kwargs)
                room = srv.rt.context_size - len(prompt)
                if room < 1:
                    raise ApiError(400, f"the prompt fills the context of {srv.rt.context_size} tokens; shorten "
                                        "it (or start the server with a larger --ctx)", "messages")
                req.sampling["max_tokens"] = min(srv.max_tokens, room)
            result = srv.rt.generate(req.prompt, raw=req.kind == "completion", stop=req.stop,
                                     template_kwargs=req.template_kwargs,
                                     on_text=on_text if req.stream else None, **req.sampling, **kwargs)
        except SgedgeError as e:
            if not started:  # the request's fault (400), or the engine's (500)
                raise ApiError(400 if isinstance(e, InputError) else 500, str(e)) from None
            event(error_body(str(e)))
            return
        note = (f"policy={policy or '-'} {len(result.prompt_tokens)}+{len(result.tokens)} tokens "
                f"{time.perf_counter() - t0:.2f} s")
        if not req.stream:
            self._log(200, note)
            self._send_json(200, response(req, model, result, policy))
            return
        start()
        for obj in final_chunks(req, model, result, policy):
            event(obj)
        event(b"[DONE]")
        self._log(200, note)


def serve(rt: Runtime, *, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> SgedgeServer:
    """Bind a server for `rt` (not yet serving: call .serve_forever(), and .shutdown() from another thread)."""
    try:
        return SgedgeServer(rt, host, port, **options)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port "
                         "(0 takes a free one)") from None
