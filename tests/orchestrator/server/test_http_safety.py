"""Front-door safety, probed through real sockets: Host and Origin, header and connection
limits, the body limit, redirects, health."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import rawhttp
from conftest import echo_pipeline
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from orchestrator.config import Tunables
from orchestrator.server import ServerThread, create_app
from orchestrator.server.connection import ConnectionLimits, OverCapLog, connection_cap
from orchestrator.settings import ServerSettings

TOKEN = "tok-safety-5c1d9e"
PROMPT = json.dumps({"input": "hi"}).encode()


@pytest.fixture
def serve_with() -> Iterator[Callable[..., str]]:
    """`serve_with(limits=..., settings=..., pipeline=...) -> url`, stopped after the test."""
    servers: list[ServerThread] = []

    def start(*, limits: ConnectionLimits | None = None, **app_kwargs: Any) -> str:
        pipeline = app_kwargs.pop("pipeline", None) or echo_pipeline()
        server = ServerThread(create_app(pipeline, **app_kwargs), limits=limits)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()


# --- 1. Host and Origin ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/status", "/dashboard/events", "/v1/prompt", "/metrics"])
def test_a_rebound_host_name_is_refused(start_server: Callable[..., str], path: str) -> None:
    """A request carrying `Host: attacker.example` (DNS rebinding) gets 421 on every route."""
    url = start_server()
    method, body = ("POST", PROMPT) if path == "/v1/prompt" else ("GET", b"")
    headers = ["Content-Type: application/json"] if body else []
    answer = rawhttp.exchange(
        url, rawhttp.request(method, path, "attacker.example", *headers, body=body)
    )
    assert rawhttp.status_of(answer) == 421
    assert b"ALLOWED_HOSTS" in answer


def test_loopback_names_and_addresses_are_served(start_server: Callable[..., str]) -> None:
    """`127.0.0.1:<port>`, `localhost:<port>` and `[::1]` as Host are all answered."""
    url = start_server()
    _, port = rawhttp.address(url)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "app.localhost"):
        answer = rawhttp.exchange(url, rawhttp.request("GET", "/v1/status", host))
        assert rawhttp.status_of(answer) == 200, host


def test_configured_host_names_are_served(start_server: Callable[..., str]) -> None:
    """A name listed in ALLOWED_HOSTS is answered; another name still is not."""
    url = start_server(settings=ServerSettings(provider="echo", allowed_hosts="orch.internal"))
    good = rawhttp.exchange(url, rawhttp.request("GET", "/v1/status", "orch.internal:8080"))
    bad = rawhttp.exchange(url, rawhttp.request("GET", "/v1/status", "other.internal"))
    assert rawhttp.status_of(good) == 200 and rawhttp.status_of(bad) == 421


def test_a_websocket_from_another_origin_is_refused(start_server: Callable[..., str]) -> None:
    """A WebSocket opened by a page on another site is refused before the handshake."""
    url = start_server()
    ws_url = url.replace("http", "ws", 1) + "/v1/stream"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, origin="http://evil.example", open_timeout=5).close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


def test_a_websocket_from_the_servers_own_page_is_served(start_server: Callable[..., str]) -> None:
    """A WebSocket whose Origin is the server's own (the dashboard's) is answered."""
    url = start_server()
    ws_url = url.replace("http", "ws", 1) + "/v1/stream"
    with connect(ws_url, origin=url, open_timeout=5) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"input": "hi"}))
        assert json.loads(ws.recv(timeout=5))["text"] == "hi"


def test_a_cross_site_post_is_refused(start_server: Callable[..., str]) -> None:
    """A browser POST from another origin (or a `null` origin) is refused with 403."""
    url = start_server()
    for origin in ("http://evil.example", "null", url.replace("127.0.0.1", "localhost")):
        answer = httpx.post(url + "/v1/prompt", json={"input": "hi"}, headers={"origin": origin})
        assert answer.status_code == 403, origin
    same = httpx.post(url + "/v1/prompt", json={"input": "hi"}, headers={"origin": url})
    assert same.status_code == 200


def test_sec_fetch_site_cross_site_is_refused(start_server: Callable[..., str]) -> None:
    """A request the browser marks `Sec-Fetch-Site: cross-site` is refused even without
    an Origin (a cross-site GET)."""
    url = start_server()
    answer = httpx.get(url + "/v1/status", headers={"sec-fetch-site": "cross-site"})
    assert answer.status_code == 403


def test_no_cors_headers_are_sent(start_server: Callable[..., str]) -> None:
    """A CORS preflight gets no Access-Control-Allow-* headers, so no other site may read."""
    url = start_server()
    preflight = httpx.options(
        url + "/v1/prompt",
        headers={"origin": url, "access-control-request-method": "POST"},
    )
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


# --- 2, 3. Header size and count, timeouts, a connection cap -----------------------------


def test_a_huge_header_is_refused_before_auth(serve_with: Callable[..., str]) -> None:
    """One 1 MB header gets 431 and the connection is closed, with a token required."""
    url = serve_with(settings=ServerSettings(provider="echo", api_key=TOKEN))
    raw = rawhttp.request("GET", "/v1/status", "127.0.0.1", "X-Big: " + "a" * 1_000_000)
    answer = rawhttp.exchange(url, raw)
    assert rawhttp.status_of(answer) == 431


def test_an_unfinished_huge_header_is_cut_off(serve_with: Callable[..., str]) -> None:
    """A header that never ends is not buffered: past the limit the server answers 431 and
    closes, while the client is still sending."""
    url = serve_with(limits=ConnectionLimits(max_header_bytes=16 * 1024))
    with rawhttp.connect(url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1000):  # up to 64 MB; the server closes after ~16 KB
                sock.sendall(b"a" * 65536)
        # The 431 may be lost to the reset; that the socket died is what counts.


def test_too_many_headers_are_refused(serve_with: Callable[..., str]) -> None:
    """More than `max_headers` headers get 431."""
    url = serve_with(limits=ConnectionLimits(max_headers=20))
    headers = [f"X-H{i}: v" for i in range(30)]
    answer = rawhttp.exchange(url, rawhttp.request("GET", "/health", "127.0.0.1", *headers))
    assert rawhttp.status_of(answer) == 431


def test_a_connection_that_sends_nothing_is_closed(serve_with: Callable[..., str]) -> None:
    """A connection that never sends a request is closed after the header timeout."""
    url = serve_with(limits=ConnectionLimits(header_timeout_s=0.3))
    with rawhttp.connect(url) as sock:
        assert rawhttp.read_until_closed(sock, timeout_s=5) == b""


def test_a_trickling_header_is_closed(serve_with: Callable[..., str]) -> None:
    """A request head sent byte by byte is closed at the header timeout, though bytes keep
    coming (each byte does not restart the clock)."""
    url = serve_with(limits=ConnectionLimits(header_timeout_s=0.5))
    with rawhttp.connect(url) as sock:
        sock.settimeout(0.1)
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
            try:
                sock.send(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed, "200 bytes at 0.1 s each (20 s) never got the 0.5 s timeout"


def test_a_stalled_body_is_closed(serve_with: Callable[..., str]) -> None:
    """A request whose body stops arriving is closed after the body idle timeout."""
    url = serve_with(limits=ConnectionLimits(body_idle_timeout_s=0.3))
    head = rawhttp.request("POST", "/v1/prompt", "127.0.0.1", "Content-Type: application/json")
    head = head.replace(b"\r\n\r\n", b"\r\nContent-Length: 100\r\n\r\n")
    with rawhttp.connect(url) as sock:
        sock.sendall(head + b'{"input": ')
        assert rawhttp.read_until_closed(sock, timeout_s=5) == b""


def test_beyond_the_connection_cap_requests_get_503(serve_with: Callable[..., str]) -> None:
    """With `max_connections` connections open, the next request is answered 503."""
    url = serve_with(limits=ConnectionLimits(max_connections=3))
    held = [rawhttp.connect(url) for _ in range(3)]
    try:
        answer = rawhttp.exchange(url, rawhttp.request("GET", "/health", "127.0.0.1"))
        assert rawhttp.status_of(answer) == 503
    finally:
        for sock in held:
            sock.close()


def test_at_the_cap_every_connection_is_served(serve_with: Callable[..., str]) -> None:
    """`max_connections` connections open, each one's requests are answered (only a
    connection past the cap is refused), not all of them 503 once the cap is reached."""
    url = serve_with(limits=ConnectionLimits(max_connections=3))
    held = [rawhttp.connect(url) for _ in range(3)]
    try:
        answer = rawhttp.exchange(url, rawhttp.request("GET", "/health", "127.0.0.1"))
        assert rawhttp.status_of(answer) == 503  # the fourth
        # The first of these is answered with all three still open.
        for sock in held:
            sock.sendall(rawhttp.request("GET", "/health", "127.0.0.1"))
            assert rawhttp.status_of(rawhttp.read_until_closed(sock)) == 200
    finally:
        for sock in held:
            sock.close()


def test_a_connection_over_the_cap_is_let_go_before_it_sends_anything(
    serve_with: Callable[..., str],
) -> None:
    """An idle connection past the cap is answered 503 and closed at once, not held (with
    its file descriptor) until the header timeout."""
    url = serve_with(limits=ConnectionLimits(max_connections=2, header_timeout_s=60))
    held = [rawhttp.connect(url) for _ in range(2)]
    try:
        with rawhttp.connect(url) as extra:
            answer = rawhttp.read_until_closed(extra, timeout_s=5)
        assert rawhttp.status_of(answer) == 503
    finally:
        for sock in held:
            sock.close()


def test_requests_refused_past_the_cap_log_one_line_not_one_each(
    serve_with: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """Each connection refused past the cap is logged as uvicorn logs its refusals; the
    server lets one line through per interval (at overload, a line per connection is
    thousands a second)."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    for old in [f for f in uvicorn_log.filters if isinstance(f, OverCapLog)]:
        uvicorn_log.removeFilter(old)  # an earlier test's may have reported a moment ago
    url = serve_with(limits=ConnectionLimits(max_connections=2))
    held = [rawhttp.connect(url) for _ in range(2)]  # the cap: each one after is refused
    try:
        with caplog.at_level("WARNING", logger="uvicorn.error"):
            for _ in range(5):
                answer = rawhttp.exchange(url, rawhttp.request("GET", "/health", "127.0.0.1"))
                assert rawhttp.status_of(answer) == 503
    finally:
        for sock in held:
            sock.close()
    lines = [r for r in caplog.records if r.getMessage().startswith(OverCapLog.MESSAGE)]
    assert len(lines) == 1


def test_the_over_cap_log_says_how_many_it_held_back() -> None:
    now = [0.0]
    log_filter = OverCapLog(every_s=10, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, msg, None, None)

    assert log_filter.filter(record(OverCapLog.MESSAGE))
    assert [log_filter.filter(record(OverCapLog.MESSAGE)) for _ in range(4)] == [False] * 4
    assert log_filter.filter(record("something else"))  # other lines are never held back
    now[0] = 10.0
    line = record(OverCapLog.MESSAGE)
    assert log_filter.filter(line)
    assert "4 more refused since the last report" in line.getMessage()


def test_the_connection_cap_fits_the_file_limit() -> None:
    """The cap stays below the open-file limit, leaving descriptors for everything else."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = connection_cap(ConnectionLimits(max_connections=10**9))
    assert cap < soft


def test_connection_limits_validate() -> None:
    """A non-positive limit is refused, naming it."""
    with pytest.raises(ValueError, match="header_timeout_s"):
        ConnectionLimits(header_timeout_s=0)
    with pytest.raises(ValueError, match="max_headers"):
        ConnectionLimits(max_headers=0)


# --- the body limit ------------------------------------------------------------------------


def _chunked(path: str, chunks: list[bytes]) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    return head + body + b"0\r\n\r\n"


def test_chunks_under_the_limit_that_add_up_past_it_get_413(
    start_server: Callable[..., str],
) -> None:
    """A chunked body whose chunks are each under the limit but whose sum is over it: 413,
    and the server closes the connection."""
    url = start_server(settings=ServerSettings(provider="echo", max_body_bytes=1000))
    chunks = [b'{"input": "', *([b"a" * 400] * 5), b'"}']
    answer = rawhttp.exchange(url, _chunked("/v1/prompt", chunks))
    assert rawhttp.status_of(answer) == 413
    assert b"connection: close" in answer.lower()


def test_a_declared_oversized_body_gets_413_and_close(start_server: Callable[..., str]) -> None:
    """A Content-Length over the limit is refused before the body, and the connection closed."""
    url = start_server(settings=ServerSettings(provider="echo", max_body_bytes=1000))
    raw = rawhttp.request("POST", "/v1/prompt", "127.0.0.1", body=b"x" * 2000)
    answer = rawhttp.exchange(url, raw.replace(b"Connection: close\r\n", b""))
    assert rawhttp.status_of(answer) == 413


# --- 11. redirects, HEAD /health -------------------------------------------------------------


def test_root_leads_to_the_dashboard_relatively(start_server: Callable[..., str]) -> None:
    """`/` redirects to `/dashboard` with a relative Location and nothing of the query."""
    url = start_server()
    answer = httpx.get(url + "/?token=secret-token-1", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/dashboard"


def test_the_dashboard_with_a_slash_is_served_not_redirected(
    start_server: Callable[..., str],
) -> None:
    """`/dashboard/?token=…` is the dashboard itself: no redirect echoes the Host or token."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    answer = httpx.get(url + f"/dashboard/?token={TOKEN}", follow_redirects=False)
    assert answer.status_code == 200 and "location" not in answer.headers


def test_head_health_is_answered(start_server: Callable[..., str]) -> None:
    """`HEAD /health` answers 200 (load balancers probe with HEAD)."""
    url = start_server()
    assert httpx.head(url + "/health").status_code == 200


# --- auth edge cases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "presented", [TOKEN[:-1], TOKEN[:3], TOKEN + "x", "", " "], ids=repr
)
@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_near_miss_tokens_are_refused(
    start_server: Callable[..., str], header: str, presented: str
) -> None:
    """A prefix of the token, the token plus a character, and an empty `Bearer ` are 401."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    value = f"Bearer {presented}" if header == "authorization" else presented
    raw = rawhttp.request("GET", "/v1/status", "127.0.0.1", f"{header}: {value}")
    assert rawhttp.status_of(rawhttp.exchange(url, raw)) == 401


def test_a_browser_without_the_token_gets_a_token_page(start_server: Callable[..., str]) -> None:
    """`/dashboard` opened by a browser (Accept: text/html) without the token: an HTML page
    with a token form, status 401; an API client still gets JSON."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    page = httpx.get(url + "/dashboard", headers={"accept": "text/html,*/*"})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert 'name="token"' in page.text and TOKEN not in page.text
    api = httpx.get(url + "/dashboard")
    assert api.status_code == 401 and api.json()["error"]["type"] == "unauthorized"


# --- /health -----------------------------------------------------------------------------------


class _Down:
    name = "down"
    default_model = "down"

    async def complete(self, request: Any, *, timeout_s: float) -> Any:
        from orchestrator.errors import ProviderError

        raise ProviderError(self.name, "upstream down", status=500, retryable=True)

    async def stream(self, request: Any, *, timeout_s: float) -> Any:
        raise NotImplementedError
        yield

    async def aclose(self) -> None:
        return None


def test_health_is_503_when_no_provider_can_serve(start_server: Callable[..., str]) -> None:
    """With the only provider's breaker open, /health says degraded with status 503."""
    tunables = Tunables(breaker_failure_threshold=2, retry_max_attempts=1)
    url = start_server(pipeline=echo_pipeline(_Down(), tunables=tunables))
    for _ in range(3):
        httpx.post(url + "/v1/prompt", json={"input": "x"})
    health = httpx.get(url + "/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"


def test_health_hides_details_from_callers_without_the_token(
    start_server: Callable[..., str],
) -> None:
    """With API_KEY set, /health answers anyone, but lists providers only to token holders."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    anonymous = httpx.get(url + "/health").json()
    assert anonymous == {"status": "ok"}
    known = httpx.get(url + "/health", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert known["providers"] == {"echo": "closed"}
