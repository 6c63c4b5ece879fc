"""Benchmark the HTTP server's added latency on the Anthropic Messages API, in one run.

    .venv/bin/python benchmarks/http.py [--rates 100,500,1000] [--duration 6] [--warmup 1]
        [--quick] [--semantic-dedup] [--quiet-retries 2]

Three processes, each pinned to CPUs with `taskset` (placement printed):
- a fake upstream speaking the Anthropic Messages API, answering after a fixed 50 ms (raw
  asyncio protocols: it shares a CPU with the load generator and must not be what is slow);
- the server under test: `create_app` over a pipeline whose one worker is the real
  `AnthropicWorker` (over its pooled `HttpClient`) pointed at the fake upstream, served with the
  uvicorn configuration `orchestrator serve` uses (uvloop, httptools), access log off;
  semantic dedup off unless `--semantic-dedup` (every prompt here is distinct: it would only
  add an embedding per request);
- an open-loop load generator (one aiohttp session, its GC off for its one run so that it
  never pauses while timing) sending `POST /v1/messages` at a fixed rate with distinct
  prompts (so neither dedup nor the cache helps).

For each rate the same load goes straight to the upstream, then through the server. Latency is
measured from each request's scheduled send time (so a stalled sender cannot hide queueing).
Added latency = server minus direct, percentile by percentile. A rate is held when every
request through the server got a 200 and the added p99 stayed under 100 ms (no queue built up);
between the highest rate held and the lowest not held, a few bisection steps narrow it down.
The machine may be shared: a rate during which other processes kept either CPU more than 3%
busy is measured again, up to `--quiet-retries` times, and the quietest try kept (every try is
printed, with how busy other processes kept each CPU).
Streamed requests (`"stream": true`, the upstream's first event 50 ms in) run at
`--stream-rate` the same way: the time to the first byte of the body the server adds, and the
time to the whole answer. The server's CPU time per request, and how busy its CPU was with
other processes, are reported too (from /proc), split by layer: a server with an EchoWorker
(everything but the provider) and, in one process without sockets, the ASGI app called
directly and the pipeline alone, so uvicorn and the sockets, the app (middleware, routing,
JSON, validation), the pipeline and the AnthropicWorker with its HTTP client each get a
figure. Last, the floor of this stack on this machine: a bare pass-through (a plain ASGI app
on the same uvicorn, forwarding bytes over one aiohttp session, no features) at 1000 req/s,
its added latency and CPU per request beside the server's, so a run on a slower or busier
machine can be read against its own floor. The last line is one JSON object with the headline
figures. `--quick` is a smoke run.

Where the CPU went before the lean request path (issue 14; cProfile of the server process under
this load, shares of the profiled time of ~1.1 ms per request): ~55% under the AnthropicWorker
(SDK request building and models ~9%, httpx2's objects ~19%, aiohttp ~12%), ~20% FastAPI and
Starlette (dependency solving for three headers ~10%, the route walk, an OpenTelemetry check
per request), ~4% uvicorn, ~7% the pipeline. orchestrator/README.md, "Performance", says what
changed and what each change saved.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's `http` package; run as a script, its folder
# would come first on sys.path and shadow it for every import below (aiohttp, asyncio, ...).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

UPSTREAM_LATENCY_S = 0.050
STREAM_DELTAS = 4  # text deltas in a streamed answer, STREAM_DELTA_GAP_S apart
STREAM_DELTA_GAP_S = 0.001
REQUEST_TIMEOUT_S = 10.0
API_KEY = "bench-upstream-key"
# A rate is held when no request failed and no queue built up: added p99 stays under this.
HELD_MAX_ADDED_P99_MS = 100.0
# The machine is shared: a run during which other processes kept a CPU busier than this is
# measured again (the quietest of 1 + `--quiet-retries` tries is kept; every try is printed).
QUIET_MAX_OTHER_LOAD = 0.03


# -- roles (each runs in its own process) -------------------------------------------------------


def run_upstream() -> None:
    """A minimal Anthropic Messages API: fixed 50 ms, then a fixed answer with usage.

    Raw asyncio protocols with httptools' request parser, not a web framework: the upstream
    shares its CPU with the load generator, and both must keep their schedule for the tails
    to be the server's. With aiohttp's server here, that CPU was 48% busy at 1,000/s (34-45%
    with this one), and the direct baseline's own p99 ranged over 54-90 ms between runs.
    """
    import httptools
    import uvloop

    counter = 0

    def answer(model: str) -> bytes:
        nonlocal counter
        counter += 1
        return json.dumps({
            "id": f"msg_bench_{counter}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Backpressure slows producers to match."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 8},
        }).encode()

    def events(model: str) -> list[bytes]:
        """The Messages event sequence, each event as one HTTP chunk."""
        nonlocal counter
        counter += 1
        message = {
            "id": f"msg_bench_{counter}", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        }
        sequence: list[dict[str, Any]] = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
        ]
        sequence += [
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": f"part {i} "}}
            for i in range(STREAM_DELTAS)
        ]
        sequence += [
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": 8}},
            {"type": "message_stop"},
        ]
        out = []
        for data in sequence:
            event = f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()
            out.append(b"%x\r\n%s\r\n" % (len(event), event))
        return out

    class Messages(asyncio.Protocol):
        """One client connection: requests parsed as they come, each answered 50 ms later."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.loop = asyncio.get_running_loop()

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_begin(self) -> None:
            self.body = []

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            request = json.loads(b"".join(self.body))
            model = request.get("model", "claude-bench")
            if request.get("stream"):
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                self.loop.call_later(UPSTREAM_LATENCY_S, self.send_events, events(model), 0)
            else:
                self.loop.call_later(UPSTREAM_LATENCY_S, self.send_answer, answer(model))

        def send_answer(self, body: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )

        def send_events(self, chunks: list[bytes], delta: int) -> None:
            """Up to and including the next text delta at once; the next delta after a gap."""
            if self.transport.is_closing():
                return
            while chunks:
                chunk = chunks.pop(0)
                self.transport.write(chunk)
                if b"text_delta" in chunk and chunks and b"text_delta" in chunks[0]:
                    self.loop.call_later(STREAM_DELTA_GAP_S, self.send_events, chunks, delta + 1)
                    return
            self.transport.write(b"0\r\n\r\n")

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            Messages, "127.0.0.1", 0, backlog=4096
        )
        port = server.sockets[0].getsockname()[1]
        print(f"READY http://127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    uvloop.run(main())


def _semantic_dedup() -> bool:
    """Whether the server under test runs semantic dedup (the server's default, on). Off here
    unless `--semantic-dedup`: every prompt of this load is distinct, so it would add one
    embedding (several ms of CPU) per request and measure the embedding model, not the
    gateway. The roles learn it from the environment their parent sets."""
    return os.environ.get("BENCH_SEMANTIC_DEDUP") == "1"


def run_server(upstream_url: str, concurrency: int, worker: str) -> None:
    """The server under test, with the real AnthropicWorker pointed at `upstream_url`.

    Logging goes to stderr at WARNING: a production server logs problems, not a line per
    request (and without a handler installed first, the `mcp` SDK would install a rich one at
    INFO that renders every upstream request).
    """
    import logging

    import uvloop

    logging.basicConfig(level=logging.WARNING)

    from orchestrator import PipelineConfig, Tunables
    from orchestrator.assembly import build_pipeline
    from orchestrator.server import ServerTask, create_app
    from orchestrator.settings import ServerSettings

    if worker == "echo":  # the same server and pipeline, minus the SDK and the upstream
        settings = ServerSettings(
            provider="echo", model="claude-bench", port=0, semantic_dedup=_semantic_dedup()
        )
    else:
        settings = ServerSettings(
            provider="anthropic",
            anthropic_api_key=API_KEY,
            anthropic_base_url=upstream_url,
            model="claude-bench",
            port=0,
            semantic_dedup=_semantic_dedup(),
        )
    config = PipelineConfig(tunables=Tunables(inference_concurrency=concurrency))

    async def main() -> None:
        app = create_app(build_pipeline(settings, config), settings=settings)
        async with ServerTask(app) as url:
            print(f"READY {url}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    uvloop.run(main())


def run_bare(upstream_url: str) -> None:
    """The floor of this stack, for comparison: a bare pass-through with no features at all,
    a plain ASGI app on the same uvicorn configuration (uvloop, httptools, access log off)
    forwarding each `POST /v1/messages` body to the upstream over one aiohttp session and its
    answer back."""
    import aiohttp
    import uvicorn
    import uvloop

    async def main() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        target = upstream_url + "/v1/messages"

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = {k.decode(): v.decode() for k, v in scope["headers"]
                       if k in (b"x-api-key", b"anthropic-version", b"content-type")}
            async with session.post(target, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode())]})
            await send({"type": "http.response.body", "body": answer})

        config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", http="httptools",
                                access_log=False, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"READY http://127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.should_exit = True
        await serving
        await session.close()

    uvloop.run(main())


def run_layers(requests: int) -> None:
    """CPU per request inside one process, no sockets: the pipeline alone (`Pipeline.infer`
    with an EchoWorker), and `POST /v1/messages` through the ASGI app (middleware, route, JSON,
    pipeline) called directly. Prints one JSON object (microseconds per request)."""
    import logging

    import uvloop

    logging.basicConfig(level=logging.WARNING)

    from orchestrator import InferenceRequest, PipelineConfig, Tunables
    from orchestrator.assembly import build_pipeline
    from orchestrator.server import create_app
    from orchestrator.settings import ServerSettings

    settings = ServerSettings(
        provider="echo", model="claude-bench", port=0, semantic_dedup=_semantic_dedup()
    )
    config = PipelineConfig(tunables=Tunables(inference_concurrency=256))
    pipeline = build_pipeline(settings, config)
    app = create_app(pipeline, settings=settings, start_pipeline=False)
    batch = 50  # requests in flight at once: under the pipeline's queue capacity

    async def through_app(i: int) -> None:
        body = json.dumps(
            {
                "model": "claude-bench",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"layers {i}: explain backpressure"}],
            }
        ).encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/messages",
            "raw_path": b"/v1/messages", "query_string": b"", "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                (b"x-api-key", API_KEY.encode()), (b"anthropic-version", b"2023-06-01"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"POST /v1/messages answered {statuses}")

    async def direct(i: int) -> None:
        await pipeline.infer(InferenceRequest(f"layers {i}: explain backpressure"))

    async def cpu_us(call: Any, offset: int) -> float:
        best = float("inf")
        for rep in range(3):  # best of three: other processes only ever add
            started = time.process_time()
            for b in range(0, requests, batch):
                first = offset + rep * requests + b
                await asyncio.gather(*(call(first + i) for i in range(batch)))
            best = min(best, (time.process_time() - started) * 1e6 / requests)
        return best

    async def main() -> dict[str, float]:
        async with pipeline:
            await cpu_us(direct, -10**7)  # warm both paths up
            await cpu_us(through_app, -2 * 10**7)
            return {
                "pipeline_us": await cpu_us(direct, 0),
                "app_us": await cpu_us(through_app, 10**7),
            }

    print(json.dumps(uvloop.run(main())), flush=True)


def run_load(
    url: str, rate: float, duration_s: float, warmup_s: float, tag: str, stream: bool, out: str
) -> None:
    """Open-loop load at `rate` req/s for `warmup_s + duration_s`; writes to the file `out` a
    JSON result with the latencies (ms) of requests scheduled after the warm-up, and with
    `stream` (`"stream": true` requests) each one's time to the first byte of its body too.
    A file, not stdout: at 2,000/s the result is hundreds of kB, and once a run's result
    reached its parent cut at 160 kB through the pipe."""
    import gc

    import aiohttp
    import uvloop

    # The instrument must not pause: a collection in the load generator delays the
    # completions it is timing (full ones walk every task it holds, tens of ms at 2,000/s).
    # It lives for one run, so its garbage can wait until it exits.
    gc.collect()
    gc.freeze()
    gc.disable()
    headers = {
        "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        first_bytes: list[float] = []
        errors: dict[str, int] = {}
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            total = int((warmup_s + duration_s) * rate)
            measured_from = int(warmup_s * rate)
            # perf_counter, not loop.time(): uvloop's clock only has millisecond resolution.
            clock = time.perf_counter
            start = clock() + 0.05
            tasks = []
            max_lag_s = 0.0

            async def one(i: int, scheduled: float) -> None:
                body = {
                    "model": "claude-bench",
                    "max_tokens": 64,
                    "messages": [
                        {"role": "user", "content": f"{tag} prompt {i}: explain backpressure"}
                    ],
                    "stream": stream,
                }
                first_byte_ms = None
                try:
                    async with session.post(
                        url + "/v1/messages", data=json.dumps(body), headers=headers
                    ) as response:
                        if stream:
                            await response.content.readany()
                            first_byte_ms = (clock() - scheduled) * 1000
                        await response.read()
                        status = response.status
                except Exception as exc:
                    status = -1
                    kind = type(exc).__name__
                else:
                    kind = f"HTTP {status}"
                elapsed_ms = (clock() - scheduled) * 1000
                if i < measured_from:
                    return
                if status == 200:
                    latencies.append(elapsed_ms)
                    if first_byte_ms is not None:
                        first_bytes.append(first_byte_ms)
                else:
                    errors[kind] = errors.get(kind, 0) + 1

            for i in range(total):
                scheduled = start + i / rate
                delay = scheduled - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    max_lag_s = max(max_lag_s, -delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
            await asyncio.gather(*tasks)
        return {
            "latencies_ms": latencies,
            "first_byte_ms": first_bytes,
            "errors": errors,
            "sent": total - measured_from,
            "max_send_lag_ms": max_lag_s * 1000,
        }

    Path(out).write_text(json.dumps(uvloop.run(main())))


# -- orchestration -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


class Placement:
    """Which CPUs each process runs on (no pinning when taskset or a second CPU is missing)."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.enabled = shutil.which("taskset") is not None and len(cpus) >= 2
        if self.enabled:
            # The server under test gets a CPU of its own; the upstream and the load generator
            # share the other one (they serve the direct baseline the same way).
            self.server = str(cpus[-1])
            self.others = ",".join(str(c) for c in cpus[:-1])
        else:
            self.server = self.others = ",".join(str(c) for c in cpus)

    def command(self, cpus: str, *args: str) -> list[str]:
        prefix = ["taskset", "-c", cpus] if self.enabled else []
        return [*prefix, sys.executable, __file__, *args]

    def describe(self) -> str:
        if not self.enabled:
            return f"no pinning (taskset or a second CPU missing); CPUs {self.server}"
        return (
            f"server under test on CPU {self.server}; fake upstream and load generator on "
            f"CPU {self.others} (taskset -c)"
        )


def start_role(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"{command} did not start: {line!r}")
    return process, line.removeprefix("READY ")


def stop_role(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cpu_busy_seconds(cpus: str) -> float:
    """Busy (non-idle) seconds so far of the CPUs listed in `cpus` ("1" or "0,1"), all
    processes together, from /proc/stat."""
    wanted = {f"cpu{c}" for c in cpus.split(",")}
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name in wanted:
            ticks = [int(v) for v in values]
            busy += sum(ticks[:8]) - ticks[3] - ticks[4]  # everything but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_load_cpu(upstream: subprocess.Popen[str]) -> float:
    """CPU seconds the benchmark's own processes on the load CPUs used so far: the upstream,
    and the load generators run and waited for (they are this process's children)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds(upstream.pid) + children.ru_utime + children.ru_stime


def _other_load(row: dict[str, Any]) -> float:
    return max(row["server_cpu_other_load"], row.get("load_cpu_other_load", 0.0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    placement: Placement,
    url: str,
    rate: float,
    duration_s: float,
    warmup_s: float,
    tag: str,
    *,
    stream: bool = False,
) -> dict[str, Any]:
    args = ["--role", "load", "--url", url, "--rate", str(rate), "--duration", str(duration_s)]
    args += ["--warmup", str(warmup_s), "--tag", tag, *(["--stream"] if stream else [])]
    with tempfile.TemporaryDirectory(prefix="bench-http-") as folder:
        out = Path(folder) / "load.json"
        subprocess.run(
            placement.command(placement.others, *args, "--out", str(out)), check=True, env=_env()
        )
        result: dict[str, Any] = json.loads(out.read_text())
    result["latencies_ms"].sort()
    result["first_byte_ms"].sort()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["upstream", "server", "load", "layers", "bare"])
    parser.add_argument("--url", default="")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--rates", default="100,500,1000,1500,2000")
    parser.add_argument(
        "--stream-rate", type=float, default=500.0, help="rate of the streamed (SSE) runs"
    )
    parser.add_argument("--stream", action="store_true", help="load role: stream=true requests")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 100 and 500/s, 2 s each, no probes"
    )
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default="", help="load role: the file its JSON result goes to")
    parser.add_argument("--worker", choices=["anthropic", "echo"], default="anthropic")
    parser.add_argument(
        "--probe-steps", type=int, default=2, help="bisection steps to locate the max rate"
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="the pipeline's inference concurrency"
    )
    parser.add_argument(
        "--quiet-retries", type=int, default=2,
        help="measure a rate again this many times at most while other processes are busy",
    )
    parser.add_argument(
        "--semantic-dedup", action="store_true",
        help="run the server with semantic dedup on (an embedding per distinct prompt)",
    )
    args = parser.parse_args()
    if args.semantic_dedup:
        os.environ["BENCH_SEMANTIC_DEDUP"] = "1"  # the server and layers roles inherit it
    if args.quick:
        args.rates, args.duration, args.warmup, args.probe_steps = "100,500", 2.0, 0.5, 0
    if args.role == "upstream":
        return run_upstream()
    if args.role == "server":
        return run_server(args.url, args.concurrency, args.worker)
    if args.role == "bare":
        return run_bare(args.url)
    if args.role == "load":
        return run_load(
            args.url, args.rate, args.duration, args.warmup, args.tag, args.stream, args.out
        )
    if args.role == "layers":
        # As many requests as the EchoWorker run at 500/s sends.
        return run_layers(max(50, round(500 * (args.warmup + args.duration) / 50) * 50))

    rates = [float(r) for r in args.rates.split(",")]
    placement = Placement()
    print("== HTTP server overhead: POST /v1/messages, fake Anthropic upstream at 50 ms ==")
    print(f"placement: {placement.describe()}")
    print("semantic dedup: " + ("on (--semantic-dedup)" if _semantic_dedup() else
          "off (the gateway path alone; --semantic-dedup adds an embedding per prompt)"))
    print(
        f"each run: {args.warmup:g} s warm-up + {args.duration:g} s measured, open loop, "
        f"distinct prompts; pipeline inference_concurrency={args.concurrency}; "
        "server logging at WARNING"
    )
    print(
        f"held = every request answered 200 and added p99 <= {HELD_MAX_ADDED_P99_MS:g} ms "
        "(no queue building up)"
    )
    upstream, upstream_url = start_role(placement.command(placement.others, "--role", "upstream"))
    server, server_url = start_role(
        placement.command(
            placement.server,
            "--role",
            "server",
            "--url",
            upstream_url,
            "--concurrency",
            str(args.concurrency),
        )
    )
    rows: dict[float, dict[str, Any]] = {}

    def measure_once(rate: float, attempt: int) -> dict[str, Any]:
        tag = f"r{rate:g}a{attempt}"  # distinct prompts every try: the cache must not answer
        # The load generator's CPU is watched across both runs: the direct one is the baseline.
        load_busy0, load_own0 = cpu_busy_seconds(placement.others), _own_load_cpu(upstream)
        load_wall0 = time.perf_counter()
        direct = load(placement, upstream_url, rate, args.duration, args.warmup, tag + "d")
        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
        busy0 = cpu_busy_seconds(placement.server)
        through = load(placement, server_url, rate, args.duration, args.warmup, tag + "s")
        server_cpu_s = cpu_seconds(server.pid) - cpu0
        wall_s = time.perf_counter() - wall0
        # Time the CPUs spent on anything else: other processes sharing the machine.
        others_s = max(0.0, cpu_busy_seconds(placement.server) - busy0 - server_cpu_s)
        load_others_s = max(
            0.0,
            cpu_busy_seconds(placement.others) - load_busy0
            - (_own_load_cpu(upstream) - load_own0),
        )
        row = summarise(rate, direct, through, server_cpu_s, wall_s, args)
        row["server_cpu_other_load"] = others_s / wall_s
        row["load_cpu_other_load"] = load_others_s / (time.perf_counter() - load_wall0)
        return row

    def measure(rate: float, note: str = "") -> dict[str, Any]:
        """One rate's row; measured again (up to `--quiet-retries` times) while other processes
        kept either CPU more than QUIET_MAX_OTHER_LOAD busy, and the quietest try kept (each
        try is printed: nothing measured is hidden)."""
        tries = []
        retries = 0 if placement.server == placement.others else args.quiet_retries
        for attempt in range(1 + retries):
            tries.append(measure_once(rate, attempt))
            if _other_load(tries[-1]) <= QUIET_MAX_OTHER_LOAD:
                break
            again = "measuring again" if attempt < retries else "no tries left"
            print(format_row(tries[-1]) + f"  (other processes busy: {again})", flush=True)
        rows[rate] = row = min(tries, key=_other_load)
        if len(tries) > 1:
            note += f"  (kept: the quietest of {len(tries)} tries)"
        print(format_row(row) + note, flush=True)
        return row

    try:
        # First calls pay one-off costs (lazy imports in the SDK, connection set-up): pay them
        # before anything is measured.
        load(placement, server_url, 100, 2 * args.warmup, 0, "warm-server")
        load(placement, upstream_url, 100, 2 * args.warmup, 0, "warm-direct")
        for rate in rates:
            measure(rate)
        # Between the highest rate held and the lowest not held, bisect a few steps.
        for _ in range(args.probe_steps):
            held_rates = [r for r, row in rows.items() if row["held"]]
            failed_rates = [r for r, row in rows.items() if not row["held"]]
            if not held_rates or not failed_rates:
                break
            low = max(held_rates)
            high = min([r for r in failed_rates if r > low], default=None)
            if high is None or high - low <= 50:
                break
            measure(round((low + high) / 2 / 25) * 25, "  (probe)")
        streamed = streaming(placement, upstream_url, server_url, args)
    finally:
        stop_role(server)

    breakdown(placement, rows.get(500.0), args)
    floor = bare_passthrough(placement, upstream_url, rows.get(1000.0), args)
    stop_role(upstream)

    held = [rate for rate, row in rows.items() if row["held"]]
    cpu_row = rows.get(1000.0) or rows.get(500.0) or {}
    cpu_ms = cpu_row.get("server_cpu_ms_per_request")
    headline = {
        "overhead_p50_ms_500rps": _round(rows.get(500.0, {}).get("overhead_p50_ms")),
        "overhead_p99_ms_500rps": _round(rows.get(500.0, {}).get("overhead_p99_ms")),
        "overhead_p99_ms_1000rps": _round(rows.get(1000.0, {}).get("overhead_p99_ms")),
        "overhead_p99_ms_1500rps": _round(rows.get(1500.0, {}).get("overhead_p99_ms")),
        "max_rps": max(held) if held else 0,
        "ttfb_overhead_ms_p50": _round(streamed["ttfb_overhead_ms_p50"]),
        # at 1000/s (500/s when that rate was not run)
        "server_cpu_us_per_request": None if cpu_ms is None else round(cpu_ms * 1000, 1),
        "bare_overhead_p99_ms_1000rps": _round(floor.get("overhead_p99_ms")),
        "bare_cpu_us_per_request": _round(floor.get("cpu_us_per_request")),
    }
    print(json.dumps(headline))


def bare_passthrough(
    placement: Placement, upstream_url: str, row: dict[str, Any] | None,
    args: argparse.Namespace,
) -> dict[str, float]:
    """The bare pass-through (`run_bare`) at 1000 req/s, the same way as the server: what
    this machine and this stack (uvicorn, uvloop, aiohttp) cost with no features at all, so
    a run on a slower or busier machine can be read against its own floor."""
    if row is None:
        return {}
    bare, bare_url = start_role(
        placement.command(placement.server, "--role", "bare", "--url", upstream_url)
    )
    try:
        load(placement, bare_url, 100, 2 * args.warmup, 0, "warm-bare")
        direct = load(placement, upstream_url, 1000, args.duration, args.warmup, "bare-d")
        cpu0 = cpu_seconds(bare.pid)
        through = load(placement, bare_url, 1000, args.duration, args.warmup, "bare-s")
        cpu_us = (cpu_seconds(bare.pid) - cpu0) * 1e6 / ((args.warmup + args.duration) * 1000)
    finally:
        stop_role(bare)
    out = {"cpu_us_per_request": cpu_us}
    for q in (50, 99):
        out[f"overhead_p{q}_ms"] = percentile(through["latencies_ms"], q) - percentile(
            direct["latencies_ms"], q
        )
    server_us = row["server_cpu_ms_per_request"] * 1000
    print(
        f"bare pass-through (uvicorn + one aiohttp session, no features) at 1000 req/s: added "
        f"p50/p99 {out['overhead_p50_ms']:+.2f}/{out['overhead_p99_ms']:+.2f} ms, "
        f"{cpu_us:.0f} us/request, errors {sum(through['errors'].values())}; the server's "
        f"{server_us:.0f} us/request is {server_us / cpu_us:.2f}x that"
    )
    return out


def streaming(
    placement: Placement, upstream_url: str, server_url: str, args: argparse.Namespace
) -> dict[str, float]:
    """Streamed requests (`"stream": true`) at `--stream-rate`, straight to the upstream and
    through the server: the time to the first byte of the body the server adds (the upstream
    sends its first event 50 ms in, so this is how long the gateway holds the stream back),
    and the time to the whole answer."""
    rate = args.stream_rate
    tag = f"s{rate:g}"
    direct = load(placement, upstream_url, rate, args.duration, args.warmup, tag + "d", stream=True)
    through = load(
        placement, server_url, rate, args.duration, args.warmup, tag + "s", stream=True
    )
    out: dict[str, float] = {}
    for q in (50, 99):
        out[f"ttfb_overhead_ms_p{q}"] = percentile(through["first_byte_ms"], q) - percentile(
            direct["first_byte_ms"], q
        )
        out[f"overhead_ms_p{q}"] = percentile(through["latencies_ms"], q) - percentile(
            direct["latencies_ms"], q
        )
    errors = sum(through["errors"].values())
    print(
        f"{rate:>6g} req/s streamed | first byte direct p50/p99 "
        f"{percentile(direct['first_byte_ms'], 50):.2f}/"
        f"{percentile(direct['first_byte_ms'], 99):.2f} ms, added "
        f"{out['ttfb_overhead_ms_p50']:+.2f}/{out['ttfb_overhead_ms_p99']:+.2f} ms | whole "
        f"answer added {out['overhead_ms_p50']:+.2f}/{out['overhead_ms_p99']:+.2f} ms | "
        f"errors direct {sum(direct['errors'].values())} server {errors} "
        f"{through['errors'] or ''}",
        flush=True,
    )
    return out


def breakdown(placement: Placement, row: dict[str, Any] | None, args: argparse.Namespace) -> None:
    """Where the server's CPU goes at 500 req/s, by layer: the same server with an EchoWorker
    (everything but the provider), and, in one process without sockets, the ASGI app called
    directly and the pipeline alone (`run_layers`). Differences give uvicorn and the sockets,
    the app (middleware, routing, JSON, validation) and the AnthropicWorker with its HTTP
    client."""
    if row is None:
        return
    echo, echo_url = start_role(
        placement.command(placement.server, "--role", "server", "--worker", "echo")
    )
    try:
        load(placement, echo_url, 100, 2 * args.warmup, 0, "warm-echo")
        cpu0 = cpu_seconds(echo.pid)
        result = load(placement, echo_url, 500, args.duration, args.warmup, "echo")
        echo_cpu_us = (cpu_seconds(echo.pid) - cpu0) * 1e6 / ((args.warmup + args.duration) * 500)
    finally:
        stop_role(echo)
    layer_args = ["--role", "layers", "--duration", str(args.duration)]
    layer_args += ["--warmup", str(args.warmup)]
    out = subprocess.run(
        placement.command(placement.server, *layer_args),
        capture_output=True, text=True, check=True, env=_env(),
    ).stdout
    layers = json.loads(out.strip().splitlines()[-1])
    total_us = row["server_cpu_ms_per_request"] * 1000
    lat = result["latencies_ms"]
    print(
        f"where the server's CPU goes at 500 req/s: {total_us:.0f} us/request in all = "
        f"uvicorn and sockets ~{echo_cpu_us - layers['app_us']:.0f} + app (middleware, routing, "
        f"JSON, validation) ~{layers['app_us'] - layers['pipeline_us']:.0f} + pipeline "
        f"~{layers['pipeline_us']:.0f} + AnthropicWorker and its HTTP client "
        f"~{total_us - echo_cpu_us:.0f} (EchoWorker server: {echo_cpu_us:.0f} us/request, "
        f"latency p50/p99 {percentile(lat, 50):.2f}/{percentile(lat, 99):.2f} ms; app and "
        "pipeline measured in one process without sockets)"
    )


def _round(value: float | None) -> float | None:
    return None if value is None or value != value else round(value, 3)


def summarise(
    rate: float,
    direct: dict[str, Any],
    through: dict[str, Any],
    server_cpu_s: float,
    wall_s: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    row: dict[str, Any] = {"rate": rate}
    for name, result in (("direct", direct), ("server", through)):
        lat = result["latencies_ms"]
        for q in (50, 95, 99):
            row[f"{name}_p{q}_ms"] = percentile(lat, q)
        row[f"{name}_errors"] = sum(result["errors"].values())
        row[f"{name}_error_kinds"] = result["errors"]
        row[f"{name}_max_send_lag_ms"] = result["max_send_lag_ms"]
    for q in (50, 95, 99):
        row[f"overhead_p{q}_ms"] = row[f"server_p{q}_ms"] - row[f"direct_p{q}_ms"]
    requests = (args.warmup + args.duration) * rate
    row["server_cpu_ms_per_request"] = server_cpu_s * 1000 / requests
    row["server_cpu_utilisation"] = server_cpu_s / wall_s  # includes process start-up of load
    row["held"] = (
        row["server_errors"] == 0
        and len(through["latencies_ms"]) == through["sent"]
        and row["overhead_p99_ms"] <= HELD_MAX_ADDED_P99_MS
    )
    return row


def format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['rate']:>6g} req/s | direct p50/p95/p99 {row['direct_p50_ms']:.2f}/"
        f"{row['direct_p95_ms']:.2f}/{row['direct_p99_ms']:.2f} ms | server "
        f"{row['server_p50_ms']:.2f}/{row['server_p95_ms']:.2f}/{row['server_p99_ms']:.2f} ms | "
        f"added {row['overhead_p50_ms']:+.2f}/{row['overhead_p95_ms']:+.2f}/"
        f"{row['overhead_p99_ms']:+.2f} ms | errors direct {row['direct_errors']} server "
        f"{row['server_errors']} {row['server_error_kinds'] or ''} | server CPU "
        f"{row['server_cpu_ms_per_request']:.2f} ms/req ({row['server_cpu_utilisation']:.0%}; "
        f"other processes {row['server_cpu_other_load']:.0%}; on the load's CPU "
        f"{row.get('load_cpu_other_load', 0.0):.0%}) | "
        f"{'held' if row['held'] else 'NOT held'}"
    )


if __name__ == "__main__":
    main()
