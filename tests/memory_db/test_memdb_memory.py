"""AgentMemory conformance: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import math

import pytest
from fakeclock import FakeClock

from memory_db import (
    AgentMemory,
    AttemptOutcome,
    ModificationOutcome,
    UnknownRecord,
    open_engine,
)

# -- tasks ------------------------------------------------------------------------------


def test_record_task_stores_every_field(memory: AgentMemory, clock: FakeClock) -> None:
    """A recorded task reads back with its fields and the clock's time."""
    memory.record_task(
        "t1", title="T", prompt="P", priority="high", state="pending", created_by="bob"
    )
    task = memory.task("t1")
    assert (task.task_id, task.title, task.prompt, task.priority) == ("t1", "T", "P", "high")
    assert (task.state, task.created_by) == ("pending", "bob")
    assert task.created_at == task.updated_at == clock.now


def test_record_task_twice_updates_but_keeps_created_at(
    memory: AgentMemory, clock: FakeClock
) -> None:
    """Recording a known task again is an upsert that keeps its creation time."""
    memory.record_task(
        "t1", title="T", prompt="P", priority="low", state="pending", created_by=None
    )
    created = clock.now
    clock.advance(10)
    memory.record_task(
        "t1", title="T2", prompt="P2", priority="high", state="claimed", created_by=None
    )
    task = memory.task("t1")
    assert (task.title, task.prompt, task.priority, task.state) == ("T2", "P2", "high", "claimed")
    assert (task.created_at, task.updated_at) == (created, created + 10)


def test_set_task_state_moves_the_task(memory: AgentMemory, task_id: str, clock: FakeClock) -> None:
    """set_task_state changes the state and the update time."""
    clock.advance(5)
    memory.set_task_state(task_id, "done")
    task = memory.task(task_id)
    assert (task.state, task.updated_at) == ("done", clock.now)


def test_records_are_frozen(memory: AgentMemory, task_id: str) -> None:
    """Returned records are immutable values, not live ORM rows."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        memory.task(task_id).state = "done"  # type: ignore[misc]


# -- attempts ---------------------------------------------------------------------------


def test_finish_attempt_measures_duration_with_the_clock(
    memory: AgentMemory, task_id: str, clock: FakeClock
) -> None:
    """An attempt's duration is the clock's time between start and finish."""
    attempt_id = memory.start_attempt(task_id, attempt=1, agent="a1", log_path="logs/1.log")
    clock.advance(42.5)
    memory.finish_attempt(attempt_id, outcome=AttemptOutcome.FAILED, exit_code=3, reason="boom")
    attempt = memory.attempt(attempt_id)
    assert attempt.duration_s == 42.5
    assert attempt.ended_at == attempt.started_at + 42.5
    assert (attempt.outcome, attempt.exit_code, attempt.reason) == ("failed", 3, "boom")
    assert (attempt.task_id, attempt.attempt, attempt.agent) == (task_id, 1, "a1")
    assert attempt.log_path == "logs/1.log"


def test_running_attempt_has_no_outcome(memory: AgentMemory, task_id: str) -> None:
    """An attempt that has not finished has no outcome, end or duration yet."""
    attempt = memory.attempt(memory.start_attempt(task_id, attempt=1, agent="a1", log_path=None))
    assert (attempt.outcome, attempt.ended_at, attempt.duration_s) == (None, None, None)


def test_finish_attempt_accepts_outcome_values_as_text(memory: AgentMemory, task_id: str) -> None:
    """Outcomes may be given as their string values, as the fleet does."""
    attempt_id = memory.start_attempt(task_id, attempt=1, agent="a1", log_path=None)
    memory.finish_attempt(attempt_id, outcome="timed_out", exit_code=None)
    assert memory.attempt(attempt_id).outcome is AttemptOutcome.TIMED_OUT


def test_attempts_lists_newest_first_and_filters_by_task(
    memory: AgentMemory, task_id: str, clock: FakeClock
) -> None:
    """attempts() is newest first, can be limited, and can be narrowed to one task."""
    memory.record_task("t2", title="", prompt="", priority="low", state="pending", created_by=None)
    for number in (1, 2, 3):
        memory.start_attempt(task_id, attempt=number, agent="a1", log_path=None)
        clock.advance(1)
    memory.start_attempt("t2", attempt=1, agent="a2", log_path=None)
    assert [a.task_id for a in memory.attempts()] == ["t2", task_id, task_id, task_id]
    assert [a.attempt for a in memory.attempts(task_id)] == [3, 2, 1]
    assert [a.attempt for a in memory.attempts(task_id, limit=2)] == [3, 2]


# -- modifications ----------------------------------------------------------------------


def test_record_modification_defaults_to_in_progress(memory: AgentMemory, clock: FakeClock) -> None:
    """A new modification is InProgress, with its files and no metric deltas."""
    mod_id = memory.record_modification("tune breaker", files_changed=["a.py", "b.py"])
    mod = memory.modification(mod_id)
    assert mod.outcome is ModificationOutcome.IN_PROGRESS
    assert (mod.files_changed, dict(mod.metric_deltas), mod.task_id) == (("a.py", "b.py"), {}, None)
    assert mod.created_at == mod.updated_at == clock.now


def test_modification_outcome_values_are_the_gate_vocabulary() -> None:
    """ModificationOutcome's stored values are exactly the five the gate speaks."""
    assert [o.value for o in ModificationOutcome] == [
        "Deployed",
        "RolledBack",
        "ValidationFailed",
        "Rejected",
        "InProgress",
    ]


def test_set_modification_outcome_records_deltas(
    memory: AgentMemory, task_id: str, clock: FakeClock
) -> None:
    """Setting an outcome updates it, its time, and (when given) the metric deltas."""
    mod_id = memory.record_modification(
        "cache ttl", files_changed=["c.py"], task_id=task_id, metric_deltas={"p99_ms": 1}
    )
    clock.advance(3)
    memory.set_modification_outcome(mod_id, "RolledBack", metric_deltas={"p99_ms": 12.5})
    mod = memory.modification(mod_id)
    assert (mod.outcome, dict(mod.metric_deltas)) == (
        ModificationOutcome.ROLLED_BACK,
        {"p99_ms": 12.5},
    )
    assert (mod.task_id, mod.updated_at) == (task_id, clock.now)
    memory.set_modification_outcome(mod_id, ModificationOutcome.DEPLOYED)
    assert dict(memory.modification(mod_id).metric_deltas) == {"p99_ms": 12.5}


def test_a_gated_modification_keeps_its_branch_commit_and_verdicts(
    memory: AgentMemory, task_id: str
) -> None:
    """The gate's record reads back whole; a merge replaces the commit; secrets are redacted."""
    verdicts = [{"name": "pytest", "passed": True, "exit_code": 0, "reason": "exit 0"},
                {"name": "ruff", "passed": False, "exit_code": 1,
                 "reason": "saw sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"}]
    mod_id = memory.record_modification(
        "speed up claims", files_changed=["coordinator/queue.py"], task_id=task_id,
        branch="self-improve/t-1", commit="abc123", verdicts=verdicts,
    )
    memory.set_modification_outcome(mod_id, ModificationOutcome.DEPLOYED, commit="def456")
    mod = memory.modification(mod_id)
    assert (mod.branch, mod.commit, mod.outcome) == ("self-improve/t-1", "def456", "Deployed")
    assert [v["name"] for v in mod.verdicts] == ["pytest", "ruff"]
    assert "sk-ant-api03" not in str(mod.verdicts)


def test_modifications_filter_by_outcome(memory: AgentMemory, clock: FakeClock) -> None:
    """modifications() is newest first and can be narrowed to one outcome."""
    first = memory.record_modification("one", files_changed=[], outcome="Deployed")
    clock.advance(1)
    second = memory.record_modification("two", files_changed=[])
    clock.advance(1)
    third = memory.record_modification("three", files_changed=[], outcome="Deployed")
    assert [m.mod_id for m in memory.modifications()] == [third, second, first]
    assert [m.mod_id for m in memory.modifications("Deployed")] == [third, first]
    assert [m.mod_id for m in memory.modifications(ModificationOutcome.IN_PROGRESS)] == [second]


# -- dead ends and config snapshots -----------------------------------------------------


def test_dead_ends_filter_by_module(memory: AgentMemory, clock: FakeClock) -> None:
    """Dead ends read back newest first, optionally for one module."""
    memory.record_dead_end("bigger cache", module="cache", reason="no gain", evidence="p99 same")
    clock.advance(1)
    memory.record_dead_end("no retries", module="retry", reason="worse", evidence="errors up")
    assert [d.module for d in memory.dead_ends()] == ["retry", "cache"]
    (dead_end,) = memory.dead_ends("cache")
    assert (dead_end.description, dead_end.reason, dead_end.evidence) == (
        "bigger cache",
        "no gain",
        "p99 same",
    )


def test_config_snapshots_newest_first(memory: AgentMemory, clock: FakeClock) -> None:
    """Snapshots keep their values; the latest is the newest one."""
    assert memory.latest_config_snapshot() is None
    memory.snapshot_config("boot", {"concurrency": 4, "nested": {"ttl_s": 30.0}})
    clock.advance(1)
    newest = memory.snapshot_config("after tune", {"concurrency": 6})
    latest = memory.latest_config_snapshot()
    assert latest is not None
    assert (latest.snapshot_id, latest.label, dict(latest.values)) == (
        newest,
        "after tune",
        {"concurrency": 6},
    )
    assert [s.label for s in memory.config_snapshots(limit=5)] == ["after tune", "boot"]
    assert memory.config_snapshots(limit=5)[1].values["nested"] == {"ttl_s": 30.0}


# -- learner states ---------------------------------------------------------------------


def test_learner_state_round_trips_and_is_replaced(memory: AgentMemory, clock: FakeClock) -> None:
    """A saved learner state comes back as saved; saving again replaces it."""
    assert memory.load_learner_state("router") is None
    memory.save_learner_state("router", {"version": 1, "arms": {"a": [1.5, 0.75]}})
    clock.advance(1)
    memory.save_learner_state("router", {"version": 1, "arms": {"b": [2.0, 1.0]}})
    assert memory.load_learner_state("router") == {"version": 1, "arms": {"b": [2.0, 1.0]}}
    assert memory.load_learner_state("other") is None


def test_learner_state_is_redacted_before_it_is_stored(memory: AgentMemory) -> None:
    """Text that looks like an API key inside a learner state never reaches the database."""
    memory.save_learner_state("router", {"note": "key sk-ant-abcdefghijklmnop1234"})
    assert "sk-ant-abcdefghijklmnop1234" not in str(memory.load_learner_state("router"))


# -- unknown ids and bad arguments ------------------------------------------------------


def test_unknown_ids_raise_unknown_record(memory: AgentMemory) -> None:
    """Every call naming a record that does not exist raises UnknownRecord."""
    calls = [
        lambda: memory.task("nope"),
        lambda: memory.set_task_state("nope", "done"),
        lambda: memory.start_attempt("nope", attempt=1, agent="a", log_path=None),
        lambda: memory.attempt(999),
        lambda: memory.finish_attempt(999, outcome="failed", exit_code=1),
        lambda: memory.modification(999),
        lambda: memory.set_modification_outcome(999, "Deployed"),
        lambda: memory.record_modification("x", files_changed=[], task_id="nope"),
    ]
    for call in calls:
        with pytest.raises(UnknownRecord) as caught:
            call()
        assert isinstance(caught.value, LookupError)
    assert memory.attempts() == [] and memory.modifications() == []


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda m, t: m.start_attempt(t, attempt=0, agent="a", log_path=None), "attempt"),
        (lambda m, t: m.start_attempt(t, attempt=1, agent="", log_path=None), "agent"),
        (lambda m, t: m.record_modification("x", files_changed="a.py"), "files_changed"),
        (lambda m, t: m.record_modification("x", files_changed=[], outcome="Done"), "outcome"),
        (
            lambda m, t: m.record_modification(
                "x", files_changed=[], metric_deltas={"a": math.nan}
            ),
            "metric_deltas",
        ),
        (lambda m, t: m.snapshot_config("x", {"when": object()}), "values"),
        (lambda m, t: m.save_learner_state("r", {"w": math.inf}), "state"),
        (lambda m, t: m.save_learner_state("", {}), "name"),
        (lambda m, t: m.attempts(limit=0), "limit"),
        (lambda m, t: m.set_task_state(t, ""), "state"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(
    memory: AgentMemory, task_id: str, call, names: str
) -> None:
    """Bad arguments are refused with a ValueError that names the parameter."""
    with pytest.raises(ValueError, match=names):
        call(memory, task_id)


def test_finish_attempt_rejects_unknown_outcome(memory: AgentMemory, task_id: str) -> None:
    """An outcome outside AttemptOutcome is refused, listing the allowed ones."""
    attempt_id = memory.start_attempt(task_id, attempt=1, agent="a", log_path=None)
    with pytest.raises(ValueError, match="succeeded, failed, timed_out, lease_lost, released"):
        memory.finish_attempt(attempt_id, outcome="exploded", exit_code=1)
    assert memory.attempt(attempt_id).outcome is None


def test_constructor_refuses_url_and_engine_together(tmp_path) -> None:
    """AgentMemory takes a URL or an engine, not both."""
    engine = open_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(ValueError, match="url or engine"):
        AgentMemory(f"sqlite:///{tmp_path / 'm.db'}", engine=engine)
    engine.dispose()


def test_constructor_refuses_a_clock_that_is_not_callable(tmp_path) -> None:
    """The clock must be callable."""
    with pytest.raises(TypeError, match="clock"):
        AgentMemory(f"sqlite:///{tmp_path / 'm.db'}", clock=12.0)  # type: ignore[arg-type]


def test_memory_on_a_passed_engine_leaves_it_open(tmp_path, clock: FakeClock) -> None:
    """close() does not dispose an engine the caller owns."""
    engine = open_engine(f"sqlite:///{tmp_path / 'm.db'}")
    AgentMemory(engine=engine, clock=clock).close()
    second = AgentMemory(engine=engine, clock=clock)
    second.record_task("t", title="", prompt="", priority="low", state="pending", created_by=None)
    assert second.task("t").state == "pending"
    engine.dispose()
