"""`HttpConfig` against a real `orchestrator serve` process: the tuner in one process reads and
moves the live config of a server in another, with the admin token, and is refused without."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served import free_port, wait_until_serving

from self_tune.controller import TuningController
from self_tune.errors import ConfigUpdateRejected
from self_tune.live import HttpConfig
from self_tune.telemetry import TelemetrySnapshot

REPO = Path(__file__).resolve().parents[2]
CLIENT = "client-token-for-the-fleet-0001"
ADMIN = "admin-token-for-the-tuner-0002"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`orchestrator serve --provider echo` in its own process, with a client and an admin
    token; waits (bounded) until /health answers."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "API_KEY": CLIENT,
        "ADMIN_API_KEY": ADMIN,
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo",
         "--port", str(port)],
        env=env,
        cwd=tmp_path_factory.mktemp("serve"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_values_are_the_servers_live_values(server_url: str) -> None:
    """`values()` is every numeric tunable the server reports, unlimited ones as None."""
    port = HttpConfig(server_url, admin_token=CLIENT)
    values = port.values()
    port.close()
    assert values["breaker_failure_threshold"] == 5
    assert values["rate_limit_rps"] is None
    assert "inference_concurrency" in values and "cache_ttl_s" in values


def test_apply_moves_the_servers_values_with_the_admin_token(server_url: str) -> None:
    """`apply` with the admin token changes the server's live values and returns old -> new;
    a second client reading over plain HTTP sees the new value."""
    port = HttpConfig(server_url, admin_token=ADMIN)
    before = port.values()["retry_max_attempts"]
    changed = port.apply({"retry_max_attempts": 5, "breaker_open_s": 12.5})
    port.close()
    assert changed == {"retry_max_attempts": (before, 5), "breaker_open_s": (60.0, 12.5)}
    seen = httpx.get(server_url + "/v1/config", headers={"x-api-key": CLIENT}).json()
    assert seen["values"]["retry_max_attempts"] == 5


def test_the_client_token_cannot_change_anything(server_url: str) -> None:
    """With only the client token `apply` raises `ConfigUpdateRejected` saying 403, and the
    token appears nowhere in the error."""
    port = HttpConfig(server_url, admin_token=CLIENT)
    before = port.values()["shed_threshold"]
    with pytest.raises(ConfigUpdateRejected, match="403") as caught:
        port.apply({"shed_threshold": 0.5})
    assert port.values()["shed_threshold"] == before
    port.close()
    assert CLIENT not in str(caught.value)


def test_a_refused_value_names_its_field(server_url: str) -> None:
    """A value outside its bounds raises `ConfigUpdateRejected` whose `field` is the one the
    server named."""
    port = HttpConfig(server_url, admin_token=ADMIN)
    with pytest.raises(ConfigUpdateRejected) as caught:
        port.apply({"cache_ttl_s": 60.0, "rate_limit_rps": 1e-300})
    port.close()
    assert caught.value.field == "rate_limit_rps"
    assert "422" in str(caught.value)


def test_an_unreachable_server_is_a_rejection_not_a_crash() -> None:
    """A server that is not there raises `ConfigUpdateRejected`, which the controller logs."""
    port = HttpConfig(f"http://127.0.0.1:{free_port()}", admin_token=ADMIN, timeout_s=1)
    with pytest.raises(ConfigUpdateRejected, match="ConnectError"):
        port.apply({"cache_ttl_s": 60.0})
    port.close()


def test_the_controller_tunes_a_remote_server(server_url: str) -> None:
    """A `TuningController` acting through `HttpConfig` moves the other process's value: with
    demand far above capacity, inference concurrency doubles on the server (64 -> 128)."""
    port = HttpConfig(server_url, admin_token=ADMIN)
    controller = TuningController(port, clock=lambda: 0.0, only=["inference_concurrency"])
    demand = {
        "requests_per_s": 10_000.0,
        "upstream_calls_per_s": 64.0,
        "inference_active": 64.0,
        "stage.inference.depth": 200.0,
        "latency_p95_ms": 1000.0,
    }
    changes = controller.step(TelemetrySnapshot(taken_at=0.0, values=demand))
    port.close()
    assert [(c.parameter, c.old, c.new, c.applied) for c in changes] == [
        ("inference_concurrency", 64, 128, True)
    ]
    seen = httpx.get(server_url + "/v1/config", headers={"x-api-key": CLIENT}).json()
    assert seen["values"]["inference_concurrency"] == 128
