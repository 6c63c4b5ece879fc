"""Routing the fleet's own LLM traffic through an orchestrator server.

Agents started by the coordinator get `ANTHROPIC_BASE_URL` and `OPENAI_BASE_URL` pointing at
the orchestrator (the `codex` profile passes the latter to Codex), so Claude Code, Codex and
any Anthropic- or OpenAI-SDK program they run send
their inference through the pipeline: identical concurrent calls from different agents
reach the upstream once, and every call is metered and visible on its dashboard. Agents
get the server's client token (or a placeholder) as their API key: the real provider key
stays with the orchestrator and never reaches an agent process, and neither does the admin
token, so an agent cannot change the live configuration.

Each agent also names itself to the orchestrator (`agent_headers`), so the usage ledger shows
requests, tokens and cost per agent: Claude Code sends the `x-orchestrator-agent` header given
in `ANTHROPIC_CUSTOM_HEADERS`. Codex and the OpenAI SDK read no such variable, so their traffic
is labelled by its token's role (`client`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from coordinator.metrics import EventKind, FleetEvent

if TYPE_CHECKING:
    from orchestrator.config import LiveConfig

PLACEHOLDER_KEY = "via-orchestrator"  # the SDKs refuse to start without some key

# How a finished attempt reads as a task verdict (`intelligence.TaskVerdict`'s values); a
# released or lost attempt is no verdict on the answers it got.
_VERDICTS = {EventKind.SUCCEEDED: "passed", EventKind.FAILED: "failed"}


def agent_env(url: str, token: str | None = None) -> dict[str, str]:
    """The environment that points an agent's Anthropic and OpenAI SDKs at `url`."""
    url = url.rstrip("/")
    key = token or PLACEHOLDER_KEY
    return {
        "ANTHROPIC_BASE_URL": url,
        "OPENAI_BASE_URL": f"{url}/v1",
        "ANTHROPIC_API_KEY": key,
        "OPENAI_API_KEY": key,
        "CODEX_API_KEY": key,  # what `codex exec` authenticates with
    }


AGENT_HEADER = "x-orchestrator-agent"  # orchestrator.server.auth.AGENT_HEADER (not imported:
# `coordinator --help` stays fast)


def agent_headers(agent: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that makes `agent`'s Claude Code name it in `AGENT_HEADER` (the fleet's
    `agent-N@pid` ids are sent as `agent-N`, one label per loop across runs), keeping any
    `ANTHROPIC_CUSTOM_HEADERS` lines `env` already has."""
    name = agent.partition("@")[0]
    line = f"{AGENT_HEADER}: {name}"
    existing = (env or {}).get("ANTHROPIC_CUSTOM_HEADERS", "").strip()
    return {"ANTHROPIC_CUSTOM_HEADERS": f"{existing}\n{line}" if existing else line}


def _one_log_style(settings: Any) -> None:
    """Log the embedded server the way `orchestrator serve` does: plain lines (or JSON with
    LOG_FORMAT=json), keys masked. Installed before the server starts, so no library gets to
    install its own handler first (the MCP server would put a Rich console, with colours and
    wrapped lines, in the middle of the fleet's output)."""
    from orchestrator.logging_setup import configure_logging

    keys = (settings.anthropic_api_key, settings.openai_api_key, settings.api_key,
            settings.admin_api_key)
    configure_logging(level=settings.log_level, fmt=settings.log_format,
                      secrets=[k.reveal() for k in keys if k is not None])


class EmbeddedOrchestrator:
    """An orchestrator server running inside the coordinator process, for its fleet.

    Settings come from the orchestrator's own sources (flags are not shared): the
    environment, then `env_file`, then defaults — `PROVIDER`, `ANTHROPIC_API_KEY`, `PORT`, …
    `fleet_status` feeds the dashboard's fleet panel; `fleet_config`, when given, is served on
    `/v1/config` beside the pipeline's, so a tuner can move `agents` and `lease_s` too. Use as
    a context manager; it yields the environment for agents.

    Agents hold the client token, so changing the configuration needs a different one: the
    `ADMIN_API_KEY` setting, or else a random token made for this run (`admin_token`).
    """

    def __init__(
        self,
        fleet_status: Callable[[], Mapping[str, Any]],
        *,
        self_tune_status: Callable[[], Mapping[str, Any] | None] | None = None,
        env_file: Path = Path("orchestrator.env"),
        fleet_config: LiveConfig[Any] | None = None,
    ) -> None:
        self._fleet_status = fleet_status
        self._self_tune_status = self_tune_status
        self._env_file = env_file
        self._fleet_config = fleet_config
        self._server: Any = None
        self.pipeline: Any = None  # the running Pipeline, once entered
        self.url = ""
        self.admin_token = ""

    def __enter__(self) -> dict[str, str]:
        from orchestrator.assembly import build_pipeline
        from orchestrator.config import LiveConfigSet
        from orchestrator.server.app import create_app
        from orchestrator.server.runner import ServerThread
        from orchestrator.settings import load_settings

        settings = load_settings(env_file=self._env_file)
        _one_log_style(settings)
        if settings.admin_api_key is None:
            settings = dataclasses.replace(settings, admin_api_key=secrets.token_urlsafe(32))
        assert settings.admin_api_key is not None
        self.admin_token = settings.admin_api_key.reveal()
        pipeline = self.pipeline = build_pipeline(settings)
        lives = (pipeline.live,) if self._fleet_config is None else (
            pipeline.live,
            self._fleet_config,
        )
        app = create_app(
            pipeline,
            settings=settings,
            fleet_status=self._fleet_status,
            config=LiveConfigSet(*lives),
            self_tune_status=self._self_tune_status,
        )
        self._server = ServerThread(app, host=settings.host, port=settings.port)
        self.url = self._server.start()
        token = settings.api_key.reveal() if settings.api_key is not None else None
        return agent_env(self.url, token)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.stop()

    def on_fleet_event(self, event: FleetEvent) -> None:
        """A `FleetEvents` subscriber: each attempt the fleet finishes reaches the pipeline's
        intelligence bridge (`IntelligenceBridge.task_outcome`), which credits the requests
        made for that task: succeeded is `passed`; failed, timed out, or refused by its
        acceptance commands or the validation gate is `failed`. A released or lost attempt,
        and a pipeline without the intelligence layer, report nothing."""
        verdict = _VERDICTS.get(event.kind)
        bridge = getattr(self.pipeline, "intelligence", None)
        if verdict is None or bridge is None:
            return
        bridge.task_outcome(event.task_id, verdict)
