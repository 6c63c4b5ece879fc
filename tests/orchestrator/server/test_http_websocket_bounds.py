"""WS /v1/stream's bounds, probed through real sockets: no compression, one prompt at a time
unless asked, ids on every frame, and a client that never reads cannot make the server buffer
without limit."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import rawhttp
from conftest import echo_pipeline
from websockets.sync.client import connect

from orchestrator import Pipeline, PipelineConfig
from orchestrator.request import Completion, InferenceRequest, StreamChunk, Usage
from orchestrator.server import ServerThread, create_app
from orchestrator.server.connection import ConnectionLimits
from orchestrator.server.prompt_api import WS_MAX_CONCURRENCY


class GatedWorker:
    """Streams `"<prompt> done"` once `release` is set; counts who is inside at once."""

    name = "gated"
    default_model = "echo"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        raise NotImplementedError

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        try:
            await asyncio.to_thread(self.release.wait, 30)
            yield StreamChunk(text=f"{request.prompt} done", index=0, finish_reason="stop",
                              usage=Usage(input_tokens=1, output_tokens=1))
        finally:
            with self._lock:
                self.inside -= 1

    async def aclose(self) -> None:
        return None


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    servers: list[ServerThread] = []

    def start(pipeline: Pipeline, *, limits: ConnectionLimits | None = None) -> str:
        server = ServerThread(create_app(pipeline), limits=limits)
        servers.append(server)
        return server.start().replace("http", "ws", 1)

    yield start
    for server in reversed(servers):
        server.stop()


def _frames(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=10)) for _ in range(count)]


def test_compression_is_never_negotiated(serve: Callable[..., str]) -> None:
    """A client offering permessage-deflate gets a plain socket: no extension in the answer."""
    url = serve(echo_pipeline()).replace("ws", "http", 1)
    sock, head = rawhttp.ws_open(
        url, "/v1/stream", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    )
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        assert b"sec-websocket-extensions" not in head.lower()


def test_one_prompt_is_answered_at_a_time_by_default(serve: Callable[..., str]) -> None:
    """Two prompts sent at once: the second reaches the provider only after the first is
    answered, and each frame names its request and the client's own id."""
    worker = GatedWorker()
    url = serve(Pipeline(PipelineConfig(), worker))
    with connect(url + "/v1/stream") as ws:
        ws.send(json.dumps({"input": "first", "id": "a"}))
        ws.send(json.dumps({"input": "second", "id": 2}))
        assert worker.entered.acquire(timeout=10)
        # The second prompt is not read while the first is answered (a bounded wait for
        # something that must not happen).
        assert not worker.entered.acquire(timeout=0.3)
        worker.release.set()
        first, second = _frames(ws, 2)
    assert (first["id"], first["text"]) == ("a", "first done")
    assert (second["id"], second["text"]) == (2, "second done")
    assert first["request_id"] != second["request_id"]
    assert worker.most_inside == 1


def test_concurrency_n_answers_n_prompts_at_once(serve: Callable[..., str]) -> None:
    """`?concurrency=3`: three prompts reach the provider together; frames carry their ids."""
    worker = GatedWorker()
    url = serve(Pipeline(PipelineConfig(), worker))
    with connect(url + "/v1/stream?concurrency=3") as ws:
        for i in range(3):
            ws.send(json.dumps({"input": f"p{i}", "id": f"c{i}"}))
        for _ in range(3):
            assert worker.entered.acquire(timeout=10)
        worker.release.set()
        frames = _frames(ws, 3)
    assert sorted((f["id"], f["text"]) for f in frames) == [
        ("c0", "p0 done"), ("c1", "p1 done"), ("c2", "p2 done")
    ]
    assert worker.most_inside == 3


@pytest.mark.parametrize("value", ["0", str(WS_MAX_CONCURRENCY + 1), "many"])
def test_a_bad_concurrency_is_refused_naming_it(serve: Callable[..., str], value: str) -> None:
    url = serve(echo_pipeline())
    with connect(url + f"/v1/stream?concurrency={value}") as ws:
        frame = json.loads(ws.recv(timeout=5))
        assert frame["error"]["field"] == "concurrency"
        assert str(WS_MAX_CONCURRENCY) in frame["error"]["message"]
        with pytest.raises(Exception, match="1008"):
            ws.recv(timeout=5)


def test_error_frames_carry_the_clients_id(serve: Callable[..., str]) -> None:
    url = serve(echo_pipeline())
    with connect(url + "/v1/stream") as ws:
        ws.send(json.dumps({"input": "x", "max_tokens": 0, "id": "bad-1"}))
        frame = json.loads(ws.recv(timeout=5))
        assert frame["id"] == "bad-1" and frame["error"]["field"] == "max_tokens"
        ws.send('{"input": "x",\n "id": }')
        frame = json.loads(ws.recv(timeout=5))
        assert frame["error"]["field"] == "body" and "line 2, column" in frame["error"]["message"]
        ws.send(b"\x00binary")
        assert "JSON text message" in json.loads(ws.recv(timeout=5))["error"]["message"]


def test_a_client_that_never_reads_is_bounded_and_cut_off(serve: Callable[..., str]) -> None:
    """800 × 1 MB prompts from a client that reads nothing: the server takes in a few
    megabytes (what TCP buffers hold plus a message or two), starts one answer, and once
    the client has read nothing for the stall timeout it is cut off and the answer's
    upstream work ends."""
    pipeline = echo_pipeline()
    url = serve(pipeline, limits=ConnectionLimits(write_stall_timeout_s=1.0))
    prompt = json.dumps({"input": "word " * 200_000, "max_tokens": 1_000_000})  # 1 MB, echoed
    frame = rawhttp.ws_text_frame(prompt)
    sock, head = rawhttp.ws_open(url.replace("ws", "http", 1), "/v1/stream")
    sent = 0
    cut_off = False
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        for _ in range(800):
            try:
                sock.sendall(frame)
            except TimeoutError:
                break  # the server stopped taking more: TCP pushes back
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            sent += len(frame)
        assert sent < 64 * 1024 * 1024, f"the server took in {sent} bytes"
        # The server stopped reading; now it must give up on a client that reads nothing.
        deadline = time.monotonic() + 15
        while not cut_off and time.monotonic() < deadline:
            try:
                sock.sendall(frame)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
    assert cut_off, "the server kept a client that never reads"
    snapshot = pipeline.snapshot()
    assert snapshot.requests_total <= 3
    deadline = time.monotonic() + 10
    while pipeline.snapshot().in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pipeline.snapshot().in_flight == 0
