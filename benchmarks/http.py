"""Benchmark the HTTP server's added latency on the Anthropic Messages API, in one run.

    .venv/bin/python benchmarks/http.py [--rates 100,500,1000] [--duration 6] [--warmup 1]

Three processes, each pinned to CPUs with `taskset` (placement printed):
- a fake upstream speaking the Anthropic Messages API, answering after a fixed 50 ms;
- the server under test: `create_app` over a pipeline whose one worker is the real
  `AnthropicWorker` (official SDK over aiohttp) pointed at the fake upstream, served with the
  uvicorn configuration `orchestrator serve` uses (uvloop, httptools), access log off;
- an open-loop load generator (one aiohttp session) sending `POST /v1/messages` at a fixed
  rate with distinct prompts (so neither dedup nor the cache helps).

For each rate the same load goes straight to the upstream, then through the server. Latency is
measured from each request's scheduled send time (so a stalled sender cannot hide queueing).
Added latency = server minus direct, percentile by percentile. A rate is held when every
request through the server got a 200 and the added p99 stayed under 100 ms (no queue built up);
between the highest rate held and the lowest not held, a few bisection steps narrow it down.
The server's CPU time per request, and how busy its CPU was with other processes, are reported
too (from /proc), and a run with an EchoWorker splits that CPU time between the HTTP layer plus
pipeline and the AnthropicWorker. The last line is one JSON object with the headline figures.
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
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

UPSTREAM_LATENCY_S = 0.050
REQUEST_TIMEOUT_S = 10.0
API_KEY = "bench-upstream-key"
# A rate is held when no request failed and no queue built up: added p99 stays under this.
HELD_MAX_ADDED_P99_MS = 100.0


# -- roles (each runs in its own process) -------------------------------------------------------


def run_upstream() -> None:
    """A minimal Anthropic Messages API: fixed 50 ms, then a fixed answer with usage."""
    import uvloop
    from aiohttp import web

    counter = 0

    async def messages(request: web.Request) -> web.Response:
        nonlocal counter
        body = await request.json()
        await asyncio.sleep(UPSTREAM_LATENCY_S)
        counter += 1
        answer = {
            "id": f"msg_bench_{counter}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-bench"),
            "content": [{"type": "text", "text": "Backpressure slows producers to match."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 8},
        }
        return web.json_response(answer)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", messages)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"READY http://127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    uvloop.run(main())


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
        settings = ServerSettings(provider="echo", model="claude-bench", port=0)
    else:
        settings = ServerSettings(
            provider="anthropic",
            anthropic_api_key=API_KEY,
            anthropic_base_url=upstream_url,
            model="claude-bench",
            port=0,
        )
    config = PipelineConfig(tunables=Tunables(inference_concurrency=concurrency))

    async def main() -> None:
        app = create_app(build_pipeline(settings, config), settings=settings)
        async with ServerTask(app) as url:
            print(f"READY {url}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    uvloop.run(main())


def run_load(url: str, rate: float, duration_s: float, warmup_s: float, tag: str) -> None:
    """Open-loop load at `rate` req/s for `warmup_s + duration_s`; prints a JSON result with the
    latencies (ms) of requests scheduled after the warm-up."""
    import aiohttp
    import uvloop

    headers = {
        "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
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
                }
                try:
                    async with session.post(
                        url + "/v1/messages", data=json.dumps(body), headers=headers
                    ) as response:
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
            "errors": errors,
            "sent": total - measured_from,
            "max_send_lag_ms": max_lag_s * 1000,
        }

    print(json.dumps(uvloop.run(main())), flush=True)


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    placement: Placement, url: str, rate: float, duration_s: float, warmup_s: float, tag: str
) -> dict[str, Any]:
    args = ["--role", "load", "--url", url, "--rate", str(rate), "--duration", str(duration_s)]
    args += ["--warmup", str(warmup_s), "--tag", tag]
    out = subprocess.run(
        placement.command(placement.others, *args),
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["latencies_ms"].sort()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["upstream", "server", "load"])
    parser.add_argument("--url", default="")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--rates", default="100,500,1000")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--worker", choices=["anthropic", "echo"], default="anthropic")
    parser.add_argument(
        "--probe-steps", type=int, default=2, help="bisection steps to locate the max rate"
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="the pipeline's inference concurrency"
    )
    args = parser.parse_args()
    if args.role == "upstream":
        return run_upstream()
    if args.role == "server":
        return run_server(args.url, args.concurrency, args.worker)
    if args.role == "load":
        return run_load(args.url, args.rate, args.duration, args.warmup, args.tag)

    rates = [float(r) for r in args.rates.split(",")]
    placement = Placement()
    print("== HTTP server overhead: POST /v1/messages, fake Anthropic upstream at 50 ms ==")
    print(f"placement: {placement.describe()}")
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

    def measure(rate: float, note: str = "") -> dict[str, Any]:
        tag = f"r{rate:g}"
        direct = load(placement, upstream_url, rate, args.duration, args.warmup, tag + "d")
        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
        busy0 = cpu_busy_seconds(placement.server)
        through = load(placement, server_url, rate, args.duration, args.warmup, tag + "s")
        server_cpu_s = cpu_seconds(server.pid) - cpu0
        wall_s = time.perf_counter() - wall0
        # Time the server's CPU spent on anything else: other processes sharing the machine.
        others_s = max(0.0, cpu_busy_seconds(placement.server) - busy0 - server_cpu_s)
        rows[rate] = row = summarise(rate, direct, through, server_cpu_s, wall_s, args)
        row["server_cpu_other_load"] = others_s / wall_s
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
    finally:
        stop_role(server)

    breakdown(placement, upstream_url, rows.get(500.0), args)
    stop_role(upstream)

    held = [rate for rate, row in rows.items() if row["held"]]
    headline = {
        "overhead_p50_ms_500rps": _round(rows.get(500.0, {}).get("overhead_p50_ms")),
        "overhead_p99_ms_500rps": _round(rows.get(500.0, {}).get("overhead_p99_ms")),
        "overhead_p99_ms_1000rps": _round(rows.get(1000.0, {}).get("overhead_p99_ms")),
        "max_rps": max(held) if held else 0,
    }
    print(json.dumps(headline))


def breakdown(
    placement: Placement, upstream_url: str, row: dict[str, Any] | None, args: argparse.Namespace
) -> None:
    """Where the server's CPU goes at 500 req/s: the same server and pipeline with an
    EchoWorker (HTTP layer + pipeline only) against the AnthropicWorker run (+ SDK and its
    aiohttp client)."""
    if row is None:
        return
    echo, echo_url = start_role(
        placement.command(placement.server, "--role", "server", "--worker", "echo")
    )
    try:
        load(placement, echo_url, 100, 2 * args.warmup, 0, "warm-echo")
        cpu0 = cpu_seconds(echo.pid)
        result = load(placement, echo_url, 500, args.duration, args.warmup, "echo")
        echo_cpu_ms = (cpu_seconds(echo.pid) - cpu0) * 1000 / ((args.warmup + args.duration) * 500)
    finally:
        stop_role(echo)
    total_ms = row["server_cpu_ms_per_request"]
    lat = result["latencies_ms"]
    print(
        f"where the server's CPU goes at 500 req/s: {total_ms:.2f} ms/request in all; "
        f"{echo_cpu_ms:.2f} ms with an EchoWorker instead (HTTP layer + pipeline; latency "
        f"p50/p99 {percentile(lat, 50):.2f}/{percentile(lat, 99):.2f} ms), so the "
        f"AnthropicWorker (SDK + its aiohttp client) costs about {total_ms - echo_cpu_ms:.2f} "
        "ms/request"
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
        f"other processes {row['server_cpu_other_load']:.0%}) | "
        f"{'held' if row['held'] else 'NOT held'}"
    )


if __name__ == "__main__":
    main()
