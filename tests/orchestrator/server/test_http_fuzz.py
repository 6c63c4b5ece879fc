"""Fuzz the HTTP API from its own OpenAPI spec: nothing a client sends produces a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from conftest import echo_pipeline
from hypothesis import HealthCheck, given, settings

from orchestrator.server import ServerThread, create_app
from orchestrator.settings import ServerSettings

SETTINGS = ServerSettings(provider="echo", max_body_bytes=4096)  # oversized bodies get tried too
SCHEMA = schemathesis.openapi.from_dict(create_app(echo_pipeline(), settings=SETTINGS).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Negative cases need something to break: only operations that take a body get them.
CASES = [
    pytest.param(op, mode, id=f"{op.label} {mode}")
    for op in OPERATIONS
    for mode in schemathesis.GenerationMode
    if mode is schemathesis.GenerationMode.POSITIVE or len(op.body)
]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with ServerThread(create_app(echo_pipeline(), settings=SETTINGS)) as url:
        # The first embeddings request loads the local model (seconds, more on a busy
        # machine); load it here, so the fuzzed requests' 10 s timeout measures serving.
        warm = httpx.post(url + "/v1/embeddings", json={"model": "m", "input": "warm"},
                          timeout=300)
        assert warm.status_code == 200, warm.text
        yield url


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_request_gets_a_server_error(
    server_url: str, operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode
) -> None:
    """Generated requests to the operation, valid (positive) and invalid (negative), all get a
    non-5xx answer."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=server_url, timeout=10)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        )

    check()
