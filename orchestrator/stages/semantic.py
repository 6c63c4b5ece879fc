"""Semantic step, between Assemble and Inference: asks the `DedupHook`s whether a request that
is not byte-identical to anything in flight asks what an in-flight or answered one asks.

It runs only for requests the config allows (no tools or other native blocks unless
`semantic_dedup_tools`; no explicit temperature above 0 unless `semantic_dedup_sampled`; not
opted out by `InferenceRequest.semantic_dedup`). The lookup is awaited in a task of its own,
so the hook embeds off the event loop while the stages keep moving; its outcome goes to
`on_result`. A hook that fails is a miss, never a failed request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.metrics import PipelineMetrics
from orchestrator.resilience.coalesce import DedupHook, DedupMatch, semantic_query
from orchestrator.stages.job import Job

__all__ = ["SemanticStage"]

log = logging.getLogger(__name__)


class SemanticStage:
    """The pipeline's `DedupHook`s, asked once per eligible request (see the module docstring)."""

    def __init__(
        self,
        hooks: Sequence[DedupHook],
        *,
        metrics: PipelineMetrics,
        on_result: Callable[[Job, DedupMatch | None], None],
        fail: Callable[[Job, BaseException], None],
        allow_tools: bool = False,
        allow_sampled: bool = False,
    ) -> None:
        self.hooks = tuple(hooks)
        self._metrics = metrics
        self._on_result = on_result
        self._fail = fail
        self._allow_tools = allow_tools
        self._allow_sampled = allow_sampled
        self._tasks: set[asyncio.Task[None]] = set()

    def wants(self, job: Job) -> bool:
        """Whether `job` may be served semantically; if so its `query` is set."""
        if not self.hooks or not job.request.semantic_dedup:
            return False
        request = job.assembled
        if request.native is not None and not self._allow_tools:
            return False
        temperature = request.temperature
        if temperature is not None and temperature > 0 and not self._allow_sampled:
            return False
        job.query = semantic_query(request, job.scope_prefix)
        return job.query is not None

    def submit(self, job: Job) -> None:
        """Look `job` up in a task of its own; `on_result` gets the outcome."""
        task = asyncio.create_task(self._ask(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, job: Job) -> None:
        assert job.query is not None
        text, scope = job.query
        match: DedupMatch | None = None
        self._metrics.semantic_lookups += 1
        for hook in self.hooks:
            try:
                match = await hook.match(text, scope)
            except asyncio.CancelledError as exc:
                self._fail(job, exc)  # shutdown, or the deadline cancelled it
                raise
            except Exception:
                self._metrics.semantic_errors += 1
                log.warning("semantic dedup hook %r failed; treated as a miss", hook, exc_info=True)
                match = None
            if match is not None:
                break
        self._on_result(job, match)

    def cancel_running(self) -> list[asyncio.Task[None]]:
        """Cancel the lookups in flight (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    # The flight's life, told to every hook; a hook's bug must not fail the request.

    def started(self, job: Job) -> None:
        assert job.query is not None and job.flight_key is not None
        self._tell("started", job.flight_key, *job.query)

    def answered(self, job: Job, answer: Any, ttl_s: float) -> None:
        if job.query is not None and job.flight_key is not None:
            self._tell("answered", job.flight_key, answer, ttl_s)

    def finished(self, job: Job) -> None:
        if job.query is not None and job.flight_key is not None:
            self._tell("finished", job.flight_key)

    def served(self, request_id: str, match: DedupMatch, task_id: str | None = None) -> None:
        self._tell("served", request_id, match, task_id)

    def _tell(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.warning("semantic dedup hook %r failed in %s", hook, method, exc_info=True)

    def status(self) -> dict[str, Any]:
        """What `MetricsSnapshot.semantic_dedup` shows: the pipeline's counts, the recent hits
        and the first hook's own `status()`, if it has one."""
        metrics = self._metrics
        lookups = metrics.semantic_lookups
        data: dict[str, Any] = {
            "lookups": lookups,
            "hits": metrics.semantic_hits,
            "hit_rate": metrics.semantic_hits / lookups if lookups else 0.0,
            "errors": metrics.semantic_errors,
            "recent_hits": list(metrics.recent_semantic_hits),
        }
        status = getattr(self.hooks[0], "status", None)
        if callable(status):
            try:
                data.update(status())
            except Exception as exc:
                data["error"] = f"hook status unavailable ({type(exc).__name__})"
        return data
