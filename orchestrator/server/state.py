"""`ServerState`: what the routers share, kept on `app.state.orchestrator`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from orchestrator.config import LiveConfigSet
from orchestrator.pipeline import Pipeline
from orchestrator.server.auth import client_of
from orchestrator.server.embedder import LazyEmbedder
from orchestrator.server.request_counts import RequestCounts
from orchestrator.server.status import FleetStatus, SelfTuneStatus
from orchestrator.settings import ServerSettings

__all__ = ["ServerState", "server_state", "state_of"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerState:
    """The pipeline served, the live configuration clients may read and tune, the settings it
    was started with, the fleet-status hook, the embedding model of `/v1/embeddings`, the
    requests counted by route and status, and the wall clock for the timestamps APIs put in
    answers."""

    pipeline: Pipeline
    config: LiveConfigSet
    settings: ServerSettings | None = None
    fleet_status: FleetStatus | None = None
    self_tune_status: SelfTuneStatus | None = None
    embedder: LazyEmbedder = field(default_factory=LazyEmbedder)
    requests: RequestCounts = field(default_factory=RequestCounts)
    wall_clock: Callable[[], float] = time.time
    _secrets: tuple[str, ...] = field(init=False, repr=False)  # what a client label never is

    def __post_init__(self) -> None:
        settings = self.settings
        keys = () if settings is None else (settings.api_key, settings.admin_api_key,
                                             settings.anthropic_api_key, settings.openai_api_key)
        # frozen: set once here, not read from the settings on every request
        object.__setattr__(self, "_secrets", tuple(k.reveal() for k in keys if k is not None))

    def client_of(self, connection: HTTPConnection) -> str:
        """The usage ledger's label for who sent `connection` (`auth.client_of`, never a
        token)."""
        return client_of(connection.scope, self._secrets)


def state_of(connection: HTTPConnection) -> ServerState:
    """The `ServerState` of the app serving `connection` (a FastAPI dependency)."""
    state: ServerState = connection.app.state.orchestrator
    return state


async def server_state(connection: HTTPConnection) -> ServerState:
    """`state_of` as a FastAPI dependency (async, so FastAPI runs it inline rather than
    hopping to its thread pool on every request)."""
    return state_of(connection)
