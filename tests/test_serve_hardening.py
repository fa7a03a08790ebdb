"""`sgedge serve` against a crowd and a hostile client or web page (issue 25): bounded,
loopback only. Every case gets a JSON reply, the connection closes where the body was
left unread, and the server goes on serving."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from test_serve import BREAD, call, chat, running

from sgedge.runtime.api import Runtime
from sgedge.runtime.serve import MAX_BODY


@pytest.fixture(scope="module")
def rt(tiny):
    t = tiny("llama")
    with Runtime.open(t.gguf, adapters=[t.a1]) as rt:
        yield rt


@pytest.fixture(scope="module")
def srv(rt):
    with running(rt) as srv:
        yield srv


def _exchange(srv, raw: bytes, timeout: float = 20) -> list[bytes]:
    """Send raw bytes; return what comes back until the server closes (a hang fails)."""
    out = []
    with socket.create_connection(srv.server_address[:2], timeout=timeout) as s:
        s.sendall(raw)
        while True:
            piece = s.recv(65536)
            if not piece:
                return out
            out.append(piece)


def _status_and_json(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_64_concurrent_clients_are_all_served(srv):
    results: list[int] = []

    def one() -> None:
        status, _ = call(srv, "POST", "/v1/chat/completions", {"messages": BREAD, "max_tokens": 2})
        results.append(status)

    threads = [threading.Thread(target=one) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results == [200] * 64


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "99999999999999", "5, 5"])
def test_a_bad_content_length_is_refused_and_the_connection_closed(srv, length):
    body = b'{"messages": []}'
    reply = b"".join(_exchange(srv, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    + f"Content-Length: {length}\r\n\r\n".encode() + body))
    status, obj = _status_and_json(reply)
    assert status in (400, 413) and "Content-Length" in obj["error"]["message"] or status == 413, obj


def test_a_body_over_the_limit_is_not_run_as_the_next_request(srv):
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reply = b"".join(_exchange(srv, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode() + smuggled))
    assert reply.count(b"HTTP/1.1 ") == 1 and b" 413 " in reply.split(b"\r\n")[0]


def test_a_chunked_body_is_read(srv):
    body = json.dumps({"messages": BREAD, "max_tokens": 2}).encode()
    chunks = b"".join(f"{len(body[i:i + 7]):x}\r\n".encode() + body[i:i + 7] + b"\r\n" for i in range(0, len(body), 7))
    reply = b"".join(_exchange(srv, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"))
    status, obj = _status_and_json(reply)
    assert status == 200 and obj["choices"][0]["message"]["content"]


@pytest.mark.parametrize("raw,message", [
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}', "NaN is not a JSON number"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}', "Infinity is not a JSON number"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e308}', "'max_tokens' must be an integer"),
    (b'{"messages": [{"role": "user", "content": "\\udc80"}]}', "not Unicode text"),
    (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests its values too deeply"),
    (b'{"messages": ' + b"[" * 80 + b"]" * 80 + b"}", "nests its values deeper"),
    (b'{"messages": [], "messages": [{"role": "user", "content": "hi"}]}', "appears twice"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 7}', "'top_p' must be a number from 0 to 1"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "seed": 99999999999999999999999}', "'seed' must be"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "ignore_eos": "yes"}', "'ignore_eos' must be true or false"),
])
def test_values_json_cannot_carry_safely_get_a_400(srv, raw, message):
    status, obj = call(srv, "POST", "/v1/chat/completions", raw=raw)
    assert status == 400 and message in obj["error"]["message"], obj
    assert chat(srv, BREAD, max_tokens=1)["choices"]  # and it goes on


@pytest.mark.parametrize("host,ok", [("127.0.0.1:8080", True), ("localhost", True), ("[::1]:80", True),
                                     ("app.localhost", True), ("evil.example", False), ("127.0.0.1.evil.example",
                                                                                         False)])
def test_only_requests_for_this_servers_name_are_served(srv, host, ok):
    status, obj = call(srv, "GET", "/v1/models", headers={"Host": host})
    assert (status == 200) == ok, obj
    if not ok:
        assert status == 403 and "--allowed-host" in obj["error"]["message"]


def test_allowed_host_adds_a_name(rt):
    with running(rt, allowed_hosts=["myapp.lan"]) as srv:
        assert call(srv, "GET", "/v1/models", headers={"Host": "myapp.lan:9000"})[0] == 200
        assert call(srv, "GET", "/v1/models", headers={"Host": "other.lan"})[0] == 403


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"PUT /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                                 b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n"])
def test_protocol_errors_are_json_too(srv, raw):
    reply = b"".join(_exchange(srv, raw))
    if reply.startswith(b"{"):  # no version in the request line: an HTTP/0.9 reply, body only
        status, obj = 400, json.loads(reply)
    else:
        status, obj = _status_and_json(reply)
    assert status >= 400 and obj["error"]["message"]
