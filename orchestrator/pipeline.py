"""`Pipeline`: RAG → Assemble → Inference → Post-process → Stream, as asyncio tasks joined by
bounded priority queues.

    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        response = await pipeline.infer(InferenceRequest("Explain backpressure."))
        async for chunk in pipeline.stream(InferenceRequest("...")):
            ...

A full queue sheds with `Overloaded` (lowest priority first; a higher-priority arrival may
displace a queued lower-priority request). Each request has a deadline (`timeout_s`, else
`default_timeout_s`), enforced on the event loop's clock: it fails with `DeadlineExceeded`
wherever it is. Live values are read from `live` at each use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any

from orchestrator.config import Change, LiveConfig, PipelineConfig
from orchestrator.cost import Budget, PriceTable
from orchestrator.errors import (
    CircuitOpen,
    DeadlineExceeded,
    Overloaded,
    PipelineClosed,
    ProviderError,
)
from orchestrator.feedback import FeedbackLog
from orchestrator.logging_setup import PROMPT_LOGGER, prompt_log_text
from orchestrator.metrics import (
    MetricsSnapshot,
    PipelineMetrics,
    PrioritySnapshot,
    ProviderSnapshot,
    Stage,
    StageSnapshot,
)
from orchestrator.providers.base import Worker
from orchestrator.request import (
    TASK_ID,
    Completion,
    InferenceRequest,
    InferenceResponse,
    Priority,
    StreamChunk,
    Usage,
)
from orchestrator.resilience.breaker import CircuitBreaker
from orchestrator.resilience.cache import CachedAnswer, MemoryCache, RedisCache, ResponseCache
from orchestrator.resilience.coalesce import Broadcast, Coalescer, DedupHook, DedupMatch
from orchestrator.resilience.priority import PriorityQueue
from orchestrator.resilience.ratelimit import RateLimiter
from orchestrator.resilience.retry import RetryPolicy
from orchestrator.retrieval import DocumentIndex
from orchestrator.routing import FallbackRouter, ProviderCapabilities, Route, Router
from orchestrator.stages.assemble import AssembleStage
from orchestrator.stages.inference import InferenceStage, shard_for
from orchestrator.stages.job import Job
from orchestrator.stages.postprocess import PostProcessStage, QualityHook
from orchestrator.stages.rag import RagStage
from orchestrator.stages.semantic import SemanticStage
from orchestrator.stages.stream import StreamStage, response_for
from orchestrator.usage import UsageLedger

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)
prompt_log = logging.getLogger(PROMPT_LOGGER)


class Pipeline:
    """The inference pipeline over one or more `Worker`s (tried in `fallback_order`).

    Use as an async context manager; it owns the workers and closes them on exit.
    Live values start from `config.tunables` unless a `live` config is passed (then `live` is
    used as is, and whoever holds it may change values while the pipeline runs).
    `clock` times breakers, rate limits, ageing and latencies; `sleep` waits retry backoffs;
    `rng` jitters them (seeded from `config.seed` when not given). `cache` overrides the
    response cache the config would build. `router` orders the providers for each request
    and hears every attempt's outcome (default `FallbackRouter`: the configured order).
    `quality_hooks` see every final answer, plain or streamed (`QualityHook`); `feedback`
    attributes later verdicts (`POST /v1/feedback`) to the provider and model of the answer.
    `dedup_hooks` (`DedupHook`, semantic dedup) are asked, off the event loop, for each
    eligible request no identical flight serves: a match joins the flight in the air or is
    answered from the stored answer, marked `cache_kind="semantic"` with its `similarity`.
    Raises ValueError for no workers, duplicate worker names, or a `fallback_order` naming an
    unknown worker.
    """

    def __init__(
        self,
        config: PipelineConfig,
        *workers: Worker,
        live: LiveConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        cache: ResponseCache | None = None,
        quality_hooks: Sequence[QualityHook] = (),
        dedup_hooks: Sequence[DedupHook] = (),
        router: Router | None = None,
        rewriters: Sequence[Callable[[InferenceRequest], InferenceRequest]] = (),
    ) -> None:
        if not workers:
            raise ValueError("workers: a pipeline needs at least one Worker")
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"workers: names must be unique, got {names!r}")
        unknown = [n for n in config.fallback_order if n not in names]
        if unknown:
            raise ValueError(f"fallback_order names unknown worker(s) {unknown!r}; have {names!r}")
        order = list(config.fallback_order) + [n for n in names if n not in config.fallback_order]
        by_name = {w.name: w for w in workers}

        self.config = config
        self.live = live if live is not None else LiveConfig(config.tunables)
        self.router: Router = router if router is not None else FallbackRouter()
        self.feedback = FeedbackLog(clock=clock)
        # The intelligence layer's bridge the composition root plugged in (None: none). While
        # the pipeline runs, its `autosave()` task keeps the learned router's state in its
        # memory; the pipeline saves it once more when it closes.
        self.intelligence: Any = None
        # Front-door rewrites of a request (the prompt optimizer), before any key is computed:
        # what they return is what the stages, dedup and the provider see.
        self.rewriters = tuple(rewriters)
        self._clock = clock
        self._started_at = clock()
        self.metrics = PipelineMetrics(window=config.metrics_window, clock=clock)
        self.prices = PriceTable.load(config.price_table_path)
        self.budget = Budget(
            session_limit_usd=config.session_budget_usd,
            global_limit_usd=config.global_budget_usd,
            warn_fraction=config.budget_warn_fraction,
        )
        self.usage = UsageLedger()
        self._log_prompts = config.log_prompts
        self.coalescer: Coalescer[Job] = Coalescer()
        self.semantic = SemanticStage(
            dedup_hooks,
            metrics=self.metrics,
            on_result=self._semantic_result,
            fail=self._fail,
            allow_tools=config.semantic_dedup_tools,
            allow_sampled=config.semantic_dedup_sampled,
        )
        self._owns_cache = cache is None
        if cache is None and config.cache_enabled:
            cache = (
                RedisCache(config.redis_url)
                if config.redis_url
                else MemoryCache(
                    max_entries=config.cache_max_entries,
                    max_bytes=config.cache_max_bytes,
                    clock=clock,
                )
            )
        self.cache = cache if config.cache_enabled else None
        live_ = self.live
        self.routes = tuple(
            Route(
                by_name[name],
                breaker=CircuitBreaker(
                    name,
                    failure_threshold=lambda: live_.current.breaker_failure_threshold,
                    open_s=lambda: live_.current.breaker_open_s,
                    probe_count=config.breaker_probe_count,
                    close_success_ratio=config.breaker_close_success_ratio,
                    clock=clock,
                ),
                limiter=RateLimiter(
                    name,
                    rps=lambda: live_.current.rate_limit_rps,
                    tokens_per_min=lambda: live_.current.rate_limit_tokens_per_min,
                    clock=clock,
                ),
            )
            for name in order
        )
        self._routes_by_name = {r.name: r for r in self.routes}

        def queue(name: Stage, capacity: Callable[[], int]) -> PriorityQueue[Job]:
            return PriorityQueue(
                name,
                capacity=capacity,
                shed_threshold=lambda: live_.current.shed_threshold,
                ageing_s=config.priority_ageing_s,
                clock=clock,
            )

        self._rag_queue = queue(Stage.RAG, lambda: live_.current.rag_queue_capacity)
        self._assemble_queue = queue(Stage.ASSEMBLE, lambda: live_.current.assemble_queue_capacity)
        self._postprocess_queue = queue(
            Stage.POSTPROCESS, lambda: live_.current.postprocess_queue_capacity
        )
        self._stream_queue = queue(Stage.STREAM, lambda: live_.current.stream_queue_capacity)

        self.rag = RagStage(None, top_k=config.rag_top_k)
        self.assemble = AssembleStage(
            coalescer=self.coalescer,
            budget=self.budget,
            prices=self.prices,
            default_model=self.routes[0].worker.default_model,
            scope=config.cache_scope,
            system_prompt=config.system_prompt,
            template=config.prompt_template,
            free=all(route.free for route in self.routes),
        )
        self.inference = InferenceStage(
            self.routes,
            concurrency=lambda: live_.current.inference_concurrency,
            queue_capacity=lambda: live_.current.inference_queue_capacity,
            shed_threshold=lambda: live_.current.shed_threshold,
            cache_ttl_s=lambda: live_.current.cache_ttl_s,
            shards=config.inference_shards,
            ageing_s=config.priority_ageing_s,
            retry=RetryPolicy(
                max_attempts=lambda: live_.current.retry_max_attempts,
                base_delay_s=lambda: live_.current.retry_base_delay_s,
                rng=rng if rng is not None else random.Random(config.seed),
                max_delay_s=config.retry_max_delay_s,
            ),
            cache=self.cache,
            metrics=self.metrics,
            prices=self.prices,
            budget=self.budget,
            forward=lambda job: self._push(self._postprocess_queue, job, Stage.POSTPROCESS),
            fail=self._fail,
            finish_stream=self._finish_stream,
            attempt_timeout_s=config.attempt_timeout_s,
            router=self.router,
            clock=clock,
            sleep=sleep,
            usage=self.usage,
        )
        self.postprocess = PostProcessStage(quality_hooks)
        self.stream_stage = StreamStage(metrics=self.metrics, land=self._land, clock=clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Build the RAG index (if a folder is configured) and start the stage tasks."""
        if self._loop is not None:
            raise RuntimeError("pipeline already started")
        config = self.config
        if config.rag_folder is not None:
            self.rag.index = await asyncio.to_thread(
                DocumentIndex.build,
                config.rag_folder,
                chunk_chars=config.rag_chunk_chars,
                max_file_bytes=config.rag_max_file_bytes,
            )
        self._loop = asyncio.get_running_loop()
        stages: list[tuple[PriorityQueue[Job], Callable[[Job], Any], Stage]] = [
            (self._rag_queue, self._after_rag, Stage.RAG),
            (self._assemble_queue, self._after_assemble, Stage.ASSEMBLE),
            (self._postprocess_queue, self._after_postprocess, Stage.POSTPROCESS),
            (self._stream_queue, self._in_stream, Stage.STREAM),
        ]
        self._tasks = [
            asyncio.create_task(self._run_stage(q, step), name=f"orchestrator-{name}")
            for q, step, name in stages
        ]
        self._tasks += self.inference.start()
        autosave = getattr(self.intelligence, "autosave", None)
        if autosave is not None:
            self._tasks.append(
                asyncio.create_task(autosave(), name="orchestrator-intelligence-autosave")
            )
        # Registered here, on the loop, so a change made from another thread reaches the
        # concurrency limit's futures through the loop (see `LiveConfig.on_change`).
        self.live.on_change(self._on_live_change)

    def _on_live_change(self, changed: Change) -> None:
        if "inference_concurrency" in changed:
            self.inference.limit.wake()

    async def aclose(self) -> None:
        """Stop the stages, fail whatever is still pending with `PipelineClosed`, close the
        workers and the cache."""
        if self._closing:
            return
        self._closing = True
        self.live.remove_listener(self._on_live_change)
        running = self.inference.cancel_running() + self.semantic.cancel_running()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)
        queues = (
            self._rag_queue,
            self._assemble_queue,
            *self.inference.queues,
            self._postprocess_queue,
            self._stream_queue,
        )
        for q in queues:
            for job in q.drain():
                self._fail(job, PipelineClosed("pipeline closed"))
        for route in self.routes:
            try:
                await route.worker.aclose()
            except Exception:
                log.exception("closing worker %s failed", route.name)
        if self.cache is not None and self._owns_cache:
            await self.cache.aclose()
        if self.intelligence is not None:
            try:
                await asyncio.to_thread(self.intelligence.save)
            except Exception:
                log.exception("saving the intelligence layer's state failed")

    # -- the front door ----------------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Answer `request`. Raises `Overloaded`, `BudgetExceeded`, `DeadlineExceeded`,
        `ProviderError` (incl. `CircuitOpen`)."""
        job = self._submit(request, stream=False)
        try:
            result: InferenceResponse = await job.future
        except asyncio.CancelledError:
            self._cancelled(job)
            raise
        return result

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamChunk]:
        """Answer `request` chunk by chunk; the errors are those of `infer`, raised when met."""
        job = self._submit(request, stream=True)
        try:
            broadcast: Broadcast = await job.future
        except asyncio.CancelledError:
            self._cancelled(job)
            raise
        kind, similarity = _reuse_of(job, broadcast)
        async with aclosing(broadcast.subscribe()) as chunks:  # leaving early is seen at once
            async for chunk in chunks:
                if kind is not None:  # the first chunk says how the answer was reused
                    chunk = dataclasses.replace(chunk, cache_kind=kind, similarity=similarity)
                    kind = None
                yield chunk

    def shard_of(self, request: InferenceRequest) -> int | None:
        """The inference shard a request with a session id goes to (None without a session)."""
        if request.session_id is None:
            return None
        return shard_for(request.session_id, self.inference.shards)

    def throughput_history(self) -> dict[str, Any]:
        """The last fifteen minutes of throughput, JSON-ready (`ThroughputHistory.to_dict()`:
        `bucket_s`, `horizon_s`, `points` as `[end_s, rps]` on the clock of `taken_at_s`)."""
        return self.metrics.throughput_history.to_dict()

    def snapshot(self) -> MetricsSnapshot:
        """Every measurement, now."""
        metrics = self.metrics
        p50, p95, p99, throughput, error_rate = metrics.window_stats()
        inference_queues = self.inference.queues
        stages = (
            self._queue_snapshot(self._rag_queue),
            self._queue_snapshot(self._assemble_queue),
            self._stage_snapshot(
                Stage.INFERENCE,
                depth=sum(len(q) for q in inference_queues),
                capacity=self.live.current.inference_queue_capacity,
                shed_total=sum(q.shed_total for q in inference_queues),
            ),
            self._queue_snapshot(self._postprocess_queue),
            self._queue_snapshot(self._stream_queue),
        )
        providers = tuple(
            ProviderSnapshot(
                name=r.name,
                breaker_state=str(r.breaker.state),
                consecutive_failures=r.breaker.consecutive_failures,
                breaker_opened_total=r.breaker.opened_total,
                calls_total=r.calls_total,
                failures_total=r.failures_total,
                rate_limited_total=r.rate_limited_total,
                timeouts_total=r.timeouts_total,
                rejected_total=r.rejected_total,
                retry_after_s=r.retry_after_s,
                retry_after_p50_s=r.retry_after_p50_s,
                paused_s=r.limiter.paused_s,
            )
            for r in self.routes
        )
        lookups = metrics.cache_hits + metrics.cache_misses
        finished = metrics.completed_total + metrics.errors_total
        now = self._clock()
        return MetricsSnapshot(
            taken_at_s=now,
            uptime_s=now - self._started_at,
            stages=stages,
            providers=providers,
            requests_total=metrics.requests_total,
            completed_total=metrics.completed_total,
            errors_total=metrics.errors_total,
            errors_by_type=dict(metrics.errors_by_type),
            shed_total=sum(s.shed_total for s in stages),
            in_flight=metrics.requests_total - finished - metrics.cancelled_total,
            cancelled_total=metrics.cancelled_total,
            inference_active=self.inference.limit.active,
            inference_concurrency=self.live.current.inference_concurrency,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            throughput_rps=throughput,
            error_rate=error_rate,
            dedup_hits=self.coalescer.hits,
            dedup_hit_rate=self.coalescer.hits / metrics.requests_total
            if metrics.requests_total
            else 0.0,
            cache_hits=metrics.cache_hits,
            cache_misses=metrics.cache_misses,
            cache_hit_rate=metrics.cache_hits / lookups if lookups else 0.0,
            cache_errors=metrics.cache_errors,
            upstream_calls=metrics.upstream_calls,
            retries=metrics.retries,
            fallbacks=metrics.fallbacks,
            cost_usd_total=metrics.cost_usd_total,
            budget_warnings=self.budget.warnings,
            budget_refusals=self.budget.refusals,
            embedding_requests=metrics.embedding_requests,
            embedding_tokens=metrics.embedding_tokens,
            embedding_cost_usd=metrics.embedding_cost_usd,
            unpriced_models=dict(self.prices.unpriced),
            saved_usd={**metrics.saved_usd, "total": sum(metrics.saved_usd.values())},
            usage=self.usage.to_dict(),
            routing=self._router_status(),
            priorities=self._priority_snapshots(),
            semantic_dedup=self.semantic.status() if self.semantic.hooks else None,
            feedback=self.feedback.status(),
        )

    def _priority_snapshots(self) -> tuple[PrioritySnapshot, ...]:
        stats = self.metrics.priority_stats()
        snapshots = []
        for level in sorted(Priority, key=lambda level: level.rank):
            if level in stats:
                count, p50, p95, p99 = stats[level]
                snapshots.append(
                    PrioritySnapshot(
                        name=str(level),
                        completed_total=count,
                        latency_p50_ms=p50,
                        latency_p95_ms=p95,
                        latency_p99_ms=p99,
                    )
                )
        return tuple(snapshots)

    def _router_status(self) -> dict[str, Any] | None:
        status = getattr(self.router, "status", None)
        if not callable(status):
            return None
        try:
            return dict(status())
        except Exception as exc:  # the router's state is extra: never blank the snapshot
            log.warning("router status failed: %s", type(exc).__name__)
            return {"error": f"router status unavailable ({type(exc).__name__})"}

    # -- embeddings (the front door embeds; the pipeline meters and bills) ------------------

    def admit_embedding(self, session_id: str | None, model: str, tokens: int) -> None:
        """Check that embedding `tokens` tokens with `model` fits the budgets, priced like
        any call (before the work). Raises `BudgetExceeded`."""
        price = self.prices.price(model)
        estimate_usd = tokens * price.input_per_mtok_usd / 1e6 if price is not None else 0.0
        self.budget.check(session_id, estimate_usd)

    def bill_embedding(
        self, session_id: str | None, model: str, tokens: int, *, client: str | None = None
    ) -> float:
        """Record an answered embedding request: its tokens, and its cost (USD, returned)
        charged to the budgets, counted in `cost_usd_total` and in the usage ledger for
        `client` (None: `anonymous`), as its input tokens. A model the price table does
        not know costs 0 and shows in `unpriced_models`, as for any call; the local models
        are priced at 0 in the shipped table, so they never do."""
        usage = Usage(input_tokens=tokens)
        cost_usd = self.prices.cost_usd(model, usage)
        self.budget.charge(session_id, cost_usd)
        self.usage.record(model=model, client=client, usage=usage, cost_usd=cost_usd)
        metrics = self.metrics
        metrics.embedding_requests += 1
        metrics.embedding_tokens += tokens
        metrics.embedding_cost_usd += cost_usd
        metrics.cost_usd_total += cost_usd
        return cost_usd

    # -- what the providers can do (for the front doors) -----------------------------------

    def capabilities(self) -> tuple[ProviderCapabilities, ...]:
        """Each provider's name, default model, native body formats and whether it counts
        tokens itself, in the configured order."""
        return tuple(
            ProviderCapabilities(
                name=r.name,
                default_model=r.worker.default_model,
                native_formats=r.native_formats,
                counts_tokens=callable(getattr(r.worker, "count_tokens", None)),
            )
            for r in self.routes
        )

    def takes_native(self, native_format: str) -> bool:
        """Whether some provider takes native request bodies of `native_format`."""
        return any(native_format in r.native_formats for r in self.routes)

    async def count_tokens(
        self, body: Mapping[str, Any], *, beta: str | None = None, version: str | None = None
    ) -> dict[str, Any] | None:
        """The first token-counting provider's count of a native Messages `body` (the JSON it
        answers), or None when no provider counts or every counting one's breaker is open.

        Counting is not inference: it is not queued or billed (nor counted in
        `upstream_calls`), but it goes through the provider's breaker and is counted among that
        provider's calls. Raises `ProviderError`.
        """
        for route in self.routes:
            count = getattr(route.worker, "count_tokens", None)
            if not callable(count):
                continue
            try:
                route.breaker.allow()
            except CircuitOpen:
                continue
            route.calls_total += 1
            try:
                counted: dict[str, Any] = await count(
                    body, timeout_s=self.config.default_timeout_s, beta=beta, version=version
                )
            except ProviderError as exc:
                route.failures_total += 1
                if exc.retryable and exc.status != 429:
                    route.breaker.record_failure()
                else:
                    route.breaker.record_success()
                raise
            except BaseException:
                route.breaker.release()
                raise
            route.breaker.record_success()
            return counted
        return None

    # -- plumbing ----------------------------------------------------------------------------

    def _submit(self, request: InferenceRequest, *, stream: bool) -> Job:
        loop = self._loop
        if loop is None or self._closing:
            raise RuntimeError("pipeline is not running; use 'async with Pipeline(...)'")
        for rewrite in self.rewriters:
            try:
                request = rewrite(request)
            except Exception:  # a rewrite is an optimisation: the request goes as it came
                log.exception("request rewrite %r failed; sending the request unchanged", rewrite)
        timeout_s = request.timeout_s or self.config.default_timeout_s
        deadline = loop.time() + timeout_s
        job = Job(
            request,
            stream=stream,
            future=loop.create_future(),
            submitted_at=self._clock(),
            timeout_s=timeout_s,
            deadline=deadline,
        )
        job.timer = loop.call_at(deadline, self._expire, job)
        self.metrics.requests_total += 1
        self._push(self._rag_queue, job, Stage.RAG)
        return job

    async def _run_stage(self, inbox: PriorityQueue[Job], step: Callable[[Job], Any]) -> None:
        while True:
            if not len(inbox):
                await inbox.wait()
            job = inbox.get_nowait()
            if job is None:
                continue
            if not job.wanted:
                self._land(job)
                continue
            try:
                step(job)
            except Exception as exc:
                self._fail(job, exc)

    def _after_rag(self, job: Job) -> None:
        self.rag.process(job)
        self._push(self._assemble_queue, job, Stage.ASSEMBLE)

    def _after_assemble(self, job: Job) -> None:
        leader = self.assemble.process(job)
        if leader is None:
            if self.semantic.wants(job):
                # Still in the assemble stage while it is looked up: its time counts there.
                self.semantic.submit(job)
                return
            self._push(self.inference.queue_for(job), job, Stage.INFERENCE)
            return
        leader.followers.append(job)
        if leader.broadcast is not None and leader.future.done():
            self.stream_stage.deliver_stream(leader, job)  # the stream is already flowing

    def _after_postprocess(self, job: Job) -> None:
        self.postprocess.process(job)
        if not job.stream:
            self._store_semantic(job, job.text)
        self._push(self._stream_queue, job, Stage.STREAM)

    # -- semantic dedup ----------------------------------------------------------------------

    def _semantic_result(self, job: Job, match: DedupMatch | None) -> None:
        """The hooks' verdict on a job that leads its own (exact) flight: serve the stored
        answer, join the equivalent flight in the air, or go upstream."""
        if self._closing:
            self._fail(job, PipelineClosed("pipeline closed"))
            return
        if not job.wanted:
            self._fail(job, asyncio.CancelledError())
            return
        if match is not None:
            answer = match.answer
            if answer is not None and not (job.stream and job.request.native is not None):
                self._serve_stored(job, match, answer)
                return
            leader = self.coalescer.get(match.flight_key) if match.flight_key else None
            if leader is not None and leader is not job and leader.stream == job.stream:
                self._join(job, leader, match)
                return
        self.semantic.started(job)
        self._push(self.inference.queue_for(job), job, Stage.INFERENCE)

    def _serve_stored(self, job: Job, match: DedupMatch, answer: CachedAnswer) -> None:
        job.completion = Completion(
            text=answer.text,
            usage=answer.usage,
            model=answer.model,
            finish_reason=answer.finish_reason,
            native=answer.native,
        )
        job.provider, job.cached, job.similarity = answer.provider, True, match.similarity
        self._semantic_hit((job, *job.followers), match, "cache")
        if job.stream:
            self.inference.replay(job, answer)  # forwards to post-process itself
        else:
            self._push(self._postprocess_queue, job, Stage.POSTPROCESS)

    def _join(self, job: Job, leader: Job, match: DedupMatch) -> None:
        # The job gives up its own flight; it and the identical requests that joined it
        # follow the equivalent flight instead.
        assert job.flight_key is not None
        self.coalescer.finish(job.flight_key, job)
        job.flight_key = None
        moved = (job, *job.followers)
        job.followers = []
        for each in moved:
            each.similarity = match.similarity
            leader.followers.append(each)
        self._semantic_hit(moved, match, "flight")
        if leader.broadcast is not None and leader.future.done():
            for each in moved:
                self.stream_stage.deliver_stream(leader, each)  # the stream already flows

    def _semantic_hit(self, jobs: Sequence[Job], match: DedupMatch, served_from: str) -> None:
        metrics = self.metrics
        metrics.semantic_hits += 1
        for each in jobs:
            request_id = each.request.request_id
            metrics.recent_semantic_hits.append(
                {
                    "request_id": request_id,
                    "similarity": round(float(match.similarity), 4),
                    "served_from": served_from,
                    "at_s": time.time(),
                }
            )
            self.semantic.served(request_id, match, each.request.metadata.get(TASK_ID))

    def _store_semantic(self, job: Job, text: str) -> None:
        """Hand a fresh upstream answer to the hooks, to serve later equivalent requests."""
        completion = job.completion
        if job.query is None or job.cached or completion is None:
            return
        if job.request.native is not None and completion.native is None:
            return  # a native stream's answer is events, not one message to replay
        answer = CachedAnswer(
            text=text,
            usage=completion.usage,
            provider=job.provider,
            model=completion.model,
            finish_reason=completion.finish_reason,
            native=completion.native,
        )
        self.semantic.answered(job, answer, self.live.current.cache_ttl_s)

    def _in_stream(self, job: Job) -> None:
        delivered = self.stream_stage.process(job)
        self.metrics.stage_done(Stage.STREAM, self._clock() - job.enqueued_at)
        if not job.stream:
            self._answered(job, delivered)

    def _answered(self, job: Job, delivered: Sequence[InferenceResponse]) -> None:
        """The one place a final answer is observed, plain or streamed: feedback attribution
        for every caller's response, then the quality hooks on the leader's answer."""
        requests = {each.request.request_id: each.request for each in (job, *job.followers)}
        for response in delivered:
            self.feedback.answered(response)
            if response.cached or response.deduped:
                request = requests.get(response.request_id, job.request)
                self._count_saved(response, request.client)
        if self._log_prompts:
            self._log_prompt(job, delivered)
        if self.postprocess.hooks:
            leader = next((r for r in delivered if not r.deduped), None)
            if leader is None:  # its caller left; the hooks still judge the answer it made
                leader = response_for(job, job, self._final_text(job), self._clock())
            self.postprocess.run_hooks(job.assembled, leader)

    @staticmethod
    def _log_prompt(job: Job, delivered: Sequence[InferenceResponse]) -> None:
        requests = {each.request.request_id: each.request for each in (job, *job.followers)}
        for response in delivered:
            request = requests.get(response.request_id, job.request)
            prompt = "\n".join(f"{m.role}: {m.content}" for m in request.messages_or_prompt)
            prompt_log.info(
                "request %s model=%s client=%s prompt=%r answer=%r",
                response.request_id,
                response.model,
                request.client or "anonymous",
                prompt_log_text(prompt),
                prompt_log_text(response.text),
            )

    def _count_saved(self, response: InferenceResponse, client: str | None) -> None:
        """An answer that made no upstream call, for `client`: counted in the usage ledger,
        and the cost avoided (priced like the call; nothing for a free route or an unpriced
        model) in `saved_usd` by kind."""
        route = self._routes_by_name.get(response.provider)
        price = self.prices.price(response.model)
        saved = 0.0 if route is None or route.free or price is None else price.cost_usd(
            response.usage
        )
        self.usage.record_without_call(model=response.model, client=client, saved_usd=saved)
        if response.cache_kind == "semantic":
            kind = "semantic"
        else:
            kind = "cache" if response.cached else "dedup"
        self.metrics.saved_usd[kind] += saved

    @staticmethod
    def _final_text(job: Job) -> str:
        if job.broadcast is not None:
            return job.broadcast.text
        return job.text

    def _push(self, queue: PriorityQueue[Job], job: Job, stage: Stage) -> None:
        if stage is not Stage.RAG:  # it leaves the stage it was in
            self.metrics.stage_done(job.stage, self._clock() - job.enqueued_at)
        job.stage = stage
        try:
            displaced = queue.put(job)
        except Overloaded as exc:
            self._fail(job, exc)
            return
        if displaced is not None:
            self._fail(
                displaced,
                Overloaded(queue.name, str(displaced.priority), len(queue), queue.capacity),
            )

    def _expire(self, job: Job) -> None:
        job.timer = None
        if job.future.done():
            return
        error = DeadlineExceeded(job.request.request_id, job.timeout_s, job.stage)
        job.future.set_exception(error)
        now = self._clock()
        self.metrics.failed(error, now - job.submitted_at, now)
        if job.task is not None and not job.followers:
            job.task.cancel()

    def _fail(self, job: Job, error: BaseException) -> None:
        if isinstance(error, asyncio.CancelledError):
            error = (
                PipelineClosed("pipeline closed")
                if self._closing
                else DeadlineExceeded(job.request.request_id, job.timeout_s, job.stage)
            )
        now = self._clock()
        for each in (job, *job.followers):
            if each.timer is not None:
                each.timer.cancel()
                each.timer = None
            if not each.future.done():
                each.future.set_exception(error)
                self.metrics.failed(error, now - each.submitted_at, now)
        if job.broadcast is not None and not job.broadcast.closed:
            job.broadcast.close(error)
        self._land(job)

    def _finish_stream(self, job: Job, error: BaseException | None) -> None:
        """A leader's stream ended (normally, or with `error`): close it and record it.

        Callers not yet handed the stream get it now; they read what arrived, then the error.
        """
        broadcast = job.broadcast
        assert broadcast is not None
        if isinstance(error, asyncio.CancelledError):
            error = (
                PipelineClosed("pipeline closed")
                if self._closing
                else DeadlineExceeded(job.request.request_id, job.timeout_s, Stage.INFERENCE)
            )
        broadcast.close(error)
        now = self._clock()
        delivered: list[InferenceResponse] = []
        for each in (job, *job.followers):
            future = each.future
            if not future.done():
                self.stream_stage.deliver_stream(job, each)
            elif future.cancelled() or future.exception() is not None:
                continue  # the caller left or already failed (and was counted then)
            if error is None:
                self.metrics.completed(now - each.submitted_at, now, each.request.priority)
                if job.completion is not None:
                    delivered.append(response_for(job, each, broadcast.text, now))
            else:
                self.metrics.failed(error, now - each.submitted_at, now)
        if error is None and job.completion is not None:
            self._store_semantic(job, broadcast.text)
            self._answered(job, delivered)
        self._land(job)

    def _cancelled(self, job: Job) -> None:
        """The caller stopped waiting; its job is dropped where it is (unless others wait)."""
        if job.future.cancelled():
            self.metrics.cancelled_total += 1
            if job.timer is not None:
                job.timer.cancel()
                job.timer = None

    def _land(self, job: Job) -> None:
        if job.flight_key is not None:
            if self.coalescer.get(job.flight_key) is job:
                self.semantic.finished(job)
            self.coalescer.finish(job.flight_key, job)

    def _queue_snapshot(self, queue: PriorityQueue[Job]) -> StageSnapshot:
        return self._stage_snapshot(
            Stage(queue.name),
            depth=len(queue),
            capacity=queue.capacity,
            shed_total=queue.shed_total,
        )

    def _stage_snapshot(
        self, name: Stage, *, depth: int, capacity: int, shed_total: int
    ) -> StageSnapshot:
        p50, p95, p99 = self.metrics.stage_percentiles_ms(name)
        return StageSnapshot(
            name=name,
            depth=depth,
            capacity=capacity,
            shed_total=shed_total,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
        )


def _reuse_of(job: Job, broadcast: Broadcast) -> tuple[str | None, float | None]:
    """How the answer `job`'s caller reads from `broadcast` was reused, as `response_for`
    tells a completion's caller: semantic (a match), exact (a stored answer, or another
    caller's stream it joined), or None (made for this caller)."""
    similarity = job.similarity if job.similarity is not None else broadcast.similarity
    if similarity is not None:
        return "semantic", similarity
    if broadcast.cached or job.broadcast is not broadcast:
        return "exact", None
    return None, None
