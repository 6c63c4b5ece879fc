"""Stream stage: hands each caller (and every coalesced follower) its answer."""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.metrics import PipelineMetrics
from orchestrator.request import InferenceResponse
from orchestrator.stages.job import Job

__all__ = ["StreamStage", "response_for"]


def response_for(leader: Job, job: Job, text: str, now: float) -> InferenceResponse:
    """The response `job`'s caller gets from `leader`'s answer `text` (the same job, or the
    leader it was coalesced with: then `deduped`, at no cost)."""
    completion = leader.completion
    assert completion is not None
    is_leader = job is leader
    similarity = job.similarity if job.similarity is not None else leader.similarity
    kind = None
    if similarity is not None:
        kind = "semantic"
    elif leader.cached or not is_leader:
        kind = "exact"
    return InferenceResponse(
        text=text,
        usage=completion.usage,
        cost_usd=leader.cost_usd if is_leader else 0.0,
        provider=leader.provider,
        model=completion.model,
        latency_ms=(now - job.submitted_at) * 1000,
        request_id=job.request.request_id,
        deduped=not is_leader,
        cached=leader.cached,
        finish_reason=completion.finish_reason,
        native=completion.native,
        cache_kind=kind,
        similarity=similarity,
    )


class StreamStage:
    """Completions resolve to an `InferenceResponse` per caller (followers get `deduped=True`
    and cost 0: the call was billed once, to the leader). Streams resolve to the shared
    `Broadcast`, whose chunks each caller then reads."""

    __slots__ = ("_clock", "_land", "_metrics")

    def __init__(
        self,
        *,
        metrics: PipelineMetrics,
        land: Callable[[Job], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._land = land
        self._clock = clock

    def process(self, job: Job) -> list[InferenceResponse]:
        """Deliver `job`'s answer to its caller and followers. For a completion, returns the
        response of every caller still waiting (the leader's first); for a stream, none."""
        if job.stream:
            for each in (job, *job.followers):
                self.deliver_stream(job, each)
            return []
        now = self._clock()
        metrics = self._metrics
        delivered: list[InferenceResponse] = []
        for each in (job, *job.followers):
            if each.timer is not None:
                each.timer.cancel()
                each.timer = None
            if each.future.done():
                continue
            response = response_for(job, each, job.text, now)
            each.future.set_result(response)
            delivered.append(response)
            metrics.completed(now - each.submitted_at, now, each.request.priority)
        self._land(job)
        return delivered

    def deliver_stream(self, leader: Job, job: Job) -> None:
        """Give `job`'s caller the leader's broadcast (outcome is recorded when it ends)."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if not job.future.done():
            job.future.set_result(leader.broadcast)
