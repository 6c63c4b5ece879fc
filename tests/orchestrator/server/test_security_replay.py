"""The front-door review's probes (issue 9), replayed against `orchestrator serve` as a user
starts it: the real CLI in its own process, its default limits, loopback only.

The tests beside this one (`test_http_safety.py`, `test_http_websocket_bounds.py`, …) prove
each mechanism in process, with tightened limits and injected parts; this suite proves the
shipped defaults close every hole the review found, by sending what the attacker sent, in a
few seconds each. Probes are numbered as in the review. Two are left to the in-process
tests, because their defaults make them too large to replay here: the response cache's
256 MB byte budget (10: `tests/orchestrator/test_response_cache.py`) and the 30 s
write-stall cut-off of a WebSocket reader (4, second half: `test_http_websocket_bounds.py`).
Probe 9 runs on the Anthropic provider against a slow fake upstream (the echo provider
finishes before a client could leave)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import rawhttp
from served import free_port, wait_until_serving

REPO = Path(__file__).resolve().parents[3]
CLIENT = "tok-client-replay-41d7"
ADMIN = "tok-admin-replay-9c2e"
PROVIDER_KEY = "sk-ant-REPLAY-CANARY-7f3a1c"
FILE_LIMIT = 512  # the open server's RLIMIT_NOFILE: the probe of 3 fills it
HEADER_TIMEOUT_S = 10.0  # ConnectionLimits' default, which the probe of 3 waits out


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def _serve(
    tmp: Path, provider: str, env: dict[str, str], preexec: Callable[[], None] | None = None
) -> Iterator[Served]:
    port = free_port()
    log = tmp / "server.log"
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "SEMANTIC_DEDUP": "0"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", provider,
             "--port", str(port)],
            env={**base, **env}, cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, statuses=(200, 503),
                           printed=lambda: log.read_text()[-2000:])
        yield Served(url, process, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _lower_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The default setup: loopback, no token, the echo provider (and a lowered file limit)."""
    yield from _serve(tmp_path_factory.mktemp("open"), "echo", {}, _lower_file_limit)


def _sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


_STREAM_HEAD = _sse("message_start", {"type": "message_start", "message": {
    "id": "msg_replay", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
    "content": [], "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 0}}}) + _sse("content_block_start", {
    "type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
_STREAM_WORD = _sse("content_block_delta", {
    "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word "}})


class _Upstream(BaseHTTPRequestHandler):
    """A provider that refuses the key, quoting it back in another case (as real ones do),
    and streams without end when asked to stream, noting when its reader hangs up."""

    seen: ClassVar[list[str]] = []
    stream_closed: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        _Upstream.seen.append(self.path)
        if body.get("stream"):
            self._stream()
            return
        message = f"invalid x-api-key {PROVIDER_KEY.swapcase()}"
        error = {"type": "authentication_error", "message": message}
        answer = json.dumps({"type": "error", "error": error}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        try:
            self.wfile.write(_STREAM_HEAD)
            for _ in range(600):  # a slow upstream: a word per 50 ms, for up to 30 s
                self.wfile.write(_STREAM_WORD)
                self.wfile.flush()
                _Upstream.stream_closed.wait(0.05)
        except (BrokenPipeError, ConnectionResetError):
            _Upstream.stream_closed.set()

    def log_message(self, *_: object) -> None:
        return None


@dataclass
class Trap:
    """A listener at the SDK's own base-URL variable: every connection it accepts is a leak."""

    port: int
    accepted: list[socket.socket]


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    found = Trap(port=listener.getsockname()[1], accepted=[])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                found.accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield found
    stop.set()
    thread.join(5)
    listener.close()


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory, trap: Trap) -> Iterator[Served]:
    """Client and admin tokens, the Anthropic provider with a recognisable key, its upstream
    set (`ANTHROPIC_UPSTREAM_URL`) and the SDK's own variable pointing at the trap, DEBUG logs."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    env = {
        "API_KEY": CLIENT,
        "ADMIN_API_KEY": ADMIN,
        "ANTHROPIC_API_KEY": PROVIDER_KEY,
        "ANTHROPIC_UPSTREAM_URL": f"http://127.0.0.1:{upstream.server_address[1]}",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{trap.port}",
        "LOG_LEVEL": "DEBUG",
    }
    try:
        yield from _serve(tmp_path_factory.mktemp("guarded"), "anthropic", env)
    finally:
        upstream.shutdown()


def _status(raw: bytes) -> int:
    return rawhttp.status_of(raw) if raw else 0


# --- 1. Any web page could use a no-token server ------------------------------------------------


def test_1_rebound_hosts_and_foreign_origins_are_refused(open_server: Served) -> None:
    url = open_server.url
    for method, path in (("POST", "/v1/prompt"), ("GET", "/v1/status"),
                         ("GET", "/dashboard/events")):
        body = b'{"input": "hi"}' if method == "POST" else b""
        headers = ["Content-Type: application/json"] if body else []
        raw = rawhttp.request(method, path, "attacker.example", *headers, body=body)
        assert _status(rawhttp.exchange(url, raw)) == 421, path
    sock, head = rawhttp.ws_open(url, "/v1/stream", "Origin: http://evil.example")
    sock.close()
    assert head.startswith(b"HTTP/1.1 403"), head[:80]
    cross = httpx.post(url + "/v1/prompt", json={"input": "hi"},
                       headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    preflight = httpx.options(url + "/v1/prompt", headers={
        "origin": "http://evil.example", "access-control-request-method": "POST"})
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


# --- 2. Header size was unlimited, before auth ----------------------------------------------------


def test_2_huge_headers_are_refused_and_cost_no_memory(open_server: Served) -> None:
    """One 20 MB header; then ten connections each sending an unfinished 8 MB header at once
    (the review's: 40 MB each took the server from 133 to 504 MB)."""
    url = open_server.url
    before = open_server.rss_bytes()
    with rawhttp.connect(url) as sock:
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(320):  # 20 MB
                sock.sendall(b"a" * 65536)

    def unfinished() -> None:
        with rawhttp.connect(url) as sock, contextlib.suppress(
            BrokenPipeError, ConnectionResetError
        ):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            for _ in range(128):  # 8 MB, never finished
                sock.sendall(b"a" * 65536)
            raise AssertionError("the server took an 8 MB header")

    threads = [threading.Thread(target=unfinished) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert open_server.rss_bytes() - before < 32 * 2**20
    assert httpx.get(url + "/health", timeout=5).status_code == 200


# --- 3. Connections that never finish were never closed ------------------------------------------


def test_3_idle_and_trickling_connections_are_closed_and_health_keeps_answering(
    open_server: Served,
) -> None:
    """As many idle connections as the server's file limit, plus one trickling its request
    head a byte at a time (the review's: 300 idle sockets under a lower file limit made
    `/health` fail): past the connection cap each is answered 503 and let go at once, so
    `/health` is answered throughout, and at the header timeout every one is closed."""
    url = open_server.url
    idle = [rawhttp.connect(url, timeout_s=HEADER_TIMEOUT_S + 10) for _ in range(FILE_LIMIT)]
    trickle = rawhttp.connect(url, timeout_s=0.2)
    try:
        assert rawhttp.status_of(rawhttp.exchange(url, rawhttp.request(
            "GET", "/health", "127.0.0.1"))) == 503  # answered, not left to fail
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 10
        closed = False
        for byte in head:  # one byte per 0.2 s recv timeout: the trickle the review sent
            try:
                trickle.send(bytes([byte]))
                if trickle.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            assert time.monotonic() < deadline, "a trickling head outlived the header timeout"
        assert closed
        for sock in idle:
            answer = rawhttp.read_until_closed(sock, timeout_s=HEADER_TIMEOUT_S + 10)
            assert answer == b"" or _status(answer) == 503
        assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        trickle.close()
        for sock in idle:
            sock.close()
    oversized = rawhttp.request("POST", "/v1/prompt", "127.0.0.1", body=b"x" * 2000)
    declared = oversized.replace(b"Content-Length: 2000", b"Content-Length: 999999999")
    answer = rawhttp.exchange(url, declared.replace(b"Connection: close\r\n", b""))
    assert _status(answer) == 413 and b"connection: close" in answer.lower()


# --- 4. A WebSocket client that never reads made the server buffer without limit -----------------


def test_4_a_websocket_client_that_never_reads_costs_bounded_memory(open_server: Served) -> None:
    url = open_server.url
    before = open_server.rss_bytes()
    prompt = json.dumps({"input": "word " * 200_000, "max_tokens": 1_000_000})  # 1 MB, echoed
    frame = rawhttp.ws_text_frame(prompt)
    sock, head = rawhttp.ws_open(url, "/v1/stream")
    sent = 0
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(3)
        with contextlib.suppress(TimeoutError, BrokenPipeError, ConnectionResetError):
            for _ in range(800):  # the review's 800 × 1 MB
                sock.sendall(frame)
                sent += len(frame)
        assert sent < 64 * 2**20, f"the server took in {sent} bytes"
        assert open_server.rss_bytes() - before < 96 * 2**20
        assert httpx.get(url + "/health", timeout=5).status_code == 200


# --- 5, 7, 8: the guarded server ----------------------------------------------------------------


def test_5_the_sdks_base_url_variable_is_ignored(guarded_server: Served, trap: Trap) -> None:
    """With `ANTHROPIC_BASE_URL` in the server's environment, the key goes only to
    `ANTHROPIC_UPSTREAM_URL`."""
    _Upstream.seen.clear()
    httpx.post(guarded_server.url + "/v1/messages", headers={"x-api-key": CLIENT}, json={
        "model": "claude-sonnet-5-5", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert _Upstream.seen, "the request never reached the configured upstream"
    assert trap.accepted == []


def test_7_only_the_admin_token_reconfigures_within_bounds(guarded_server: Served) -> None:
    url = guarded_server.url + "/v1/config"
    absurd = {"rate_limit_rps": 1e-300}
    assert httpx.patch(url, json=absurd, headers={"x-api-key": CLIENT}).status_code == 403
    refused = httpx.patch(url, json=absurd, headers={"x-api-key": ADMIN})
    assert refused.status_code == 422 and "rate_limit_rps" in refused.text
    huge = httpx.patch(url, json={"retry_base_delay_s": 1e308}, headers={"x-api-key": ADMIN})
    assert huge.status_code == 422
    for presented in (CLIENT[:-1], CLIENT + "x", ""):
        for header in (f"authorization: Bearer {presented}", f"x-api-key: {presented}"):
            raw = rawhttp.request("GET", "/v1/status", "127.0.0.1", header)
            assert _status(rawhttp.exchange(guarded_server.url, raw)) == 401, header


def test_8_upstream_error_text_and_the_key_reach_no_client_and_no_log(
    guarded_server: Served,
) -> None:
    answer = httpx.post(guarded_server.url + "/v1/messages", headers={"x-api-key": CLIENT},
                        json={"model": "claude-sonnet-5-5", "max_tokens": 8,
                              "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert answer.status_code >= 400
    assert "invalid x-api-key" not in answer.text
    seen = "\n".join([answer.text, str(dict(answer.headers)),
                      httpx.get(guarded_server.url + "/v1/status",
                                headers={"x-api-key": CLIENT}).text,
                      httpx.get(guarded_server.url + "/metrics",
                                headers={"x-api-key": CLIENT}).text,
                      guarded_server.log.read_text()]).lower()
    assert PROVIDER_KEY.lower() not in seen and PROVIDER_KEY[-10:].lower() not in seen


# --- 6. One big request froze the event loop --------------------------------------------------


def test_6_a_huge_conversation_is_refused_while_health_answers(open_server: Served) -> None:
    """880k messages (25 MB) to `/v1/messages`: refused naming `messages`, and `/health`
    answers while the server reads it."""
    url = open_server.url
    body = {"model": "echo", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}] * 880_000}
    result: dict[str, httpx.Response] = {}
    poster = threading.Thread(
        target=lambda: result.update(r=httpx.post(url + "/v1/messages", json=body, timeout=60))
    )
    poster.start()
    healths = []
    while poster.is_alive():
        healths.append(httpx.get(url + "/health", timeout=5).status_code)
    poster.join()
    assert result["r"].status_code in (400, 413) and "messages" in result["r"].text
    assert healths and set(healths) == {200}


# --- 9. Generation continued after the client left --------------------------------------------


def test_9_a_client_that_leaves_mid_stream_ends_the_upstream_stream(
    guarded_server: Served,
) -> None:
    """An SSE client that hangs up after three events: the gateway closes its upstream
    stream (the review's left every upstream stream running, burning paid tokens)."""
    _Upstream.stream_closed.clear()
    body = {"model": "claude-sonnet-5-5", "max_tokens": 4096, "stream": True,
            "messages": [{"role": "user", "content": "write forever"}]}
    with httpx.stream("POST", guarded_server.url + "/v1/messages", json=body, timeout=30,
                      headers={"x-api-key": CLIENT}) as stream:
        assert stream.status_code == 200
        events = stream.iter_lines()
        for _ in range(3):
            next(events)
    assert _Upstream.stream_closed.wait(15), "the upstream stream ran on after the client left"


# --- 11. Clamps, redirects, HEAD ---------------------------------------------------------------


def test_11_timeouts_are_clamped_redirects_stay_relative_and_head_is_answered(
    open_server: Served,
) -> None:
    url = open_server.url
    served = httpx.post(url + "/v1/messages", headers={"x-stainless-timeout": "1e308"}, json={
        "model": "echo", "max_tokens": 3, "messages": [{"role": "user", "content": "a b c d e f"}]})
    assert served.status_code == 200
    assert served.json()["usage"]["output_tokens"] <= 3  # echo honours max_tokens
    raw = rawhttp.request("GET", "/?token=secret-1", "127.0.0.1")
    answer = rawhttp.exchange(url, raw)
    assert b"location: /dashboard\r\n" in answer.lower() and b"secret-1" not in answer
    rebound = rawhttp.request("GET", "/dashboard/?token=secret-1", "evil.example")
    refused = rawhttp.exchange(url, rebound)
    assert b"location:" not in refused.lower() and b"secret-1" not in refused
    assert httpx.head(url + "/health").status_code == 200
