"""Price table and budgets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchestrator.cost import Budget, ModelPrice, PriceTable
from orchestrator.errors import BudgetExceeded
from orchestrator.request import Usage


def test_shipped_table_prices_known_models() -> None:
    """The packaged table has prices, and the echo model is free."""
    table = PriceTable.load()
    assert table.cost_usd("echo", Usage(input_tokens=1000, output_tokens=1000)) == 0.0
    assert table.price("claude-sonnet-4-5") is not None


def test_cost_is_tokens_times_price_per_million() -> None:
    """1M input at $3 plus 0.5M output at $15 is $10.50."""
    table = PriceTable({"m": ModelPrice(input_per_mtok_usd=3.0, output_per_mtok_usd=15.0)})
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert table.cost_usd("m", usage) == pytest.approx(10.5)


def test_dated_model_names_find_their_family_price() -> None:
    """A model id with a date suffix is priced as the longest matching table entry."""
    table = PriceTable(
        {
            "gpt-4o": ModelPrice(input_per_mtok_usd=2.5, output_per_mtok_usd=10),
            "gpt-4o-mini": ModelPrice(input_per_mtok_usd=0.15, output_per_mtok_usd=0.6),
        }
    )
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini")


def test_unknown_models_cost_nothing_and_are_counted() -> None:
    """An unpriced model is free but visible in `unpriced`."""
    table = PriceTable({})
    assert table.cost_usd("mystery", Usage(input_tokens=10)) == 0.0
    assert table.unpriced == {"mystery": 1}


def test_a_table_file_is_merged_over_the_shipped_one(tmp_path: Path) -> None:
    """A TOML file given by path adds and replaces prices; the shipped ones stay."""
    path = tmp_path / "prices.toml"
    path.write_text(
        "[models.mine]\ninput_per_mtok_usd = 1.0\noutput_per_mtok_usd = 2.0\n"
        '[models."claude-sonnet-5"]\ninput_per_mtok_usd = 9.0\noutput_per_mtok_usd = 9.0\n'
    )
    table = PriceTable.load(path)
    assert table.price("mine") == ModelPrice(input_per_mtok_usd=1.0, output_per_mtok_usd=2.0)
    assert table.price("claude-sonnet-5-5") == ModelPrice(
        input_per_mtok_usd=9.0, output_per_mtok_usd=9.0
    )
    assert table.price("echo") is not None


@pytest.mark.parametrize(
    "model",
    [
        "claude-sonnet-5-5",  # the gateway's Anthropic default
        "claude-opus-5-5",  # Claude Code's default
        "gpt-5.4-mini",  # the gateway's OpenAI default
        "gpt-6.2-sol",  # Codex's default
        "llama.cpp",  # the llama.cpp provider's name for its model
    ],
)
def test_every_default_model_is_priced(model: str) -> None:
    """The shipped table prices the models the gateway and the agent CLIs use by default."""
    assert PriceTable.load().price(model) is not None


def test_default_models_are_the_priced_ones() -> None:
    """The providers' default models are the ones the table prices."""
    from orchestrator.settings import default_model

    table = PriceTable.load()
    for provider in ("anthropic", "openai", "llamacpp", "echo"):
        assert table.price(default_model(provider)) is not None, provider  # type: ignore[arg-type]


def test_cache_reads_and_writes_are_billed_at_their_own_prices() -> None:
    """Cache reads cost a tenth and cache writes 1.25x the input price unless given."""
    price = ModelPrice(input_per_mtok_usd=10.0, output_per_mtok_usd=20.0)
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
        cache_creation_input_tokens=1_000_000,
    )
    assert price.cost_usd(usage) == pytest.approx(10 + 20 + 1 + 12.5)
    explicit = ModelPrice(
        input_per_mtok_usd=10.0,
        output_per_mtok_usd=20.0,
        cache_read_per_mtok_usd=2.0,
        cache_write_per_mtok_usd=3.0,
    )
    assert explicit.cost_usd(usage) == pytest.approx(10 + 20 + 2 + 3)


def test_an_unpriced_model_is_a_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    """The first request for an unpriced model logs a warning saying how to price it."""
    table = PriceTable({})
    with caplog.at_level(logging.WARNING, logger="orchestrator.cost"):
        table.cost_usd("mystery", Usage(input_tokens=10))
        table.cost_usd("mystery", Usage(input_tokens=10))
    warnings = [r for r in caplog.records if "mystery" in r.getMessage()]
    assert len(warnings) == 1
    assert "--prices" in warnings[0].getMessage()


def test_malformed_table_names_file_and_model(tmp_path: Path) -> None:
    """A bad entry raises ValueError naming the file and the model."""
    path = tmp_path / "prices.toml"
    path.write_text("[models.bad]\ninput_per_mtok_usd = -1\noutput_per_mtok_usd = 0\n")
    with pytest.raises(ValueError, match=r"prices\.toml.*'bad'.*input_per_mtok_usd"):
        PriceTable.load(path)


def test_budget_warns_once_at_eighty_percent(caplog: pytest.LogCaptureFixture) -> None:
    """Crossing 80% of a limit logs a warning and counts it, once per scope."""
    budget = Budget(global_limit_usd=1.0)
    budget.charge(None, 0.79)
    assert budget.warnings == 0
    with caplog.at_level(logging.WARNING, logger="orchestrator.cost"):
        budget.charge(None, 0.02)
        budget.charge(None, 0.01)
    assert budget.warnings == 1
    assert "budget global at 81%" in caplog.text


def test_budget_refuses_at_the_limit() -> None:
    """Once spend reaches the global limit, further requests raise BudgetExceeded."""
    budget = Budget(global_limit_usd=1.0)
    budget.charge(None, 1.0)
    with pytest.raises(BudgetExceeded) as info:
        budget.check(None)
    assert info.value.scope == "global"
    assert budget.refusals == 1


def test_session_budgets_are_separate() -> None:
    """One session exhausting its budget does not block another."""
    budget = Budget(session_limit_usd=0.5)
    budget.charge("a", 0.5)
    with pytest.raises(BudgetExceeded, match="session:a"):
        budget.check("a")
    budget.check("b")
    assert budget.session_spent_usd("a") == 0.5


def test_a_request_that_would_cross_the_limit_is_refused() -> None:
    """The estimate of the coming request counts toward the check."""
    budget = Budget(global_limit_usd=1.0)
    budget.charge(None, 0.9)
    budget.check(None, estimate_usd=0.05)
    with pytest.raises(BudgetExceeded):
        budget.check(None, estimate_usd=0.2)


def test_budget_validates_limits() -> None:
    """Non-positive limits raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match="session_limit_usd"):
        Budget(session_limit_usd=0)
    with pytest.raises(ValueError, match="warn_fraction"):
        Budget(warn_fraction=0)
