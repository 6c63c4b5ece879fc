"""The orchestrator the coordinator embeds for its fleet: the agents' token cannot change the
live configuration, the coordinator's admin token can, and the fleet's knobs are served too."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from coordinator.agents import resolve_profile
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.metrics import FleetEvents
from coordinator.queue import FolderQueue
from coordinator.task import TaskState
from coordinator.traffic import EmbeddedOrchestrator, agent_headers
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
    embedded = EmbeddedOrchestrator(
        lambda: {}, env_file=tmp_path / "none.env", fleet_config=fleet
    )
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
        bridge.collector.attribute(Attribution(request_id="r-good", provider="echo",
                                               model="echo", arm="echo", task_id="good"))
        bridge.collector.attribute(Attribution(request_id="r-bad", provider="llamacpp",
                                               model="local", arm="llamacpp", task_id="bad"))
        events = FleetEvents()
        events.subscribe(embedded.on_fleet_event)
        Fleet(queue, resolve_profile("echo", {}),
              settings=FleetSettings(poll_s=0.05, workdir=tmp_path, env=env),
              events=events).run(until_empty=True)
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
    assert env == {"ANTHROPIC_CUSTOM_HEADERS": "x-team: blue\nx-orchestrator-agent: agent-3"}
    alone = agent_headers("agent-1@1")
    assert alone == {"ANTHROPIC_CUSTOM_HEADERS": "x-orchestrator-agent: agent-1"}
