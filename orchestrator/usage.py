"""The usage ledger: requests, tokens and cost in USD, by model and by client.

    ledger = UsageLedger()
    ledger.record(model="claude-sonnet-4-5", client="planner", usage=usage, cost_usd=0.012)
    ledger.to_dict()   # {"by_model": {...}, "by_client": {...}, "rows": [...]}

The pipeline records each answered upstream call where it charges the budget, so the ledger's
requests, tokens and cost add up to the upstream calls and `cost_usd_total`. An answer served
without a call (the response cache, coalescing, semantic dedup) is counted apart, for the
client that got it: `answered_without_call`, and `saved_usd`, what the call would have cost
(priced like it; these add up to `saved_usd` in the pipeline's snapshot). The client is a
label the front door chose (`client_label` of the `x-orchestrator-agent` header, else the
auth role), never a token. Labels are bounded: at most `max_clients` distinct clients and
`max_models` distinct models; later ones are counted under `OTHER`, so no caller can grow the
ledger (or the Prometheus series built from it) without limit.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.request import Usage

__all__ = [
    "MAX_LABEL_CHARS",
    "OTHER",
    "TOKEN_KINDS",
    "UsageLedger",
    "UsageRow",
    "UsageTotals",
    "client_label",
]

OTHER: Final = "other"
"""The label that takes every client (or model) past the ledger's bound."""
MAX_LABEL_CHARS: Final = 64
TOKEN_KINDS: Final = ("input", "output", "cache_read", "cache_creation")
"""The kinds of token a provider reports, as `UsageTotals` and Prometheus name them."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_MODEL_CHARS = 128


def client_label(raw: str | None) -> str | None:
    """`raw` as a safe client label: runs of characters other than letters, digits, `.`, `_`
    and `-` become `_`, at most `MAX_LABEL_CHARS` long; None when nothing usable is left."""
    if raw is None:
        return None
    label = _UNSAFE.sub("_", raw.strip())[:MAX_LABEL_CHARS].strip("_")
    return label or None


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals:
    """What some requests used: how many, their tokens of each kind, and their cost (USD)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0
    answered_without_call: int = 0
    saved_usd: float = 0.0

    def tokens(self) -> dict[str, int]:
        """Token counts keyed by `TOKEN_KINDS`."""
        return dict(zip(TOKEN_KINDS, (self.input_tokens, self.output_tokens,
                                      self.cache_read_input_tokens,
                                      self.cache_creation_input_tokens), strict=True))

    def plus(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
            cost_usd=self.cost_usd + other.cost_usd,
            answered_without_call=self.answered_without_call + other.answered_without_call,
            saved_usd=self.saved_usd + other.saved_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """One (model, client) pair's totals."""

    model: str
    client: str
    totals: UsageTotals


class UsageLedger:
    """Running totals per (model, client); see the module docstring for the label bounds.

    Raises ValueError for a `max_clients` or `max_models` below 1.
    """

    __slots__ = ("_clients", "_models", "_rows", "max_clients", "max_models")

    def __init__(self, *, max_clients: int = 64, max_models: int = 64) -> None:
        for name, value in (("max_clients", max_clients), ("max_models", max_models)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.max_clients = max_clients
        self.max_models = max_models
        self._clients: set[str] = set()
        self._models: set[str] = set()
        self._rows: dict[tuple[str, str], UsageTotals] = {}

    def record(self, *, model: str, client: str | None, usage: Usage, cost_usd: float) -> None:
        """Count one answered upstream call of `model` for `client` (None: `anonymous`)."""
        self._add(
            model,
            client,
            UsageTotals(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                cost_usd=cost_usd,
            ),
        )

    def record_without_call(self, *, model: str, client: str | None, saved_usd: float) -> None:
        """Count one answer of `model` that `client` got without an upstream call, and what
        that call would have cost."""
        self._add(model, client, UsageTotals(answered_without_call=1, saved_usd=saved_usd))

    def _add(self, model: str, client: str | None, totals: UsageTotals) -> None:
        key = (
            self._bounded(self._models, model[:_MAX_MODEL_CHARS] or "unknown", self.max_models),
            self._bounded(self._clients, client_label(client) or "anonymous", self.max_clients),
        )
        self._rows[key] = self._rows.get(key, UsageTotals()).plus(totals)

    @staticmethod
    def _bounded(seen: set[str], label: str, limit: int) -> str:
        if label in seen:
            return label
        if len(seen) >= limit:
            return OTHER
        seen.add(label)
        return label

    def rows(self) -> tuple[UsageRow, ...]:
        """Every (model, client) pair seen, sorted by model then client."""
        return tuple(
            UsageRow(model=model, client=client, totals=totals)
            for (model, client), totals in sorted(self._rows.items())
        )

    def by_model(self) -> dict[str, UsageTotals]:
        return self._sum(0)

    def by_client(self) -> dict[str, UsageTotals]:
        return self._sum(1)

    def _sum(self, part: int) -> dict[str, UsageTotals]:
        out: dict[str, UsageTotals] = {}
        for key, totals in sorted(self._rows.items()):
            out[key[part]] = out.get(key[part], UsageTotals()).plus(totals)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `by_model` and `by_client` (name -> totals), and `rows`."""
        return {
            "by_model": {name: t.to_dict() for name, t in self.by_model().items()},
            "by_client": {name: t.to_dict() for name, t in self.by_client().items()},
            "rows": [
                {"model": row.model, "client": row.client, **row.totals.to_dict()}
                for row in self.rows()
            ],
        }
