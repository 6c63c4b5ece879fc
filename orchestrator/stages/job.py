"""`Job`: one request's state as it moves through the stages."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestrator.metrics import Stage
from orchestrator.request import Completion, InferenceRequest, Priority
from orchestrator.resilience.coalesce import Broadcast

__all__ = ["Job"]


class Job:
    """Mutable, stage-owned state of one accepted request (callers never see it).

    `future` resolves to the caller's `InferenceResponse` (or, for a stream, its `Broadcast`).
    A job that coalesced onto another is a *follower*: it sits in `leader.followers` and leaves
    the stages; the leader's outcome is delivered to it.
    """

    __slots__ = (
        "assembled",
        "broadcast",
        "cache_key",
        "cached",
        "completion",
        "context",
        "cost_usd",
        "deadline",
        "enqueued_at",
        "flight_key",
        "followers",
        "future",
        "input_tokens",
        "priority",
        "provider",
        "query",
        "request",
        "scope_prefix",
        "shard",
        "similarity",
        "stage",
        "stream",
        "submitted_at",
        "task",
        "text",
        "timeout_s",
        "timer",
    )

    def __init__(
        self,
        request: InferenceRequest,
        *,
        stream: bool,
        future: asyncio.Future[Any],
        submitted_at: float,
        timeout_s: float,
        deadline: float,
    ) -> None:
        self.request = request
        self.priority: Priority = request.priority
        self.stream = stream
        self.future = future
        self.submitted_at = submitted_at
        self.timeout_s = timeout_s
        self.deadline = deadline  # event-loop time
        self.enqueued_at = 0.0
        self.stage = Stage.RAG
        self.context: str | None = None
        self.assembled = request
        self.input_tokens = 0
        self.flight_key: str | None = None
        self.cache_key: str | None = None
        self.scope_prefix = ""  # the cache scope's part of the key (tenant, session)
        self.query: tuple[str, str] | None = None  # semantic dedup's (text, scope)
        self.similarity: float | None = None  # set when served by a semantic match
        self.shard = 0
        self.followers: list[Job] = []
        self.completion: Completion | None = None
        self.text = ""
        self.provider = ""
        self.cached = False
        self.cost_usd = 0.0
        self.broadcast: Broadcast | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def wanted(self) -> bool:
        """Someone still waits for this job's answer (its caller or a follower)."""
        return not self.future.done() or bool(self.followers)
