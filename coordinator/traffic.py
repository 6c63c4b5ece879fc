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
in `ANTHROPIC_CUSTOM_HEADERS`, and with it `x-orchestrator-task` naming the attempt's task
(`COORDINATOR_TASK_ID`), so the intelligence layer attributes each answer to its task; the
`codex` profile makes Codex send the same two headers from `ORCHESTRATOR_AGENT` and
`COORDINATOR_TASK_ID`. A plain OpenAI-SDK program reads no such variable, so its traffic is
labelled by its token's role (`client`) and credited to no task.

When an attempt ends, its task's verdict (`passed`/`failed`) reaches the orchestrator's
intelligence bridge, which credits the router arm and dedup entry behind every request made
for that task: in process for an embedded orchestrator (`EmbeddedOrchestrator.on_fleet_event`),
over HTTP (`POST /v1/feedback/task`, `TaskOutcomePoster`) for one at a URL.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from coordinator.metrics import EventKind, FleetEvent

if TYPE_CHECKING:
    from orchestrator.config import LiveConfig

log = logging.getLogger(__name__)

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
TASK_HEADER = "x-orchestrator-task"  # orchestrator.server.bodies.TASK_HEADER


def agent_headers(agent: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that makes `agent`'s Claude Code name it in `AGENT_HEADER` (the fleet's
    `agent-N@pid` ids are sent as `agent-N`, one label per loop across runs) and, when `env`
    is an attempt's (it has `COORDINATOR_TASK_ID`), its task in `TASK_HEADER`, keeping any
    `ANTHROPIC_CUSTOM_HEADERS` lines `env` already has; and `ORCHESTRATOR_AGENT`, the label,
    which the `codex` profile sends as `AGENT_HEADER` (its task header comes from
    `COORDINATOR_TASK_ID` itself)."""
    env = env or {}
    label = agent.partition("@")[0]
    lines = [f"{AGENT_HEADER}: {label}"]
    task_id = env.get("COORDINATOR_TASK_ID")
    if task_id:
        lines.append(f"{TASK_HEADER}: {task_id}")
    existing = env.get("ANTHROPIC_CUSTOM_HEADERS", "").strip()
    return {
        "ANTHROPIC_CUSTOM_HEADERS": "\n".join([existing, *lines] if existing else lines),
        "ORCHESTRATOR_AGENT": label,
    }


class TaskOutcomePoster:
    """A `FleetEvents` subscriber that tells an orchestrator at `url` each task verdict
    (`POST /v1/feedback/task`, with `token` as the bearer), so one the coordinator did not
    start learns from the fleet too. Posts go out from one background thread, in order, each
    with a `timeout_s`; a failure is logged once (then counted in `failed`, quietly) and never
    reaches the fleet. Use as a context manager: leaving it sends what is queued, waiting at
    most `drain_s`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 5.0,
        drain_s: float = 5.0,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/v1/feedback/task"
        self._token = token
        self._timeout_s = timeout_s
        self._drain_s = drain_s
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.posted = 0
        self.failed = 0

    def __enter__(self) -> TaskOutcomePoster:
        self._thread = threading.Thread(target=self._send_all, name="task-outcomes", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(self._drain_s)
            self._thread = None

    def on_fleet_event(self, event: FleetEvent) -> None:
        """Queue the verdict of a finished attempt (a released or lost one has none)."""
        verdict = _VERDICTS.get(event.kind)
        if verdict is not None:
            self._queue.put((event.task_id, verdict))

    def _send_all(self) -> None:
        while (item := self._queue.get()) is not None:
            self._post(*item)

    def _post(self, task_id: str, verdict: str) -> None:
        import json
        import urllib.request

        headers = {"content-type": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        body = json.dumps({"task_id": task_id, "verdict": verdict}).encode()
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s):
                self.posted += 1
        except Exception as exc:  # the fleet never fails for this: say it once
            self.failed += 1
            if self.failed == 1:
                log.warning(
                    "could not tell the orchestrator a task outcome (%s %s): %s; "
                    "further failures are not logged",
                    self.endpoint,
                    task_id,
                    getattr(exc, "reason", None) or exc,
                )


def _one_log_style(settings: Any) -> None:
    """Log the embedded server the way `orchestrator serve` does: plain lines (or JSON with
    LOG_FORMAT=json), keys masked. Installed before the server starts, so no library gets to
    install its own handler first (the MCP server would put a Rich console, with colours and
    wrapped lines, in the middle of the fleet's output)."""
    from orchestrator.logging_setup import configure_logging

    keys = (
        settings.anthropic_api_key,
        settings.openai_api_key,
        settings.api_key,
        settings.admin_api_key,
    )
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        secrets=[k.reveal() for k in keys if k is not None],
    )


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
        lives = (
            (pipeline.live,)
            if self._fleet_config is None
            else (
                pipeline.live,
                self._fleet_config,
            )
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
