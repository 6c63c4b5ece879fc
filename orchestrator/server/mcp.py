"""The MCP front door: five tools over a running `Pipeline`, for stdio and streamable HTTP.

    server = create_mcp_server(pipeline)      # an `mcp` SDK `MCPServer`
    mount_mcp(app, pipeline)                  # serve it at /mcp on a FastAPI app
    await serve_stdio(pipeline)               # or over stdin/stdout (`orchestrator mcp`)

Tools: `infer`, `batch_infer`, `pipeline_status`, `configure_pipeline`, `feedback`. Every tool
runs on the pipeline's event loop. Anticipated failures (a shed request, a spent budget, a bad
tunable) come back as tool errors naming the problem; nothing a client sends crashes the server.

`configure_pipeline` applies its changes through the server's `LiveConfigSet`, the code
`PATCH /v1/config` calls. Over HTTP it needs the admin token; over stdio the client is the
local user who started the process, and may.

`feedback` records a verdict on an answer by its `request_id` (the one `infer` returned) in the
pipeline's `FeedbackLog`, as `POST /v1/feedback` does: `correct` (or a `score` in [-1, 1])
reaches the learned router and the semantic dedup entry that served it; `stale` (the answer
was out of date) is the cache TTL's signal (`feedback.stale_rate` in `pipeline_status`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, StrictFloat, StrictInt

from orchestrator.config import LiveConfigSet, Tunables
from orchestrator.errors import InvalidTunable, OrchestratorError
from orchestrator.request import InferenceRequest, InferenceResponse, Priority
from orchestrator.server.auth import is_admin
from orchestrator.server.http_errors import from_exception
from orchestrator.server.request_counts import RequestCounts
from orchestrator.server.status import FleetStatus, SelfTuneStatus, status_payload

if TYPE_CHECKING:
    from fastapi import FastAPI

    from orchestrator.pipeline import Pipeline
    from orchestrator.settings import ServerSettings

__all__ = [
    "MAX_BATCH",
    "MAX_TOKENS",
    "BatchItem",
    "BatchResult",
    "ConfigChange",
    "ConfigureResult",
    "FeedbackResult",
    "InferResult",
    "create_mcp_server",
    "mount_mcp",
    "serve_stdio",
]

MAX_BATCH = 64
"""The most prompts one `batch_infer` call may carry."""

MAX_TOKENS = 1_000_000
"""The most tokens one answer may ask for (as `/v1/prompt`)."""

PriorityName = Literal["critical", "high", "normal", "low"]

# The tool results are frozen dataclasses without __slots__: the SDK derives each tool's output
# schema with pydantic, which cannot read field defaults through slot descriptors.


@dataclass(frozen=True, kw_only=True)
class InferResult:
    """One answer from the pipeline, as a tool returns it."""

    text: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    deduped: bool
    cached: bool
    request_id: str


@dataclass(frozen=True, kw_only=True)
class BatchItem:
    """The outcome of one prompt of a batch: `result` when answered, else `error`."""

    index: int
    result: InferResult | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """Every prompt's outcome, in the order the prompts were given."""

    items: list[BatchItem]
    answered: int
    failed: int


@dataclass(frozen=True, kw_only=True)
class ConfigChange:
    """One live value that changed."""

    old: int | float | None
    new: int | float | None


@dataclass(frozen=True, kw_only=True)
class ConfigureResult:
    """What `configure_pipeline` changed (`changed` is empty when every value already held)."""

    changed: dict[str, ConfigChange]
    version: int


@dataclass(frozen=True, kw_only=True)
class FeedbackResult:
    """What `feedback` recorded: the score and staleness, and what produced the answer
    (`attributed` false, provider and model null, when the request id is not remembered)."""

    request_id: str
    score: float
    stale: bool
    attributed: bool
    provider: str | None
    model: str | None
    cached: bool


def _feedback_score(score: float | None, correct: bool | None, stale: bool) -> float:
    if score is not None and correct is not None:
        raise ToolError("give correct or score, not both")
    if score is not None:
        return score
    if correct is not None:
        return 1.0 if correct else -1.0
    if stale:
        return 0.0  # out of date, not a wrong match nor a bad provider: neutral for the learners
    raise ToolError("give correct (true or false), a score in [-1, 1], or stale: true")


def _infer_result(response: InferenceResponse) -> InferResult:
    return InferResult(
        text=response.text,
        provider=response.provider,
        model=response.model,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cost_usd=response.cost_usd,
        latency_ms=response.latency_ms,
        deduped=response.deduped,
        cached=response.cached,
        request_id=response.request_id,
    )


def _request(
    prompt: str,
    *,
    system: str | None,
    model: str | None,
    max_tokens: int,
    session_id: str | None,
    priority: PriorityName,
    client: str | None = None,
) -> InferenceRequest:
    if not prompt.strip():
        raise ToolError("prompt must not be empty")
    try:
        return InferenceRequest(
            prompt,
            system=system,
            model=model,
            max_tokens=max_tokens,
            session_id=session_id,
            priority=Priority(priority),
            client=client,
        )
    except ValueError as exc:
        raise ToolError(str(exc)) from exc


async def _answer(pipeline: Pipeline, request: InferenceRequest) -> InferResult:
    try:
        return _infer_result(await pipeline.infer(request))
    except OrchestratorError as exc:
        # The message a client of the HTTP doors would get: no upstream text past 4xx.
        raise ToolError(f"{type(exc).__name__}: {from_exception(exc).message}") from exc


ClientOf = Callable[[Any], str | None]
"""Given the HTTP request a tool call came in (None over stdio), its usage-ledger label."""

MayConfigure = Callable[[Any], bool]
"""Given the HTTP request a tool call came in (None over stdio), whether it may change the
configuration."""


def _tunables_help() -> str:
    names = ", ".join(f.name for f in dataclasses.fields(Tunables))
    return (
        f"Live values to change, by name. Known names: {names} (and the fleet's agents and "
        "lease_s on a coordinator's server; pipeline_status lists every one)."
    )


def create_mcp_server(
    pipeline: Pipeline,
    *,
    name: str = "orchestrator",
    config: LiveConfigSet | None = None,
    may_configure: MayConfigure = lambda request: True,
    fleet_status: FleetStatus | None = None,
    self_tune_status: SelfTuneStatus | None = None,
    requests: RequestCounts | None = None,
    client_of: ClientOf = lambda request: None,
) -> MCPServer:
    """An `MCPServer` whose tools call `pipeline`; the caller runs the pipeline.

    `config` is what `configure_pipeline` tunes (default: the pipeline's live config);
    `may_configure` decides, per call, whether the caller may (default: always, as over stdio);
    `client_of` labels the caller in the usage ledger (default: none, `anonymous`).
    `pipeline_status` answers what `GET /v1/status` does (`status_payload`), `fleet_status`,
    `self_tune_status` and the server's `requests` included when given.
    """
    config = config if config is not None else LiveConfigSet(pipeline.live)
    server: MCPServer = MCPServer(
        name,
        instructions=(
            "Send prompts through the orchestrator's inference pipeline (dedup, cache, "
            "retries, fallback, budgets), read its live measurements, and tune its live config."
        ),
    )

    @server.tool()
    async def infer(
        prompt: Annotated[str, Field(description="The user prompt.")],
        system: Annotated[str | None, Field(description="Optional system prompt.")] = None,
        model: Annotated[
            str | None, Field(description="Model name; the provider's default when omitted.")
        ] = None,
        max_tokens: Annotated[
            int, Field(ge=1, le=MAX_TOKENS, description="Most tokens to generate.")
        ] = 1024,
        session_id: Annotated[
            str | None, Field(description="Session id, for affinity and budgets.")
        ] = None,
        priority: PriorityName = "normal",
        *,
        ctx: Context,
    ) -> InferResult:
        """Answer one prompt through the pipeline: text, provider, model, usage, cost,
        and whether it was deduplicated or served from cache."""
        request = _request(
            prompt,
            system=system,
            model=model,
            max_tokens=max_tokens,
            session_id=session_id,
            priority=priority,
            client=client_of(ctx.request_context.request),
        )
        return await _answer(pipeline, request)

    @server.tool()
    async def batch_infer(
        prompts: Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=MAX_BATCH,
                description="The prompts, answered concurrently.",
            ),
        ],
        system: Annotated[str | None, Field(description="Optional system prompt for all.")] = None,
        model: Annotated[str | None, Field(description="Model name for all.")] = None,
        max_tokens: Annotated[
            int, Field(ge=1, le=MAX_TOKENS, description="Most tokens per answer.")
        ] = 1024,
        session_id: Annotated[str | None, Field(description="Session id for all.")] = None,
        priority: PriorityName = "normal",
        *,
        ctx: Context,
    ) -> BatchResult:
        """Answer several prompts concurrently through the pipeline; one failing prompt
        does not fail the others (its item carries the error)."""
        client = client_of(ctx.request_context.request)

        async def one(prompt: str) -> InferResult:
            request = _request(
                prompt,
                system=system,
                model=model,
                max_tokens=max_tokens,
                session_id=session_id,
                priority=priority,
                client=client,
            )
            return await _answer(pipeline, request)

        # A prompt the pipeline cannot take (an empty one) is that item's error, not the batch's.
        outcomes = await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        items: list[BatchItem] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, ToolError):
                items.append(BatchItem(index=index, error=str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                items.append(BatchItem(index=index, result=outcome))
        failed = sum(item.error is not None for item in items)
        return BatchResult(items=items, answered=len(items) - failed, failed=failed)

    @server.tool()
    async def pipeline_status() -> dict[str, Any]:
        """The pipeline's live measurements (stages with queue depth and capacity, latency
        percentiles, throughput, errors, dedup, cache, breakers, cost) and its live config."""
        return status_payload(pipeline, fleet_status, config, self_tune_status, requests=requests)

    @server.tool()
    async def configure_pipeline(
        changes: Annotated[
            dict[str, StrictInt | StrictFloat | None], Field(description=_tunables_help())
        ],
        ctx: Context,
    ) -> ConfigureResult:
        """Change live pipeline values (concurrency, queue capacities, shed threshold, breaker,
        retry, rate limit, cache TTL) while traffic flows; returns exactly what changed,
        old -> new. Invalid names or values change nothing. Needs the admin token over HTTP."""
        if not may_configure(ctx.request_context.request):
            raise ToolError(
                "changing the configuration needs the admin token (ADMIN_API_KEY, or API_KEY "
                "when ADMIN_API_KEY is not set)"
            )
        if not changes:
            raise ToolError("changes is empty: give at least one tunable name and value")
        try:
            changed = config.apply(changes)
        except InvalidTunable as exc:
            raise ToolError(f"nothing changed: {exc}") from exc
        return ConfigureResult(
            changed={k: ConfigChange(old=old, new=new) for k, (old, new) in changed.items()},
            version=config.version,
        )

    @server.tool()
    async def feedback(
        request_id: Annotated[
            str,
            Field(min_length=1, max_length=256, description="The request_id infer returned."),
        ],
        correct: Annotated[
            bool | None,
            Field(description="Whether the answer was right (true: score 1, false: -1)."),
        ] = None,
        score: Annotated[
            float | None,
            Field(ge=-1, le=1, description="A score from -1 (bad) to 1 (good), for correct."),
        ] = None,
        stale: Annotated[
            bool,
            Field(description="The answer was out of date (true once): the cache TTL's signal."),
        ] = False,
        comment: Annotated[str | None, Field(max_length=4000, description="Why.")] = None,
    ) -> FeedbackResult:
        """Rate an answer by its request_id: correct (or a score) teaches the learned router and
        semantic dedup; stale says a cached answer was out of date (score 0 unless given)."""
        value = _feedback_score(score, correct, stale)
        recorded = pipeline.feedback.record(request_id, value, comment, stale=stale)
        return FeedbackResult(
            request_id=request_id,
            score=recorded.score,
            stale=recorded.stale,
            attributed=recorded.provider is not None,
            provider=recorded.provider,
            model=recorded.model,
            cached=recorded.cached,
        )

    return server


def mount_mcp(
    app: FastAPI,
    pipeline: Pipeline,
    *,
    settings: ServerSettings | None = None,
    config: LiveConfigSet | None = None,
    fleet_status: FleetStatus | None = None,
    self_tune_status: SelfTuneStatus | None = None,
    requests: RequestCounts | None = None,
) -> MCPServer:
    """Serve the MCP tools over streamable HTTP at `/mcp` on `app`; call before the app starts.

    Adds the route and wraps the app's lifespan so the MCP session manager runs inside it (and
    stops before the pipeline does). On a loopback bind (`settings.host`, default 127.0.0.1)
    the SDK's DNS-rebinding protection accepts only loopback Host and Origin headers; a
    non-loopback bind has a bearer token, which the app's auth middleware checks on `/mcp` too;
    `configure_pipeline` needs the admin token (the role that middleware recorded).
    """
    server = create_mcp_server(
        pipeline,
        config=config,
        may_configure=_admin_request,
        fleet_status=fleet_status,
        self_tune_status=self_tune_status,
        requests=requests,
        client_of=lambda request: _client_of(app, request),
    )
    host = settings.host if settings is not None else "127.0.0.1"
    mcp_app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    app.router.routes.extend(mcp_app.routes)
    app.router.lifespan_context = _with_session_manager(app.router.lifespan_context, server)
    return server


def _admin_request(request: Any) -> bool:
    # Fail closed: a call over HTTP whose request we cannot see may not reconfigure.
    scope = getattr(request, "scope", None)
    return scope is not None and is_admin(scope)


def _client_of(app: FastAPI, request: Any) -> str | None:
    state = getattr(app.state, "orchestrator", None)
    if state is None or getattr(request, "scope", None) is None:
        return None
    label: str = state.client_of(request)
    return label


def _with_session_manager(
    outer: Callable[[Any], AbstractAsyncContextManager[Any]], server: MCPServer
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with outer(app) as state, server.session_manager.run():
            yield state

    return lifespan


async def serve_stdio(pipeline: Pipeline) -> None:
    """Serve the MCP tools over this process's stdin/stdout until the client disconnects."""
    await create_mcp_server(pipeline).run_stdio_async()
