"""The orchestrator the coordinator embeds for its fleet: the agents' token cannot change the
live configuration, the coordinator's admin token can, and the fleet's knobs are served too."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from coordinator.fleet import FleetTunables
from coordinator.traffic import EmbeddedOrchestrator
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
