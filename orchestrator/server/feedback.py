"""`FeedbackLog`: client feedback on answers, kept per request id in a bounded memory."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Feedback", "FeedbackLog"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback:
    """What a client said about one answer: a score in [-1, 1] and an optional comment."""

    request_id: str
    score: float
    comment: str | None = None


class FeedbackLog:
    """The last `max_entries` feedbacks by request id (a newer one for the same id replaces
    the older); `received_total` counts every feedback ever received."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Feedback] = OrderedDict()
        self.received_total = 0

    def add(self, feedback: Feedback) -> None:
        self._entries.pop(feedback.request_id, None)
        self._entries[feedback.request_id] = feedback
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self.received_total += 1

    def get(self, request_id: str) -> Feedback | None:
        return self._entries.get(request_id)

    def __len__(self) -> int:
        return len(self._entries)
