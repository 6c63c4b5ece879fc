"""The loop's parts as `coordinator --self-improve` composes them, without subprocesses:
dead ends from gated outcomes, its settings, the combined config port, the loop lock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakeclock import FakeClock
from gitrepo import make_repo

from coordinator.errors import ConfigError
from coordinator.self_improve import LoopLock, LoopLockHeld, SelfImprovement, SelfImproveSettings
from coordinator.settings import load_settings
from coordinator.task import parse_task_file
from memory_db import AgentMemory, ModificationOutcome
from orchestrator.config import LiveConfig
from self_tune import GateCommand, GateSettings
from self_tune.errors import ConfigUpdateRejected
from self_tune.live import CombinedConfig, LocalConfig
from self_tune.metatasks import Finding, FindingKind, MetaTaskGenerator


def test_three_rejected_attempts_on_a_theme_make_a_dead_end_and_no_fourth_task(
    tmp_path: Path,
) -> None:
    """Each meta-task's agent changes nothing (Rejected); after the third the theme is a
    recorded dead end and the generator writes no more tasks on it."""
    repo = make_repo(tmp_path / "repo")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    clock = FakeClock()
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        loop = SelfImprovement(
            SelfImproveSettings(repo=repo, gate=GateSettings(
                commands=(GateCommand(name="check", command="true"),))),
            tasks_dir=tasks, open_task_ids=tuple, sources=(), config=None, memory=memory,
            gate_env=None, monotonic=clock)
        finding = Finding(kind=FindingKind.ANOMALY, metric="latency_p95_ms", observed=900.0,
                          baseline=100.0, window_s=60.0)
        for attempt in range(3):
            proposal = loop.generator.propose(finding)
            assert proposal.written is not None, proposal.reason
            [task] = parse_task_file(proposal.written)
            proposal.written.unlink()  # the fleet took it, and recorded it
            memory.record_task(task.id, title=task.title, prompt=task.prompt,
                               priority=str(task.priority), state="claimed",
                               created_by=task.created_by)
            worktree = loop.gating.begin(task, 1)
            conclusion = loop.gating.conclude(task, worktree, agent_passed=True)
            assert conclusion.outcome is ModificationOutcome.REJECTED, attempt
            clock.advance(3600.0)  # past every cooldown
        refused = loop.generator.propose(finding)
        assert refused.written is None
        assert "dead end" in refused.reason
        [dead_end] = memory.dead_ends()
        assert dead_end.module == "orchestrator/stages/inference.py"
        assert "3 gated attempts" in dead_end.reason


def test_finding_of_reads_back_the_theme_a_meta_task_was_written_for(tmp_path: Path) -> None:
    finding = Finding(kind=FindingKind.PINNED, metric="param.inference_concurrency")
    proposal = MetaTaskGenerator(tmp_path).propose(finding)
    assert proposal.written is not None
    [task] = parse_task_file(proposal.written)
    back = MetaTaskGenerator.finding_of(task.tags)
    assert back is not None and back.theme == finding.theme and back.kind is finding.kind
    assert MetaTaskGenerator.finding_of(("urgent",)) is None


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coordinator.toml"
    path.write_text(text)
    return path


def test_self_improve_and_gate_tables_are_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
[self_improve]
repo = "project"
merge = "auto"
telemetry_interval_s = 0.5
[gate]
commands = [{ name = "lint", command = "ruff check .", timeout_s = 60 }]
bench = { command = "python bench.py" }
bench_lower_is_better = ["p95_ms"]
""")
    loop = load_settings({}, environ={}, config_path=path).self_improve_settings()
    assert loop.repo == (tmp_path / "project").resolve()
    assert str(loop.merge) == "auto" and loop.telemetry_interval_s == 0.5
    assert [(c.name, c.command, c.timeout_s) for c in loop.gate.commands] == [
        ("lint", "ruff check .", 60.0)]
    assert loop.gate.bench is not None and loop.gate.bench.command == "python bench.py"
    assert loop.gate.bench_lower_is_better == ("p95_ms",)


@pytest.mark.parametrize(("text", "named"), [
    ("[self_improve]\nmerge = 'sometimes'\n", "merge"),
    ("[self_improve]\ntelemetry_interval_s = 'fast'\n", "telemetry_interval_s"),
    ("[self_improve]\ncolour = 'blue'\n", "colour"),
    ("[gate]\ncommands = []\n", "commands"),
    ("[gate]\ncommands = [{ name = 'x' }]\n", "commands[0]"),
    ("[gate]\ncommands = [{ command = 'true', timeout_s = -1 }]\n", "timeout_s"),
    ("[gate]\nbench_margin = 'big'\n", "bench_margin"),
])
def test_a_bad_loop_setting_is_refused_naming_the_key(tmp_path: Path, text: str,
                                                      named: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(named)) as caught:
        load_settings({}, environ={}, config_path=path)
    assert str(path) in str(caught.value)


def test_combined_config_routes_each_name_to_the_port_that_holds_it() -> None:
    from coordinator.fleet import FleetTunables
    from orchestrator.config import Tunables

    pipeline, fleet = LiveConfig(Tunables()), LiveConfig(FleetTunables())
    port = CombinedConfig(LocalConfig(pipeline), LocalConfig(fleet))
    assert {"inference_concurrency", "agents", "lease_s"} <= set(port.values())
    changed = port.apply({"inference_concurrency": 8, "agents": 3})
    assert changed == {"inference_concurrency": (Tunables().inference_concurrency, 8),
                       "agents": (FleetTunables().agents, 3)}
    assert pipeline.current.inference_concurrency == 8 and fleet.current.agents == 3
    with pytest.raises(ConfigUpdateRejected, match="nonsense"):
        port.apply({"nonsense": 1})


def test_the_loop_lock_admits_one_holder_and_names_it(tmp_path: Path) -> None:
    with LoopLock(tmp_path), pytest.raises(LoopLockHeld, match="pid"):
        LoopLock(tmp_path).acquire()
    with LoopLock(tmp_path):  # released on exit: the next one gets it
        pass


def test_a_tick_publishes_the_loops_state_for_status(tmp_path: Path) -> None:
    """Sample → tune → watch → the status file `coordinator status` reads."""
    from coordinator.fleet import FleetTunables
    from coordinator.self_improve import read_status

    class Source:
        name = "fake"

        def __init__(self) -> None:
            self.error_rate = 0.0

        def read(self) -> dict[str, float]:
            return {"error_rate": self.error_rate}

    source = Source()
    repo = make_repo(tmp_path / "repo")
    clock = FakeClock()
    loop = SelfImprovement(
        SelfImproveSettings(repo=repo), tasks_dir=tmp_path / "tasks", open_task_ids=tuple,
        sources=(source,), config=LocalConfig(LiveConfig(FleetTunables())), memory=None,
        gate_env=None, clock=clock, monotonic=clock)
    loop.tick()
    source.error_rate = 0.5  # the objective (10%) is breached
    clock.advance(5.0)
    loop.tick()
    status = read_status(tmp_path / "tasks")
    assert status is not None and status["ticks"] == 2
    [anomaly] = status["anomalies"]
    assert anomaly["metric"] == "error_rate" and anomaly["severity"] == "Critical"
    assert anomaly["task_id"] and (tmp_path / "tasks" / f"{anomaly['task_id']}.toml").exists()
    assert {p["name"] for p in status["parameters"]} == {"agents", "lease_s"}


def test_telemetry_is_kept_in_memory_once_a_minute_and_queryable(tmp_path: Path) -> None:
    """Rounds every 5 s store one snapshot a minute; `memory query telemetry` shows them."""
    from memory_db import run_named_query

    class Source:
        name = "fake"

        def read(self) -> dict[str, float]:
            return {"error_rate": 0.01, "latency_p95_ms": 120.0}

    repo = make_repo(tmp_path / "repo")
    clock = FakeClock()
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        loop = SelfImprovement(
            SelfImproveSettings(repo=repo, static_findings=False), tasks_dir=tmp_path / "t",
            open_task_ids=tuple, sources=(Source(),), config=None, memory=memory,
            gate_env=None, clock=clock, monotonic=clock)
        for _ in range(25):  # 125 s of rounds
            loop.tick()
            clock.advance(5.0)
        stored = memory.telemetry()
        assert [r.taken_at for r in stored] == [1_000_120.0, 1_000_060.0, 1_000_000.0]
        assert len(stored) == 3 and stored[0].values["latency_p95_ms"] == 120.0
        assert stored[0].sources == ("fake",)
        columns, rows = run_named_query(memory.engine, "telemetry")
        assert list(columns) == ["telemetry_id", "taken_at", "sources", "metric_values"]
        assert len(rows) == 3


def test_only_the_newest_telemetry_is_kept(tmp_path: Path) -> None:
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        for t in range(10):
            memory.record_telemetry(float(t), {"x": float(t), "bad": float("nan")}, keep=4)
        kept = memory.telemetry()
        assert [r.taken_at for r in kept] == [9.0, 8.0, 7.0, 6.0]
        assert dict(kept[0].values) == {"x": 9.0}  # non-finite values are not stored


def test_the_loops_tuning_changes_are_kept_in_agent_memory(tmp_path: Path) -> None:
    """A change the loop's controller makes is a modification in the agent memory, and after
    it ran a while the record carries the metric it aimed at, before and after."""
    from coordinator.fleet import FleetTunables

    class Source:
        name = "fake"

        def read(self) -> dict[str, float]:  # heartbeats every 5 s: a shorter lease is safe
            return {"fleet.heartbeat_gap.p99_s": 5.0, "fleet.heartbeat_gap.count": 9.0,
                    "fleet.leases.lost_per_s": 0.0}

    live = LiveConfig(FleetTunables())
    clock = FakeClock()
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        loop = SelfImprovement(
            SelfImproveSettings(repo=make_repo(tmp_path / "repo"), static_findings=False),
            tasks_dir=tmp_path / "t", open_task_ids=tuple, sources=(Source(),),
            config=LocalConfig(live), memory=memory, gate_env=None, clock=clock,
            monotonic=clock)
        for _ in range(20):
            loop.tick()
            clock.advance(5.0)
        first = min(memory.modifications(), key=lambda m: m.mod_id)
        assert first.description.startswith("self_tune tuned: lease_s")
        assert first.outcome is ModificationOutcome.DEPLOYED
        assert first.metric_deltas["fleet.leases.lost_per_s.before"] == 0.0
        assert "objective.after" in first.metric_deltas
        assert live.current.lease_s < FleetTunables().lease_s
