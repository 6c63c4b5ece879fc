"""Assemble stage: builds the provider request, estimates its tokens, checks the budget, and
joins identical requests already in flight."""

from __future__ import annotations

import dataclasses

from orchestrator.config import CacheScope
from orchestrator.cost import Budget, PriceTable
from orchestrator.request import InferenceRequest, Message
from orchestrator.resilience.coalesce import Coalescer, request_key
from orchestrator.stages.job import Job
from orchestrator.tokens import estimate_request_tokens

__all__ = ["AssembleStage"]


class AssembleStage:
    """System prompt = configured prompt + the request's own + retrieved context (in that
    order); `template` (with `{prompt}`) wraps the last user message. A native request is left
    as it is (its body is sent as given), and a native stream is not cached: the cache keeps
    whole answers, and replaying one would mean inventing provider stream events.

    `process` returns the leader job when an identical request (same scope, same kind) is in
    flight, else registers the job as the leader of its flight and returns None.
    Raises `BudgetExceeded` when the session or global budget is spent (or would be by the
    request's estimated input; with `free` providers only, nothing is estimated).
    """

    __slots__ = (
        "_budget",
        "_coalescer",
        "_default_model",
        "_free",
        "_prices",
        "_scope",
        "_system_prompt",
        "_template",
    )

    def __init__(
        self,
        *,
        coalescer: Coalescer[Job],
        budget: Budget,
        prices: PriceTable,
        default_model: str,
        scope: CacheScope = CacheScope.GLOBAL,
        system_prompt: str | None = None,
        template: str | None = None,
        free: bool = False,
    ) -> None:
        self._free = free
        self._coalescer = coalescer
        self._budget = budget
        self._prices = prices
        self._default_model = default_model
        self._scope = scope
        self._system_prompt = system_prompt
        self._template = template

    def process(self, job: Job) -> Job | None:
        request = job.request
        assembled = self._build(request, job.context)
        job.assembled = assembled
        contents = (m.content for m in assembled.messages_or_prompt)
        job.input_tokens = estimate_request_tokens(assembled.system, contents)
        price = None if self._free else self._prices.price(assembled.model or self._default_model)
        estimate_usd = job.input_tokens * price.input_per_mtok_usd / 1e6 if price else 0.0
        self._budget.check(request.session_id, estimate_usd)
        job.scope_prefix = self._scope_prefix(request)
        cache_key = job.scope_prefix + request_key(assembled)
        if not (job.stream and request.native is not None):
            job.cache_key = cache_key
        flight_key = "stream:" + cache_key if job.stream else cache_key
        leader = self._coalescer.find(flight_key)
        if leader is not None:
            return leader
        job.flight_key = flight_key
        self._coalescer.lead(flight_key, job)
        return None

    def _scope_prefix(self, request: InferenceRequest) -> str:
        if self._scope is CacheScope.GLOBAL:
            return "g:"
        if self._scope is CacheScope.TENANT:
            return f"t:{request.tenant or ''}:"
        return f"s:{request.session_id or ''}:"

    def _build(self, request: InferenceRequest, context: str | None) -> InferenceRequest:
        if request.native is not None:
            return request
        parts = [p for p in (self._system_prompt, request.system, context) if p]
        system = "\n\n".join(parts) if parts else None
        template = self._template
        if system == request.system and template is None:
            return request
        if template is None:
            return dataclasses.replace(request, system=system)
        if request.prompt is not None:
            prompt = template.replace("{prompt}", request.prompt)
            return dataclasses.replace(request, system=system, prompt=prompt)
        messages = list(request.messages)
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].role == "user":
                messages[i] = Message("user", template.replace("{prompt}", messages[i].content))
                break
        return dataclasses.replace(request, system=system, messages=tuple(messages))
