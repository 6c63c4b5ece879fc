"""Cost through the pipeline: pricing, budgets, and never billing a failed attempt."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeclock import FakeClock
from pipeline_fakes import ScriptedWorker

from orchestrator import BudgetExceeded, InferenceRequest, Pipeline, PipelineConfig, ProviderError

# ScriptedWorker reports 100 input and 10 output tokens per answer: $0.10 + $0.02 = $0.12.
PRICES = """
[models.priced]
input_per_mtok_usd = 1000.0
output_per_mtok_usd = 2000.0
"""


@pytest.fixture
def price_table(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return path


def _config(price_table: Path, **settings: object) -> PipelineConfig:
    return PipelineConfig(price_table_path=price_table, cache_enabled=False, **settings)  # type: ignore[arg-type]


async def test_each_answer_is_priced_from_the_table(price_table: Path) -> None:
    """cost_usd is usage times the model's price; the snapshot sums it."""
    async with Pipeline(_config(price_table), ScriptedWorker(model="priced")) as pipeline:
        response = await pipeline.infer(InferenceRequest("q"))
        assert pipeline.snapshot().cost_usd_total == pytest.approx(0.12)
    assert response.cost_usd == pytest.approx(0.12)


async def test_session_budget_warns_then_refuses(price_table: Path) -> None:
    """With $0.30 per session: the 2nd answer crosses 80% (warning), the 4th is refused;
    another session is unaffected."""
    config = _config(price_table, session_budget_usd=0.30)
    async with Pipeline(config, ScriptedWorker(model="priced")) as pipeline:
        await pipeline.infer(InferenceRequest("q1", session_id="a"))
        await pipeline.infer(InferenceRequest("q2", session_id="a"))
        assert pipeline.snapshot().budget_warnings == 1
        await pipeline.infer(InferenceRequest("q3", session_id="a"))
        with pytest.raises(BudgetExceeded) as info:
            await pipeline.infer(InferenceRequest("q4", session_id="a"))
        await pipeline.infer(InferenceRequest("q4", session_id="b"))
        assert pipeline.snapshot().budget_refusals == 1
    assert info.value.scope == "session:a"


async def test_global_budget_refuses_everyone(price_table: Path) -> None:
    """Once the global budget is spent, every session is refused."""
    config = _config(price_table, global_budget_usd=0.2)
    async with Pipeline(config, ScriptedWorker(model="priced")) as pipeline:
        await pipeline.infer(InferenceRequest("q1", session_id="a"))
        await pipeline.infer(InferenceRequest("q2", session_id="b"))
        with pytest.raises(BudgetExceeded, match="global"):
            await pipeline.infer(InferenceRequest("q3", session_id="c"))


async def test_retries_and_fallbacks_bill_only_the_answer(
    price_table: Path, clock: FakeClock
) -> None:
    """Round 1: primary and backup fail; round 2: primary fails, backup answers. Four calls,
    one bill."""
    primary_down = ProviderError("primary", "unavailable", status=503, retryable=True)
    backup_down = ProviderError("backup", "unavailable", status=503, retryable=True)
    primary = ScriptedWorker("primary", script=[primary_down, primary_down], model="priced")
    backup = ScriptedWorker("backup", script=[backup_down], model="priced")
    config = _config(price_table, seed=3)
    async with Pipeline(config, primary, backup, clock=clock, sleep=clock.sleep) as pipeline:
        response = await pipeline.infer(InferenceRequest("q", session_id="s"))
        assert pipeline.budget.session_spent_usd("s") == pytest.approx(0.12)
        assert pipeline.snapshot().upstream_calls == 4
    assert response.cost_usd == pytest.approx(0.12)
