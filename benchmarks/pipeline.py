"""Benchmark the inference pipeline against calling the worker directly, in the same run.

    .venv/bin/python benchmarks/pipeline.py [--quick]

1. Cost of the pipeline: requests through all five stages with every resilience check active
   (breaker, request and token rate limits, budget, deadline timer, coalescing, cache lookup and
   store, metrics) to a zero-latency EchoWorker, against awaiting the same worker directly:
   (a) one request at a time: added latency p50/p99; (b) 20,000 requests at concurrency 64:
   throughput and p99.
2. Coalescing: 24 seeded simulated agents whose requests overlap like agents sharing a code
   base; upstream calls against requests and against distinct requests.
3. Primitives: ns per breaker check, rate-limit check, dedup check and cache hit, against a
   plain dict lookup.

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable

from orchestrator import (
    EchoWorker,
    InferenceRequest,
    LiveConfig,
    Pipeline,
    PipelineConfig,
    Tunables,
)
from orchestrator.metrics import percentile
from orchestrator.request import Usage
from orchestrator.resilience.breaker import CircuitBreaker
from orchestrator.resilience.cache import CachedAnswer, MemoryCache
from orchestrator.resilience.coalesce import Coalescer, request_key
from orchestrator.resilience.ratelimit import RateLimiter

# Limits high enough never to refuse, so every check runs its full path without throttling.
ACTIVE_CHECKS = Tunables(
    rate_limit_rps=1e9,
    rate_limit_tokens_per_min=1e12,
    inference_concurrency=64,
)


def _config() -> PipelineConfig:
    return PipelineConfig(tunables=ACTIVE_CHECKS, global_budget_usd=1e9, session_budget_usd=1e9)


def _us(ns: float) -> float:
    return ns / 1000


async def _sequential(call: Callable[[InferenceRequest], Awaitable[object]], n: int) -> list[int]:
    latencies = []
    for i in range(n):
        request = InferenceRequest(f"sequential request {i}", session_id=f"s{i % 24}")
        t0 = time.perf_counter_ns()
        await call(request)
        latencies.append(time.perf_counter_ns() - t0)
    return sorted(latencies)


async def _concurrent(
    call: Callable[[InferenceRequest], Awaitable[object]], total: int, concurrency: int, tag: str
) -> tuple[float, list[int]]:
    latencies: list[int] = []
    per_client = total // concurrency

    async def client(c: int) -> None:
        for i in range(per_client):
            request = InferenceRequest(f"{tag} {c}-{i}", session_id=f"agent-{c}")
            t0 = time.perf_counter_ns()
            await call(request)
            latencies.append(time.perf_counter_ns() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return per_client * concurrency / elapsed, sorted(latencies)


async def part1(n_sequential: int, n_concurrent: int, concurrency: int) -> dict[str, float]:
    print("== 1. Cost of the pipeline (zero-latency EchoWorker) ==")
    worker = EchoWorker()

    async def direct(request: InferenceRequest) -> object:
        return await worker.complete(request, timeout_s=60.0)

    async with Pipeline(_config(), EchoWorker()) as pipeline:
        # warm up both paths (imports, caches, branch predictors)
        await _sequential(direct, 500)
        await _sequential(pipeline.infer, 500)
        base = await _sequential(direct, n_sequential)
        piped = await _sequential(pipeline.infer, n_sequential)
        base_p50, base_p99 = percentile(base, 50), percentile(base, 99)
        pipe_p50, pipe_p99 = percentile(piped, 50), percentile(piped, 99)
        added_p50, added_p99 = pipe_p50 - base_p50, pipe_p99 - base_p99
        print(f"(a) one at a time, {n_sequential} requests")
        print(f"    direct   p50 {_us(base_p50):8.1f} us   p99 {_us(base_p99):8.1f} us")
        print(f"    pipeline p50 {_us(pipe_p50):8.1f} us   p99 {_us(pipe_p99):8.1f} us")
        print(f"    added    p50 {_us(added_p50):8.1f} us   p99 {_us(added_p99):8.1f} us")

        base_rps, base_lat = await _concurrent(direct, n_concurrent, concurrency, "direct")
        pipe_rps, pipe_lat = await _concurrent(
            pipeline.infer, n_concurrent, concurrency, "concurrent"
        )
        snapshot = pipeline.snapshot()
    pipe_p99_c64 = percentile(pipe_lat, 99)
    print(f"(b) {n_concurrent} requests at concurrency {concurrency}")
    print(f"    direct   {base_rps:10,.0f} req/s   p99 {_us(percentile(base_lat, 99)):8.1f} us")
    print(f"    pipeline {pipe_rps:10,.0f} req/s   p99 {_us(pipe_p99_c64):8.1f} us")
    print(f"    pipeline / direct throughput: {pipe_rps / base_rps:.3f}x")
    print(
        f"    pipeline saw {snapshot.upstream_calls} upstream calls, "
        f"{snapshot.errors_total} errors, {snapshot.shed_total} sheds"
    )
    return {
        "overhead_p50_us_c1": round(_us(added_p50), 1),
        "overhead_p99_us_c1": round(_us(added_p99), 1),
        "throughput_rps": round(pipe_rps),
        "p99_us_c64": round(_us(pipe_p99_c64), 1),
        "direct_throughput_rps": round(base_rps),
    }


async def part2(agents: int, steps: int, seed: int) -> dict[str, int]:
    print(f"\n== 2. Coalescing: {agents} agents sharing a code base, seed {seed} ==")
    rng = random.Random(seed)
    files = [f"src/module_{i}.py" for i in range(40)]
    asks = ["Summarise", "List the public functions of", "Find bugs in", "Write tests for"]
    # Agents move through the code base together in phases: in each phase they look at a few
    # hot files, so identical questions come in bursts from several agents at once.
    plan: list[list[str]] = [[] for _ in range(agents)]
    for _ in range(steps // 4):
        hot = rng.sample(files, 3)
        for agent in range(agents):
            for _ in range(4):
                plan[agent].append(f"{rng.choice(asks)} {rng.choice(hot)}")
    worker = EchoWorker(latency_s=0.005)

    async def agent(pipeline: Pipeline, agent_id: int) -> None:
        for prompt in plan[agent_id]:
            await pipeline.infer(InferenceRequest(prompt, session_id=f"agent-{agent_id}"))
            await asyncio.sleep(rng.random() * 0.002)  # think time between turns

    async with Pipeline(_config(), worker) as pipeline:
        await asyncio.gather(*(agent(pipeline, a) for a in range(agents)))
        snapshot = pipeline.snapshot()
    requests = sum(len(p) for p in plan)
    distinct = len({prompt for p in plan for prompt in p})
    print(f"    requests {requests}, distinct {distinct}, upstream calls {worker.calls}")
    print(f"    upstream / requests: {worker.calls / requests:.3f}")
    print(f"    upstream / distinct: {worker.calls / distinct:.3f}")
    print(
        f"    served by in-flight coalescing {snapshot.dedup_hits}, by cache {snapshot.cache_hits}"
    )
    return {"upstream_calls": worker.calls, "distinct_requests": distinct, "requests": requests}


def _ns_per_op(fn: Callable[[], object], loops: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / loops)
    return best


def part3(loops: int) -> None:
    print(f"\n== 3. Primitives (best of 5 x {loops:,} calls) ==")
    live = LiveConfig(ACTIVE_CHECKS)
    breaker = CircuitBreaker(
        "p",
        failure_threshold=lambda: live.current.breaker_failure_threshold,
        open_s=lambda: live.current.breaker_open_s,
    )
    limiter = RateLimiter(
        "p",
        rps=lambda: live.current.rate_limit_rps,
        tokens_per_min=lambda: live.current.rate_limit_tokens_per_min,
    )
    request = InferenceRequest("Summarise src/module_3.py", session_id="agent-1")
    key = request_key(request)
    coalescer: Coalescer[str] = Coalescer()
    coalescer.lead(key, "flight")
    cache = MemoryCache()
    answer = CachedAnswer(text="x", usage=Usage(), provider="echo", model="echo")
    asyncio.run(cache.put(key, answer, ttl_s=3600))
    plain = {key: answer}

    def breaker_check() -> None:
        breaker.allow()
        breaker.record_success()

    results = {
        "dict lookup (baseline)": _ns_per_op(lambda: plain[key], loops),
        "breaker check (allow + record)": _ns_per_op(breaker_check, loops),
        "rate-limit check (req/s + tok/min)": _ns_per_op(lambda: limiter.try_acquire(10), loops),
        "dedup check (in-flight lookup)": _ns_per_op(lambda: coalescer.find(key), loops),
        "dedup key (normalise + hash)": _ns_per_op(lambda: request_key(request), loops),
        "cache hit (LRU + TTL)": _ns_per_op(lambda: cache.get_nowait(key), loops),
    }
    base = results["dict lookup (baseline)"]
    for name, ns in results.items():
        print(f"    {name:36s} {ns:8.1f} ns   {ns / base:6.1f}x dict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    n_seq, n_conc, loops = (500, 2_000, 20_000) if args.quick else (5_000, 20_000, 200_000)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, gc on")
    gc.collect()
    headline = asyncio.run(part1(n_seq, n_conc, 64))
    headline.update(asyncio.run(part2(agents=24, steps=40, seed=7)))
    part3(loops)
    keys = (
        "overhead_p50_us_c1",
        "overhead_p99_us_c1",
        "throughput_rps",
        "p99_us_c64",
        "upstream_calls",
        "distinct_requests",
        "requests",
    )
    print(json.dumps({k: headline[k] for k in keys}))


if __name__ == "__main__":
    main()
