"""The usage ledger: requests, tokens and cost by model and by client, with bounded labels."""

from __future__ import annotations

import pytest

from orchestrator import usage
from orchestrator.request import Usage
from orchestrator.usage import OTHER, UsageLedger, client_label


def test_public_surface() -> None:
    """The module exports exactly its documented names."""
    assert sorted(usage.__all__) == [
        "MAX_LABEL_CHARS",
        "OTHER",
        "TOKEN_KINDS",
        "UsageLedger",
        "UsageRow",
        "UsageTotals",
        "client_label",
    ]


def test_records_every_usage_field_by_model_and_client() -> None:
    """Each kind of token and the cost add up per (model, client), per model and per client."""
    ledger = UsageLedger()
    full = Usage(input_tokens=10, output_tokens=5, cache_read_input_tokens=100,
                 cache_creation_input_tokens=7)
    ledger.record(model="m1", client="planner", usage=full, cost_usd=0.5)
    ledger.record(model="m1", client="planner", usage=full, cost_usd=0.25)
    ledger.record(model="m2", client="coder", usage=Usage(output_tokens=1), cost_usd=1.0)
    data = ledger.to_dict()
    assert data["rows"][0] == {
        "model": "m1", "client": "planner", "requests": 2, "input_tokens": 20,
        "output_tokens": 10, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 14,
        "cost_usd": 0.75, "answered_without_call": 0, "saved_usd": 0.0,
    }
    assert data["by_model"]["m2"]["requests"] == 1
    assert data["by_client"]["coder"]["output_tokens"] == 1
    assert sum(c["cost_usd"] for c in data["by_client"].values()) == pytest.approx(1.75)


def test_clients_past_the_bound_are_counted_as_other() -> None:
    """Distinct client labels are bounded; later ones share `other`, known ones keep theirs."""
    ledger = UsageLedger(max_clients=2)
    for client in ("a", "b", "c", "d", "a"):
        ledger.record(model="m", client=client, usage=Usage(), cost_usd=0.0)
    counts = {name: t.requests for name, t in ledger.by_client().items()}
    assert counts == {"a": 2, "b": 1, OTHER: 2}


def test_models_past_the_bound_are_counted_as_other() -> None:
    """Distinct model labels are bounded too (a client may name any model)."""
    ledger = UsageLedger(max_models=1)
    for model in ("m1", "m2", "m3"):
        ledger.record(model=model, client="x", usage=Usage(), cost_usd=0.0)
    assert set(ledger.by_model()) == {"m1", OTHER}


def test_labels_are_sanitised_and_bounded_in_length() -> None:
    """Unsafe characters become `_`, long labels are cut, empty ones fall to None."""
    assert client_label("agent-1@4242") == "agent-1_4242"
    assert client_label('x"} evil{') == "x_evil"
    assert client_label("a" * 500) == "a" * usage.MAX_LABEL_CHARS
    assert client_label("  ") is None
    assert client_label(None) is None
    ledger = UsageLedger()
    ledger.record(model="m", client="\n\n", usage=Usage(), cost_usd=0.0)
    assert set(ledger.by_client()) == {"anonymous"}


def test_bounds_are_validated() -> None:
    """A bound below 1 is refused, naming the parameter."""
    with pytest.raises(ValueError, match="max_clients"):
        UsageLedger(max_clients=0)


def test_an_answer_without_a_call_is_counted_apart_from_the_calls() -> None:
    """Served from a cache or by dedup: no request, tokens or cost of its own, but one answer
    without a call and what it saved, under the client that got it."""
    ledger = UsageLedger()
    ledger.record(model="m1", client="planner", usage=Usage(input_tokens=10), cost_usd=0.5)
    ledger.record_without_call(model="m1", client="reviewer", saved_usd=0.5)
    ledger.record_without_call(model="m1", client="reviewer", saved_usd=0.5)
    reviewer = ledger.by_client()["reviewer"]
    assert (reviewer.requests, reviewer.input_tokens, reviewer.cost_usd) == (0, 0, 0.0)
    assert (reviewer.answered_without_call, reviewer.saved_usd) == (2, 1.0)
    assert ledger.by_model()["m1"].requests == 1
