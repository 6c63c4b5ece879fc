"""The orchestrator the coordinator embeds for its fleet: the agents' token cannot change the
live configuration, the coordinator's admin token can, and the fleet's knobs are served too."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from coordinator.agents import resolve_profile
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.metrics import FleetEvents
from coordinator.queue import FolderQueue
from coordinator.task import TaskState
from coordinator.traffic import EmbeddedOrchestrator, TaskOutcomePoster, agent_env, agent_headers
from intelligence.feedback import Attribution
from orchestrator.config import LiveConfig


@pytest.fixture(autouse=True)
def echo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "ADMIN_API_KEY", "HOST", "MODEL", "FALLBACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROVIDER", "echo")
    monkeypatch.setenv("PORT", "0")


@pytest.mark.parametrize("api_key", [None, "client-token-abcdef0123"])
def test_agents_cannot_reconfigure_but_the_coordinator_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str | None
) -> None:
    """With or without API_KEY, the key agents get reads /v1/config but a PATCH with it is
    refused (403); the embedded server's admin token changes the fleet's `agents`."""
    if api_key is not None:
        monkeypatch.setenv("API_KEY", api_key)
    fleet = LiveConfig(FleetTunables(agents=2))
    embedded = EmbeddedOrchestrator(lambda: {}, env_file=tmp_path / "none.env", fleet_config=fleet)
    with embedded as env:
        agent = {"x-api-key": env["ANTHROPIC_API_KEY"]}
        url = embedded.url + "/v1/config"
        assert httpx.get(url, headers=agent).json()["values"]["agents"] == 2
        refused = httpx.patch(url, json={"agents": 4}, headers=agent)
        admin = {"Authorization": f"Bearer {embedded.admin_token}"}
        accepted = httpx.patch(url, json={"agents": 4}, headers=admin)
    assert refused.status_code == 403
    assert accepted.json()["changed"] == {"agents": {"old": 2, "new": 4}}
    assert fleet.current.agents == 4
    assert embedded.admin_token not in env.values()


def test_each_finished_attempt_reaches_the_intelligence_bridge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real fleet run on the echo agent, subscribed to the embedded orchestrator: every
    finished attempt reaches `IntelligenceBridge.task_outcome`, a pass crediting the requests
    made for its task as passed and a failure as failed."""
    monkeypatch.setenv("FALLBACK", "llamacpp")  # two providers: a learned router
    monkeypatch.setenv("LLAMA_CPP_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SEMANTIC_DEDUP", "0")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "good.toml").write_text('prompt = "fine"\n')
    (folder / "bad.toml").write_text('prompt = "x"\nmax_attempts = 2\nacceptance = ["false"]\n')
    queue = FolderQueue(folder, retry_backoff_s=0)
    embedded = EmbeddedOrchestrator(lambda: {}, env_file=tmp_path / "none.env")
    with embedded as env:
        bridge = embedded.pipeline.intelligence
        assert bridge.router is not None
        # What an agent's request for each task was answered by, as the pipeline records it.
        bridge.collector.attribute(
            Attribution(
                request_id="r-good", provider="echo", model="echo", arm="echo", task_id="good"
            )
        )
        bridge.collector.attribute(
            Attribution(
                request_id="r-bad",
                provider="llamacpp",
                model="local",
                arm="llamacpp",
                task_id="bad",
            )
        )
        events = FleetEvents()
        events.subscribe(embedded.on_fleet_event)
        Fleet(
            queue,
            resolve_profile("echo", {}),
            settings=FleetSettings(poll_s=0.05, workdir=tmp_path, env=env),
            events=events,
        ).run(until_empty=True)
        stats = bridge.collector.stats
        estimates = {e.arm: e for e in bridge.router.estimates()}
    assert queue.get("good").state == TaskState.DONE
    assert queue.get("bad").state == TaskState.FAILED
    assert stats.received["task"] == 3  # one pass, two failed attempts
    assert stats.router_updates == 2  # each task's request credited once
    assert estimates["echo"].updates_total == 1 and estimates["llamacpp"].updates_total == 1
    assert estimates["echo"].mean_reward > estimates["llamacpp"].mean_reward


def test_agent_headers_keep_the_headers_an_agent_already_sends() -> None:
    """The agent's name is added as one more `ANTHROPIC_CUSTOM_HEADERS` line, not in place of
    the lines the operator set."""
    env = agent_headers("agent-3@999", {"ANTHROPIC_CUSTOM_HEADERS": "x-team: blue"})
    assert env == {
        "ANTHROPIC_CUSTOM_HEADERS": "x-team: blue\nx-orchestrator-agent: agent-3",
        "ORCHESTRATOR_AGENT": "agent-3",  # what the codex profile sends as the agent header
    }
    alone = agent_headers("agent-1@1")
    assert alone["ANTHROPIC_CUSTOM_HEADERS"] == "x-orchestrator-agent: agent-1"


def test_agent_headers_name_the_attempts_task() -> None:
    """An attempt's environment (it has COORDINATOR_TASK_ID) adds `x-orchestrator-task`."""
    env = agent_headers(
        "agent-2@7", {"COORDINATOR_TASK_ID": "fix-7", "ANTHROPIC_CUSTOM_HEADERS": "x-team: blue"}
    )
    assert env["ANTHROPIC_CUSTOM_HEADERS"] == (
        "x-team: blue\nx-orchestrator-agent: agent-2\nx-orchestrator-task: fix-7"
    )


def test_each_attempts_environment_carries_its_own_task_header(tmp_path: Path) -> None:
    """The fleet computes the agent's extra environment per attempt: each task's agent sees
    its own task in `ANTHROPIC_CUSTOM_HEADERS`."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.toml").write_text('prompt = "p"\n')
    queue = FolderQueue(folder)
    Fleet(
        queue,
        resolve_profile('printf %s "$ANTHROPIC_CUSTOM_HEADERS"', {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path, agent_env=agent_headers),
    ).run(until_empty=True)
    for name in ("one", "two"):
        log = (folder / "logs" / name / "attempt-1.log").read_text()
        assert log.splitlines()[-1] == f"x-orchestrator-task: {name}"


# An agent as Claude Code is one: it sends the ANTHROPIC_CUSTOM_HEADERS lines with each call
# (the anthropic SDK reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY itself).
_SDK_AGENT = """
import os, anthropic
lines = os.environ["ANTHROPIC_CUSTOM_HEADERS"].splitlines()
headers = dict(line.split(": ", 1) for line in lines)
client = anthropic.Anthropic(default_headers=headers, max_retries=0)
prompt = os.environ["COORDINATOR_PROMPT"] + " attempt " + os.environ["COORDINATOR_ATTEMPT"]
client.messages.create(model="echo", max_tokens=32,
                       messages=[{"role": "user", "content": prompt}])
"""


def _sdk_fleet(tmp_path: Path, env: dict[str, str], events: FleetEvents) -> FolderQueue:
    """Run a good task and a bad one (two failed attempts) whose agent calls the
    orchestrator through the anthropic SDK, naming its task."""
    agent = tmp_path / "agent.py"
    agent.write_text(_SDK_AGENT)
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "good.toml").write_text('prompt = "fine"\n')
    (folder / "bad.toml").write_text('prompt = "x"\nmax_attempts = 2\nacceptance = ["false"]\n')
    queue = FolderQueue(folder, retry_backoff_s=0)
    Fleet(
        queue,
        resolve_profile(f"{sys.executable} {agent}", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path, env=env, agent_env=agent_headers),
        events=events,
    ).run(until_empty=True)
    assert queue.get("good").state == TaskState.DONE
    assert queue.get("bad").state == TaskState.FAILED
    return queue


def _two_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK", "llamacpp")  # two providers: a learned router
    monkeypatch.setenv("LLAMA_CPP_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SEMANTIC_DEDUP", "0")


def test_an_agents_sdk_calls_are_credited_by_its_tasks_outcome_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end in one process: agents' real SDK calls carry their task's header, so each
    finished attempt credits the answer its agent got (three answers, three verdicts: each
    answer's arm is updated for its quality score and for its task's outcome)."""
    _two_providers(monkeypatch)
    embedded = EmbeddedOrchestrator(lambda: {}, env_file=tmp_path / "none.env")
    with embedded as env:
        bridge = embedded.pipeline.intelligence
        events = FleetEvents()
        events.subscribe(embedded.on_fleet_event)
        _sdk_fleet(tmp_path, env, events)
        stats = bridge.collector.stats
        routing = embedded.pipeline.snapshot().routing
    assert stats.received["task"] == 3 and stats.received["quality"] == 3
    assert stats.unattributed == 0  # every verdict found the request made for its task
    assert stats.router_updates == 6  # three quality scores, three task verdicts
    assert routing["feedback"]["router_updates"] == 6
    answered = sum(a["updates_total"] for a in routing["arms"])
    assert answered == 6 + routing["failures_recorded"]


def test_an_orchestrator_at_a_url_hears_task_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server the coordinator did not start: `TaskOutcomePoster` posts each verdict to its
    `/v1/feedback/task`, which credits the requests the agents' SDK calls made."""
    from orchestrator.assembly import build_pipeline
    from orchestrator.server import ServerThread, create_app
    from orchestrator.settings import load_settings

    _two_providers(monkeypatch)
    pipeline = build_pipeline(load_settings(env_file=tmp_path / "none.env"))
    with ServerThread(create_app(pipeline)) as url:
        events = FleetEvents()
        with TaskOutcomePoster(url) as poster:
            events.subscribe(poster.on_fleet_event)
            _sdk_fleet(tmp_path, agent_env(url), events)
        status = httpx.get(f"{url}/v1/status").json()["routing"]
    assert poster.posted == 3 and poster.failed == 0
    assert status["feedback"]["received"]["task"] == 3
    assert status["feedback"]["unattributed"] == 0
    assert status["feedback"]["router_updates"] == 6


def test_task_outcomes_that_cannot_be_posted_are_logged_once_and_never_fail_the_fleet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the URL: the fleet runs on, one warning says so."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.toml").write_text('prompt = "p"\n')
    queue = FolderQueue(folder)
    events = FleetEvents()
    with (
        caplog.at_level("WARNING", logger="coordinator.traffic"),
        TaskOutcomePoster("http://127.0.0.1:9", timeout_s=1) as poster,
    ):
        events.subscribe(poster.on_fleet_event)
        Fleet(
            queue,
            resolve_profile("echo", {}),
            settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
            events=events,
        ).run(until_empty=True)
    assert all(queue.get(n).state == TaskState.DONE for n in ("a", "b", "c"))
    assert poster.failed == 3 and poster.posted == 0
    warnings = [r for r in caplog.records if "task outcome" in r.getMessage()]
    assert len(warnings) == 1
