"""Meta-tasks: findings become real task files, within cooldowns, caps, and the memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeclock import FakeClock

from coordinator.task import Priority, parse_task_file
from memory_db import AgentMemory, ModificationOutcome
from self_tune.detectors import Severity
from self_tune.metatasks import (
    CREATED_BY,
    Finding,
    FindingKind,
    MetaTaskGenerator,
    suspects_for,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def memory(tmp_path: Path):
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as opened:
        yield opened


def error_spike(**overrides) -> Finding:
    fields = dict(kind=FindingKind.ANOMALY, metric="error_rate", severity=Severity.CRITICAL,
                  observed=0.31, baseline=0.0, window_s=60.0)
    return Finding(**{**fields, **overrides})


@pytest.mark.parametrize("kind", list(FindingKind))
def test_every_kind_round_trips_through_the_task_parser(
    tmp_path: Path, clock: FakeClock, kind: FindingKind
) -> None:
    """What the generator writes is a task file the coordinator accepts, marked for the gate."""
    generator = MetaTaskGenerator(tmp_path, acceptance=["pytest -q tests/x"], clock=clock)
    proposal = generator.propose(error_spike(kind=kind, detail="line one\n\"quoted\" ünïcode"))
    assert proposal.written is not None
    [task] = parse_task_file(proposal.written)
    assert task.id == proposal.task_id == proposal.written.stem
    assert task.created_by == CREATED_BY and task.gate is True
    assert task.priority is Priority.HIGH
    assert task.acceptance == ("pytest -q tests/x",)
    assert "self-improve" in task.tags and "metric:error_rate" in task.tags
    assert "ünïcode" in task.prompt


def test_the_prompt_names_metric_baseline_window_and_suspects(
    tmp_path: Path, clock: FakeClock
) -> None:
    """An agent reading the task knows what moved, by how much, and where to start."""
    proposal = MetaTaskGenerator(tmp_path, clock=clock).propose(error_spike())
    [task] = parse_task_file(proposal.written)
    assert "error_rate: observed 0.31 against a baseline of 0 over the last 1 min" in task.prompt
    assert "- orchestrator/stages/inference.py" in task.prompt


def test_suspects_follow_the_metric_to_its_module() -> None:
    """The metric → module map fills in a stage or provider name from the metric."""
    assert suspects_for("stage.assemble.latency_p95_ms")[0] == "orchestrator/stages/assemble.py"
    assert suspects_for("provider.anthropic.errors")[0] == "orchestrator/providers/anthropic.py"
    assert suspects_for("claim_latency_p99_ms") == ("coordinator/queue.py",)
    assert suspects_for("something_new") == ("orchestrator/pipeline.py",)


def test_a_kind_waits_out_its_cooldown(tmp_path: Path, clock: FakeClock) -> None:
    """A second finding of the same kind inside the cooldown writes nothing and says why."""
    generator = MetaTaskGenerator(tmp_path, clock=clock,
                                  cooldowns_s={FindingKind.ANOMALY: 100.0})
    assert generator.propose(error_spike(metric="latency_p95_ms")).written
    clock.now += 50
    refused = generator.propose(error_spike(metric="shed_rate"))
    assert refused.written is None and "cooldown" in refused.reason
    clock.now += 51
    assert generator.propose(error_spike(metric="shed_rate")).written


def test_no_duplicate_of_an_open_task_on_the_same_theme(tmp_path: Path, clock: FakeClock) -> None:
    """While a task on a theme is pending or claimed, the theme gets no second task."""
    open_ids: list[str] = []
    generator = MetaTaskGenerator(tmp_path, clock=clock, open_task_ids=lambda: open_ids,
                                  cooldowns_s={FindingKind.ANOMALY: 0.0})
    first = generator.propose(error_spike())
    open_ids.append(first.task_id)
    again = generator.propose(error_spike())
    assert again.written is None and "still open" in again.reason
    open_ids.clear()
    assert generator.propose(error_spike()).written


def test_an_hourly_cap_bounds_how_many_tasks_are_written(tmp_path: Path, clock: FakeClock) -> None:
    """Past the cap, nothing is written until an hour has gone by."""
    generator = MetaTaskGenerator(tmp_path, clock=clock, max_per_hour=2,
                                  cooldowns_s={FindingKind.ANOMALY: 0.0})
    for metric in ("a_latency", "b_latency"):
        assert generator.propose(error_spike(metric=metric)).written
    capped = generator.propose(error_spike(metric="c_latency"))
    assert capped.written is None and "cap of 2" in capped.reason
    clock.now += 3600
    assert generator.propose(error_spike(metric="c_latency")).written


def test_three_failures_on_a_theme_make_a_dead_end(
    tmp_path: Path, clock: FakeClock, memory: AgentMemory
) -> None:
    """After repeated failed attempts on a theme it is a dead end, and no further task comes."""
    generator = MetaTaskGenerator(tmp_path, memory=memory, clock=clock,
                                  cooldowns_s={FindingKind.ANOMALY: 0.0})
    finding = error_spike()
    for n in range(3):
        proposal = generator.propose(finding)
        assert proposal.written, proposal.reason
        memory.record_task(proposal.task_id, title="t", prompt="p", priority="high",
                           state="done", created_by=CREATED_BY)
        memory.record_modification(f"attempt {n}", files_changed=["x.py"],
                                   outcome=ModificationOutcome.VALIDATION_FAILED,
                                   task_id=proposal.task_id)
        became = generator.record_outcome(proposal.task_id, "ValidationFailed", finding=finding)
        assert became is (n == 2)
    [dead] = memory.dead_ends()
    assert dead.module == "orchestrator/stages/inference.py"
    refused = generator.propose(finding)
    assert refused.written is None and "dead end" in refused.reason


def test_the_prompt_lists_what_was_tried_before(
    tmp_path: Path, clock: FakeClock, memory: AgentMemory
) -> None:
    """Earlier attempts on the theme reach the next agent, so it does not repeat them."""
    generator = MetaTaskGenerator(tmp_path, memory=memory, clock=clock,
                                  cooldowns_s={FindingKind.ANOMALY: 0.0})
    first = generator.propose(error_spike())
    memory.record_task(first.task_id, title="t", prompt="p", priority="high", state="done",
                       created_by=CREATED_BY)
    memory.record_modification("raised the retry budget", files_changed=["r.py"],
                               outcome=ModificationOutcome.ROLLED_BACK, task_id=first.task_id)
    second = generator.propose(error_spike())
    [task] = parse_task_file(second.written)
    assert f"{first.task_id}: RolledBack — raised the retry budget" in task.prompt


def test_a_batch_of_static_findings_is_one_capped_task(tmp_path: Path, clock: FakeClock) -> None:
    """Static findings are batched into one task listing at most `limit` of them."""
    findings = [Finding(kind=FindingKind.STATIC, metric="ruff.F401", detail=f"a.py:{n} unused",
                        suspects=("a.py",)) for n in range(15)]
    proposal = MetaTaskGenerator(tmp_path, clock=clock).propose_batch(findings, limit=5)
    [task] = parse_task_file(proposal.written)
    assert task.prompt.count(" unused") == 5 and "… and 10 more" in task.prompt
