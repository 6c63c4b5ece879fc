"""Post-process stage: normalises answers; holds the quality hooks the pipeline runs on each
final answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from orchestrator.request import InferenceRequest, InferenceResponse
from orchestrator.resilience.coalesce import normalise_text
from orchestrator.stages.job import Job

__all__ = ["PostProcessStage", "QualityHook", "normalise_chunk"]

log = logging.getLogger(__name__)


@runtime_checkable
class QualityHook(Protocol):
    """Looks at each final answer: the request as sent upstream and the whole
    `InferenceResponse` (text, provider, model, latency, cost, usage, whether it was cached),
    for a completion once it is made and for a stream once it has ended.

    Hooks run on the event loop and observe; an exception from one is logged and counted in
    `hook_errors`, never passed to the caller.
    """

    def __call__(self, request: InferenceRequest, response: InferenceResponse) -> None: ...


def normalise_chunk(text: str) -> str:
    """Per-chunk normalisation that is safe mid-stream: line endings only."""
    return text.replace("\r\n", "\n") if "\r" in text else text


class PostProcessStage:
    """Completions: line endings to \\n, trailing blanks removed. `run_hooks` is the one place
    quality hooks run (the pipeline calls it for completions and for streams alike)."""

    __slots__ = ("hook_errors", "hooks")

    def __init__(self, hooks: Sequence[QualityHook] = ()) -> None:
        self.hooks = tuple(hooks)
        self.hook_errors = 0

    def process(self, job: Job) -> bool:
        if job.stream:
            return True  # chunks are normalised as they arrive; hooks run when the stream ends
        assert job.completion is not None
        job.text = normalise_text(job.completion.text)
        return True

    def run_hooks(self, request: InferenceRequest, response: InferenceResponse) -> None:
        for hook in self.hooks:
            try:
                hook(request, response)
            except Exception:
                self.hook_errors += 1
                log.exception("quality hook %r failed on request %s", hook, request.request_id)
