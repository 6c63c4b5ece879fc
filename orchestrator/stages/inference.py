"""Inference stage: sharded queues, a live concurrency limit, and for each request the cache,
then breaker → rate limit → call → retry/fallback across the providers, in the order the
`Router` gives, each attempt reported back to it."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from orchestrator.cost import Budget, PriceTable
from orchestrator.errors import CircuitOpen, DeadlineExceeded, ProviderError
from orchestrator.metrics import PipelineMetrics, Stage
from orchestrator.request import (
    Completion,
    InferenceRequest,
    StreamChunk,
    Usage,
)
from orchestrator.resilience.breaker import BreakerState
from orchestrator.resilience.cache import CachedAnswer, ResponseCache
from orchestrator.resilience.coalesce import Broadcast
from orchestrator.resilience.priority import PriorityQueue
from orchestrator.resilience.retry import RetryPolicy
from orchestrator.routing import ErrorClass, FallbackRouter, Route, RouteOutcome, Router
from orchestrator.stages.job import Job
from orchestrator.stages.postprocess import normalise_chunk
from orchestrator.tokens import estimate_tokens
from orchestrator.usage import UsageLedger

__all__ = ["ConcurrencyLimit", "InferenceStage", "shard_for"]

log = logging.getLogger(__name__)

Attempt = Callable[[Job, InferenceRequest, "Route", float], Awaitable[Completion]]


def shard_for(session_id: str, shards: int) -> int:
    """The shard a session always lands on: a stable hash, the same in every process."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class ConcurrencyLimit:
    """At most `limit()` holders at once; the limit is read on every acquire and release."""

    __slots__ = ("_limit", "_waiters", "active")

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.active = 0

    async def acquire(self) -> None:
        if self.active < self._limit() and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # we were handed a slot but will not use it
            raise

    def release(self) -> None:
        self.active -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters (call after the limit was raised)."""
        limit = self._limit()
        while self._waiters and self.active < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


class InferenceStage:
    """Runs each job's upstream call in its own task, at most `inference_concurrency` at once.

    Per job: a cache hit answers at once. Otherwise each round tries the providers in the order
    `router.order` gave for the job (default `FallbackRouter`: the configured order), skipping
    those whose breaker is open or whose rate limit is spent; a retryable failure moves on to
    the next provider at once, so a dead primary costs one failed call (none once its breaker
    is open). An attempt with providers still untried in its round gets at most half the time
    left (and at most `attempt_timeout_s`), so a hung provider leaves time for the next.
    When a whole round fails, `RetryPolicy` decides the backoff before the next round.
    Non-retryable errors end the job. A stream that has sent chunks is never retried.
    A 429 is backpressure, not a fault: it never counts against the breaker; it pauses that
    provider's rate limiter for the Retry-After it names (else a second) and the retry waits at
    least as long. A request whose client retries by itself (`client_retries`) gets one round.
    A request naming a `model` sends it to the configured primary only (the first of the
    providers that can serve it); the others answer with their own default model. Every
    attempt made is reported to `router.record` (skipped providers made none). Only the
    answered call is billed. A native request (`InferenceRequest.native`) goes only to
    providers that take its format (fallback among those); with none, it fails with a
    non-retryable `ProviderError` (status 400).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        concurrency: Callable[[], int],
        queue_capacity: Callable[[], int],
        shed_threshold: Callable[[], float],
        cache_ttl_s: Callable[[], float],
        shards: int,
        ageing_s: float,
        retry: RetryPolicy,
        cache: ResponseCache | None,
        metrics: PipelineMetrics,
        prices: PriceTable,
        budget: Budget,
        forward: Callable[[Job], None],
        fail: Callable[[Job, BaseException], None],
        finish_stream: Callable[[Job, BaseException | None], None],
        attempt_timeout_s: float | None = None,
        router: Router | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        usage: UsageLedger | None = None,
    ) -> None:
        if not routes:
            raise ValueError("routes: at least one provider is needed")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards!r}")
        self.routes = tuple(routes)
        self._queue_capacity = queue_capacity
        self._cache_ttl_s = cache_ttl_s
        self.shards = shards
        self._retry = retry
        self._cache = cache
        self._metrics = metrics
        self._prices = prices
        self._budget = budget
        self._usage = usage if usage is not None else UsageLedger()
        self._forward = forward
        self._fail = fail
        self._finish_stream = finish_stream
        self._sleep = sleep
        self._attempt_timeout_s = attempt_timeout_s
        self.router: Router = router if router is not None else FallbackRouter()
        self.router_errors = 0
        self._clock = clock
        self.limit = ConcurrencyLimit(concurrency)
        self.queues: tuple[PriorityQueue[Job], ...] = tuple(
            PriorityQueue(
                f"inference[{i}]",
                capacity=self._shard_capacity,
                shed_threshold=shed_threshold,
                ageing_s=ageing_s,
                clock=clock,
            )
            for i in range(shards)
        )
        self._round_robin = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _shard_capacity(self) -> int:
        return math.ceil(self._queue_capacity() / self.shards)

    def queue_for(self, job: Job) -> PriorityQueue[Job]:
        """Sessions stick to one shard; requests without a session go round-robin."""
        session_id = job.request.session_id
        if session_id is not None:
            job.shard = shard_for(session_id, self.shards)
        else:
            self._round_robin = job.shard = (self._round_robin + 1) % self.shards
        return self.queues[job.shard]

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._shard_loop(q), name=f"orchestrator-{q.name}")
            for q in self.queues
        ]

    def cancel_running(self) -> list[asyncio.Task[None]]:
        """Cancel every call in flight (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    async def _shard_loop(self, queue: PriorityQueue[Job]) -> None:
        # Take a slot before choosing the job, so the choice is made by priority at the moment
        # work can start, not when it arrived.
        limit = self.limit
        tasks = self._tasks
        while True:
            if not len(queue):
                await queue.wait()
            await limit.acquire()
            job = queue.get_nowait()
            if job is None:
                limit.release()
                continue
            if not job.wanted:
                limit.release()
                self._fail(job, asyncio.CancelledError())
                continue
            job.stage = Stage.INFERENCE
            task = asyncio.create_task(self._run(job))
            job.task = task
            tasks.add(task)
            task.add_done_callback(functools.partial(self._ran, job))

    def _ran(self, job: Job, task: asyncio.Task[None]) -> None:
        # A done callback, not a `finally`: a task cancelled before its first step never runs
        # its body, and its slot and its flight must still be given back.
        self._tasks.discard(task)
        job.task = None
        self.limit.release()
        if task.cancelled():
            self._fail(job, asyncio.CancelledError())

    async def _run(self, job: Job) -> None:
        try:
            if self._cache is not None and job.cache_key is not None:
                answer = await self._cache_get(job.cache_key)
                if answer is not None:
                    self._metrics.cache_hits += 1
                    job.completion = Completion(
                        text=answer.text,
                        usage=answer.usage,
                        model=answer.model,
                        finish_reason=answer.finish_reason,
                        native=answer.native,
                    )
                    job.provider, job.cached = answer.provider, True
                    if job.stream:
                        self.replay(job, answer)
                    else:
                        self._forward(job)
                    return
                self._metrics.cache_misses += 1
            if job.stream:
                await self._run_stream(job)
                return
            completion, route, cost_usd = await self._call(job, self._complete_attempt)
            await self._settle(job, completion, route, cost_usd)
            self._forward(job)
        except Exception as exc:
            self._fail(job, exc)

    async def _run_stream(self, job: Job) -> None:
        job.broadcast = Broadcast()
        task = asyncio.current_task()
        if task is not None:
            job.broadcast.on_abandoned = functools.partial(self._abandoned, job, task)
        self._forward(job)  # the caller starts reading now; chunks follow as they come
        if job.broadcast.closed:
            return
        try:
            completion, route, cost_usd = await self._call(job, self._stream_attempt)
            await self._settle(job, completion, route, cost_usd)
        except asyncio.CancelledError as exc:
            self._finish_stream(job, exc)
            raise
        except Exception as exc:
            self._finish_stream(job, exc)
        else:
            self._finish_stream(job, None)

    @staticmethod
    def _abandoned(job: Job, task: asyncio.Task[None]) -> None:
        # Every reader left: stop the upstream call, unless a coalesced follower has not
        # been handed the stream yet (it will read it).
        if all(each.future.done() for each in (job, *job.followers)) and not task.done():
            task.cancel()

    def replay(self, job: Job, answer: CachedAnswer) -> None:
        """Answer a stream `job` with a stored answer, as one chunk."""
        job.broadcast = broadcast = Broadcast(cached=True, similarity=job.similarity)
        self._forward(job)
        if not broadcast.closed:
            broadcast.publish(
                StreamChunk(
                    text=answer.text,
                    index=0,
                    finish_reason=answer.finish_reason,
                    usage=answer.usage,
                )
            )
            self._finish_stream(job, None)

    def _cost_usd(self, route: Route, completion: Completion) -> float:
        return 0.0 if route.free else self._prices.cost_usd(completion.model, completion.usage)

    async def _settle(
        self, job: Job, completion: Completion, route: Route, cost_usd: float
    ) -> None:
        job.completion, job.provider, job.cost_usd = completion, route.name, cost_usd
        self._budget.charge(job.request.session_id, cost_usd)
        self._metrics.cost_usd_total += cost_usd
        self._usage.record(
            model=completion.model,
            client=job.request.client,
            usage=completion.usage,
            cost_usd=cost_usd,
        )
        route.limiter.debit_tokens(completion.usage.output_tokens)
        if self._cache is not None and job.cache_key is not None:
            answer = CachedAnswer(
                text=completion.text,
                usage=completion.usage,
                provider=route.name,
                model=completion.model,
                finish_reason=completion.finish_reason,
                native=completion.native,
            )
            try:
                await self._cache.put(job.cache_key, answer, ttl_s=self._cache_ttl_s())
            except Exception:
                self._metrics.cache_errors += 1
                log.warning("response cache put failed; answer served uncached", exc_info=True)

    async def _cache_get(self, key: str) -> CachedAnswer | None:
        """A cache that fails (Redis down) is a miss, not a failed request."""
        assert self._cache is not None
        try:
            return await self._cache.get(key)
        except Exception:
            self._metrics.cache_errors += 1
            log.warning("response cache get failed; treated as a miss", exc_info=True)
            return None

    @staticmethod
    async def _complete_attempt(
        job: Job, request: InferenceRequest, route: Route, timeout_s: float
    ) -> Completion:
        return await route.worker.complete(request, timeout_s=timeout_s)

    @staticmethod
    async def _stream_attempt(
        job: Job, request: InferenceRequest, route: Route, timeout_s: float
    ) -> Completion:
        broadcast = job.broadcast
        assert broadcast is not None
        parts: list[str] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        chunks = route.worker.stream(request, timeout_s=timeout_s)
        try:
            async for chunk in chunks:
                text = normalise_chunk(chunk.text)
                parts.append(text)
                usage = chunk.usage or usage
                finish_reason = chunk.finish_reason or finish_reason
                broadcast.publish(
                    StreamChunk(
                        text=text,
                        index=len(broadcast.chunks),
                        finish_reason=chunk.finish_reason,
                        usage=chunk.usage,
                        native=chunk.native,
                    )
                )
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        text = "".join(parts)
        if usage is None:
            usage = Usage(input_tokens=job.input_tokens, output_tokens=estimate_tokens(text))
        model = request.model or route.worker.default_model
        return Completion(text=text, usage=usage, model=model, finish_reason=finish_reason)

    def _routes_for(self, request: InferenceRequest) -> tuple[Route, ...]:
        native = request.native_format
        if native is None:
            return self.routes
        routes = tuple(r for r in self.routes if native in r.native_formats)
        if not routes:
            raise ProviderError(
                "pipeline",
                f"this request needs a provider that takes native {native!r} request "
                f"bodies, and none of {[r.name for r in self.routes]!r} does",
                status=400,
                retryable=False,
            )
        return routes

    def _ordered(self, request: InferenceRequest, candidates: tuple[Route, ...]) -> list[Route]:
        # A router bug must not fail requests: the configured order serves instead.
        try:
            ordered = [r for r in self.router.order(request, candidates) if r in candidates]
        except Exception:
            self.router_errors += 1
            log.exception("router %r failed to order request %s", self.router, request.request_id)
            return list(candidates)
        if not ordered:
            raise ProviderError(
                "pipeline",
                f"the router left none of {[r.name for r in candidates]!r} to try",
                retryable=False,
            )
        return ordered

    def _record(
        self,
        route: Route,
        request: InferenceRequest,
        started: float,
        *,
        completion: Completion | None = None,
        cost_usd: float = 0.0,
        error: ErrorClass | None = None,
        status: int | None = None,
    ) -> None:
        outcome = RouteOutcome(
            request=request,
            provider=route.name,
            model=completion.model if completion else request.model or route.worker.default_model,
            latency_ms=(self._clock() - started) * 1000,
            cost_usd=cost_usd,
            usage=completion.usage if completion else None,
            error=error,
            status=status,
        )
        try:
            self.router.record(route, outcome)
        except Exception:  # the router learns; it must never fail the request
            self.router_errors += 1
            log.exception("router %r failed to record an outcome", self.router)

    async def _call(self, job: Job, attempt: Attempt) -> tuple[Completion, Route, float]:
        """The answer, the route that gave it and what it cost (priced once, here)."""
        loop = asyncio.get_running_loop()
        metrics = self._metrics
        candidates = self._routes_for(job.assembled)
        primary = candidates[0]
        routes = self._ordered(job.assembled, candidates)
        rounds = 0
        last = len(routes) - 1
        while True:
            rounds += 1
            failure: ProviderError | None = None
            circuit_open: CircuitOpen | None = None
            waits_s: list[float] = []
            for index, route in enumerate(routes):
                breaker = route.breaker
                try:
                    breaker.allow()
                except CircuitOpen as exc:
                    circuit_open = circuit_open or exc
                    continue
                wait_s = route.limiter.try_acquire(job.input_tokens)
                if wait_s > 0:
                    breaker.release()
                    waits_s.append(wait_s)
                    continue
                timeout_s = job.deadline - loop.time()
                if timeout_s <= 0:
                    breaker.release()
                    raise DeadlineExceeded(job.request.request_id, job.timeout_s, Stage.INFERENCE)
                if index < last and any(
                    r.breaker.state is not BreakerState.OPEN for r in routes[index + 1 :]
                ):
                    timeout_s /= 2  # a hung provider must leave time for the next one
                if self._attempt_timeout_s is not None:
                    timeout_s = min(timeout_s, self._attempt_timeout_s)
                metrics.upstream_calls += 1
                route.calls_total += 1
                request = job.assembled
                if route is not primary and request.model is not None:
                    # a model name belongs to the primary; the others use their own default
                    request = dataclasses.replace(request, model=None)
                started = self._clock()
                try:
                    completion = await attempt(job, request, route, timeout_s)
                except ProviderError as exc:
                    error = exc
                    error_class = ErrorClass.of(exc)
                except TimeoutError:
                    error = ProviderError(
                        route.name, f"timed out after {timeout_s:.3g}s", retryable=True
                    )
                    error_class = ErrorClass.TIMEOUT
                    route.timeouts_total += 1
                except asyncio.CancelledError:
                    breaker.release()
                    raise
                except Exception as exc:
                    breaker.release()
                    self._record(route, request, started, error=ErrorClass.WORKER)
                    # A bug in the worker, not an upstream answer: the details (which may name
                    # internals) go to the log under the request id, never to the client.
                    log.error("request %s: worker %s raised %s", request.request_id,
                              route.name, type(exc).__name__, exc_info=exc)
                    message = (
                        f"internal error in the {route.name} worker (request "
                        f"{request.request_id}; details in the server log)"
                    )
                    raise ProviderError(
                        route.name, message, retryable=False, client_message=message
                    ) from exc
                else:
                    breaker.record_success()
                    if index > 0:
                        metrics.fallbacks += 1
                    cost_usd = self._cost_usd(route, completion)
                    self._record(
                        route, request, started, completion=completion, cost_usd=cost_usd
                    )
                    return completion, route, cost_usd
                self._record(route, request, started, error=error_class, status=error.status)
                route.failures_total += 1
                if not error.retryable:
                    breaker.record_success()  # the provider is up; the request is at fault
                    route.rejected_total += 1
                    raise error
                if error.status == 429:
                    # Backpressure: the provider is up and asks us to slow down.
                    breaker.record_success()
                    route.rate_limited_total += 1
                    if error.retry_after_s is not None:
                        route.observe_retry_after(error.retry_after_s)
                    route.limiter.pause(error.retry_after_s or 1.0)
                else:
                    breaker.record_failure()
                if job.broadcast is not None and job.broadcast.chunks:
                    raise error  # the caller has part of an answer: a retry would repeat it
                failure = error
            if failure is None:
                if not waits_s:
                    assert circuit_open is not None
                    raise circuit_open
                delay_s = min(waits_s)  # rate limited everywhere: wait, not an attempt
                rounds -= 1
            else:
                if job.request.client_retries:
                    raise failure  # the client retries by itself: do not stack ours on top
                backoff_s = self._retry.backoff_s(rounds, failure)
                if backoff_s is None:
                    raise failure
                delay_s = backoff_s
                metrics.retries += 1
            if loop.time() + delay_s >= job.deadline:
                if failure is not None:
                    raise failure
                raise DeadlineExceeded(job.request.request_id, job.timeout_s, Stage.INFERENCE)
            await self._sleep(delay_s)
