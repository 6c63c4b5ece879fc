"""Stream stage: hands each caller (and every coalesced follower) its answer."""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.metrics import PipelineMetrics
from orchestrator.request import InferenceResponse
from orchestrator.stages.job import Job

__all__ = ["StreamStage"]


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

    def process(self, job: Job) -> bool:
        if job.stream:
            for each in (job, *job.followers):
                self.deliver_stream(job, each)
            return False
        now = self._clock()
        completion = job.completion
        assert completion is not None
        metrics = self._metrics
        for each in (job, *job.followers):
            if each.timer is not None:
                each.timer.cancel()
                each.timer = None
            if each.future.done():
                continue
            leader = each is job
            latency_s = now - each.submitted_at
            each.future.set_result(
                InferenceResponse(
                    text=job.text,
                    usage=completion.usage,
                    cost_usd=job.cost_usd if leader else 0.0,
                    provider=job.provider,
                    model=completion.model,
                    latency_ms=latency_s * 1000,
                    request_id=each.request.request_id,
                    deduped=not leader,
                    cached=job.cached,
                    finish_reason=completion.finish_reason,
                    native=completion.native,
                )
            )
            metrics.completed(latency_s, now)
        self._land(job)
        return False

    def deliver_stream(self, leader: Job, job: Job) -> None:
        """Give `job`'s caller the leader's broadcast (outcome is recorded when it ends)."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if not job.future.done():
            job.future.set_result(leader.broadcast)
