"""Post-process stage: normalises answers and runs quality hooks on them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from orchestrator.request import InferenceRequest
from orchestrator.resilience.coalesce import normalise_text
from orchestrator.stages.job import Job

__all__ = ["PostProcessStage", "QualityHook", "normalise_chunk"]

log = logging.getLogger(__name__)


@runtime_checkable
class QualityHook(Protocol):
    """Looks at each final answer (a whole completion, or a stream once it has ended).

    Hooks observe; an exception from one is logged and counted in `hook_errors`, never
    passed to the caller.
    """

    def __call__(self, request: InferenceRequest, text: str) -> None: ...


def normalise_chunk(text: str) -> str:
    """Per-chunk normalisation that is safe mid-stream: line endings only."""
    return text.replace("\r\n", "\n") if "\r" in text else text


class PostProcessStage:
    """Completions: line endings to \\n, trailing blanks removed; then the hooks."""

    __slots__ = ("hook_errors", "hooks")

    def __init__(self, hooks: Sequence[QualityHook] = ()) -> None:
        self.hooks = tuple(hooks)
        self.hook_errors = 0

    def process(self, job: Job) -> bool:
        if job.stream:
            return True  # chunks are normalised as they arrive; hooks run when the stream ends
        assert job.completion is not None
        job.text = normalise_text(job.completion.text)
        if self.hooks:
            self.run_hooks(job.assembled, job.text)
        return True

    def run_hooks(self, request: InferenceRequest, text: str) -> None:
        for hook in self.hooks:
            try:
                hook(request, text)
            except Exception:
                self.hook_errors += 1
                log.exception("quality hook %r failed on request %s", hook, request.request_id)
