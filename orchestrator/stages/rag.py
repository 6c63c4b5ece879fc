"""RAG stage: adds passages retrieved from the configured folder to the request's context."""

from __future__ import annotations

from orchestrator.retrieval import DocumentIndex
from orchestrator.stages.job import Job

__all__ = ["RagStage"]


class RagStage:
    """Retrieves the `top_k` passages most similar to the last user message.

    With no index (no folder configured) or no matching passage, the job passes through
    untouched: no context is invented. Native requests pass untouched too: their body is sent
    as given.
    """

    __slots__ = ("index", "retrievals", "top_k")

    def __init__(self, index: DocumentIndex | None, *, top_k: int = 3) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        self.index = index
        self.top_k = top_k
        self.retrievals = 0

    def process(self, job: Job) -> bool:
        if self.index is None or job.request.native is not None:
            return True
        messages = job.request.messages_or_prompt
        query = next((m.content for m in reversed(messages) if m.role == "user"), "")
        passages = self.index.search(query, top_k=self.top_k)
        if passages:
            self.retrievals += 1
            job.context = "Context retrieved from local documents (most relevant first):\n\n" + (
                "\n\n".join(
                    f"[{n}] {p.path} (lines {p.start_line}-{p.end_line})\n{p.text}"
                    for n, p in enumerate(passages, 1)
                )
            )
        return True
