"""`sgedge serve`: a local HTTP server with an OpenAI-compatible API, for apps not
written in Python.

One Runtime (base loaded once, every adapter resident) answers every request; each
request may name a bundle policy and gets that policy's adapters, with no reload.
Generations run one at a time (the Runtime's lock); other requests wait their turn.
Standard library only: nothing here imports more than the runtime itself does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sgedge import strict_json
from sgedge.errors import InputError, SgedgeError
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

MAX_BODY = 8 << 20  # bytes; a prompt that fits any context fits in far less
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
          "/chat/completions": "chat", "/completions": "completion"}


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class SgedgeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Connections waiting to be accepted: socketserver's default of 5 reset clients when
    # a few dozen connect at once (an app opening many chats, a test harness).
    request_queue_size = 256

    def __init__(self, rt: Runtime, host: str, port: int, *, model_id: str, api_key: str | None = None,
                 lock_policy: bool = False, max_tokens: int = 512, cors_origins: Sequence[str] = (),
                 allowed_hosts: Sequence[str] = (), model_aliases: dict[str, str] | None = None,
                 any_model: bool = False, log: Callable[[str], None] | None = None) -> None:
        self.rt, self.model_id, self.api_key = rt, model_id, api_key
        self.any_model = any_model
        self.reloads = {"ok": 0, "unchanged": 0, "failed": 0}
        self._reload_lock = threading.Lock()
        from sgedge.runtime.metrics import server_metrics

        self.metrics = server_metrics()
        if self.metrics is not None:
            self.metrics.set_bundle(rt.bundle_version)
        self.model_aliases = {}
        for alias, policy in (model_aliases or {}).items():
            key = rt.policy_key(policy)
            if key is None:
                raise InputError(f"--model-alias {alias}={policy}: this server has no policy {policy!r} "
                                 f"(policies: {', '.join(sorted(rt.policies)) or 'none'})")
            self.model_aliases[alias] = key
        self.allowed_hosts = {h.strip().lower().strip("[]") for h in allowed_hosts} | set(LOOPBACK_NAMES) | {
            host.lower().strip("[]")}
        self.lock_policy, self.max_tokens, self.log = lock_policy, max_tokens, log
        self.cors_origins = tuple(o.rstrip("/") for o in cors_origins)
        self.started = int(time.time())
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    # -- live reload (SIGHUP, --watch, POST /admin/reload) -----------------------------
    def reload(self, trigger: str) -> dict[str, Any]:
        """Reload the bundle (Runtime.reload); the outcome is logged and returned. A failure
        leaves the old set serving and is raised as an ApiError (409) for the endpoint."""
        with self._reload_lock:
            try:
                r = self.rt.reload()
            except SgedgeError as e:
                self.reloads["failed"] += 1
                if self.metrics is not None:
                    self.metrics.reloads.labels("failed").inc()
                if self.log is not None:
                    self.log(f"reload ({trigger}) refused, still serving bundle {self.rt.bundle_version}: {e}")
                raise ApiError(409, f"reload refused, still serving bundle {self.rt.bundle_version}: {e}") from None
            self.reloads["ok" if not r.unchanged else "unchanged"] += 1
            if self.metrics is not None:
                self.metrics.reloads.labels("ok" if not r.unchanged else "unchanged").inc()
                self.metrics.set_bundle(r.bundle, r.previous)
            if self.log is not None:
                what = "no change" if r.unchanged else (f"bundle {r.previous} -> {r.bundle}; loaded "
                                                        f"{', '.join(r.changed) or 'none'}, freed "
                                                        f"{', '.join(r.removed) or 'none'}")
                self.log(f"reload ({trigger}): {what} ({r.seconds * 1000:.0f} ms)")
            return {"bundle": r.bundle, "previous": r.previous, "changed": list(r.changed),
                    "removed": list(r.removed), "policy": r.policy, "seconds": round(r.seconds, 4)}

    def watch(self, path: Any, every: float, stop: threading.Event) -> None:
        """Poll the bundle's manifest and signature; reload when their bytes change."""
        def state() -> bytes:
            out = b""
            for name in ("sgedge.json", "sgedge.json.sig"):
                try:
                    out += hashlib.sha256((path / name).read_bytes()).digest()
                except OSError:
                    out += b"-"
            return out

        last = state()
        while not stop.wait(every):
            now = state()
            if now != last:
                last = now
                try:
                    self.reload("--watch")
                except ApiError:
                    pass  # logged; the next change is tried again

    def host_allows(self, header: str | None) -> bool:
        """Whether a request's Host header names this server (against DNS rebinding: a web
        page on evil.example that re-points its name to 127.0.0.1 sends Host: evil.example).
        A wildcard listen address with an API key accepts any name: the key guards it."""
        if header is None or "*" in self.allowed_hosts:
            return True
        name = _host_name(header)
        if name in self.allowed_hosts or name.endswith(".localhost"):
            return True
        return self.api_key is not None and self.server_address[0] in ("0.0.0.0", "::")

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
        if policy is None and adapters is None and req.model:
            # OpenAI clients pick a "model": the policies are listed as models. A name that
            # is none of them fails closed: a typo in "EU" must not run the start-up policy.
            if rt.policy_key(req.model) is not None:
                policy = req.model
            elif req.model in self.model_aliases:
                policy = self.model_aliases[req.model]
            elif req.model != self.model_id and not self.any_model:
                known = sorted({*rt.policies, self.model_id, *self.model_aliases})
                raise ApiError(404, f"The model {req.model!r} does not exist on this server (models: "
                                    f"{', '.join(known)}); name a policy, or start the server with "
                                    f"--model-alias {req.model}=POLICY", "model", code="model_not_found")
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


def _check_text(value: Any) -> None:
    """Refuse strings that are not Unicode text (a lone surrogate such as "\\udc80" is
    valid JSON but cannot be encoded, tokenized or logged)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack += list(v.keys()) + list(v.values())
        elif isinstance(v, list):
            stack += v
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "the request holds a string that is not Unicode text (a lone surrogate "
                                    "escape such as \\ud800); send UTF-8 text") from None


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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (a malformed request line, an unknown method, headers
        # too long) as JSON like every other reply, and the connection closed after them.
        self.close_connection = True
        try:
            self._send_json(code, ApiError(code, message or explain or "bad request").body())
        except OSError:
            pass

    def _guard(self) -> bool:
        """Host and Origin checks before anything else (False: refused, reply sent)."""
        srv = self.server
        if not srv.host_allows(self.headers.get("Host")):
            self._fail(ApiError(403, f"Host {self.headers.get('Host')!r} is not this server's name; requests are "
                                     "accepted for loopback names and the --host address (start with --allowed-host "
                                     "NAME to accept another)"))
            return False
        origin = self.headers.get("Origin")
        if origin is not None and not srv.cors_allows(origin):
            self._fail(ApiError(403, f"requests from web pages (Origin {origin!r}) are refused: start the server with "
                                     "--cors-origin ORIGIN to let that page call it"))
            return False
        return True

    def _fail(self, e: ApiError) -> None:
        """An error reply after which the connection closes (its body may be unread)."""
        self.close_connection = True
        self._error(e)

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: ApiError) -> None:
        self._log(e.status, e.message)
        if self.server.metrics is not None:
            route = self.path.split("?")[0].rstrip("/") if isinstance(getattr(self, "path", None), str) else ""
            self.server.metrics.error(route if route in (*ROUTES, "/admin/reload", "/metrics") else "other",
                                      e.status)
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

    def _raw_body(self) -> bytes:
        """The body's bytes: by Content-Length, or chunked. Any error here leaves the body
        unread, so the connection is closed after the reply (else the rest of the body
        would be read as the next request)."""
        length, coding = self.headers.get_all("Content-Length") or [], self.headers.get("Transfer-Encoding")
        if coding is not None:
            if length or coding.strip().lower() != "chunked":
                raise ApiError(400, "send the body with one Content-Length, or Transfer-Encoding: chunked alone")
            return self._chunked()
        if not length:
            raise ApiError(411, "send the JSON body with a Content-Length header")
        if len(length) > 1 or not length[0].strip().isdigit() or len(length[0].strip()) > 12:
            raise ApiError(400, f"bad Content-Length {', '.join(length)!r}: one whole number of bytes")
        n = int(length[0])
        if n > MAX_BODY:
            raise ApiError(413, f"the request body is {n} bytes; the limit is {MAX_BODY}")
        data = self.rfile.read(n)
        if len(data) < n:
            raise _ClientGone()
        return data

    def _chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(66)
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 8 or any(c not in b"0123456789abcdefABCDEF" for c in size):
                raise ApiError(400, "malformed chunked body")
            n = int(size, 16)
            total += n
            if total > MAX_BODY:
                raise ApiError(413, f"the request body is over the limit of {MAX_BODY} bytes")
            if n == 0:
                while self.rfile.readline(8194) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(n))
            if self.rfile.read(2) not in (b"\r\n",):
                raise ApiError(400, "malformed chunked body")

    def _body(self) -> Any:
        data = self._raw_body()
        try:
            body = strict_json.loads(data or b"null", "the request body", want=None)
        except InputError as e:
            raise ApiError(400, f"{e} (JSON as RFC 8259 has it: no NaN or Infinity, each key once)") from None
        _check_text(body)
        return body

    # -- routes --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._guard():
            return
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":  # no key needed: a liveness probe reveals nothing but the policies
            rt = self.server.rt
            self._send_json(200, {"status": "ok", "backend": rt.backend, "mode": rt.mode, "policy": rt.policy,
                                  "bundle": rt.bundle_version,
                                  "adapters": [{"name": a.name, "scale": a.scale} for a in rt.active],
                                  "lock_policy": self.server.lock_policy,
                                  **({"pool": [{"policy": m.label, "fused": m.fused} for m in rt.pool]}
                                     if rt.mode == "pool" else {})})
            return
        if not self._authorised():
            return
        if path == "/metrics":
            m = self.server.metrics
            if m is None:
                self._error(ApiError(501, "/metrics needs prometheus_client: pip install prometheus-client"))
                return
            data = m.render()
            self.send_response(200)
            self.send_header("Content-Type", m.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
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
        if not self._guard():
            return
        path = self.path.split("?")[0].rstrip("/")
        try:
            kind = ROUTES.get(path)
            try:
                body = self._body() if path != "/admin/reload" or self.headers.get("Content-Length") not in (
                    None, "0") or self.headers.get("Transfer-Encoding") else None
            except ApiError as e:
                self._fail(e)
                return
            if path == "/admin/reload":
                if self.server.api_key is None:
                    raise ApiError(403, "POST /admin/reload needs the server to be started with --api-key (an "
                                        "unauthenticated reload endpoint would let any local process trigger one); "
                                        "or send the server SIGHUP", code="admin_disabled")
                if not self._authorised():
                    return
                self._send_json(200, self.server.reload("POST /admin/reload"))
                return
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
        if not self.server.host_allows(self.headers.get("Host")):
            self._guard()
            return
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
        if srv.metrics is not None:
            srv.metrics.generation(policy if policy in self.server.rt.policies else None, len(result.prompt_tokens),
                                   len(result.tokens), time.perf_counter() - t0, result.text,
                                   self.path.split("?")[0].rstrip("/"))
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
