"""Our own API: `POST /v1/prompt` (JSON or SSE), `WS /v1/stream`, `POST /v1/feedback`,
`GET /health`, `GET /v1/status`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response

from intelligence.optimize import OPTIMIZE_PROMPT
from orchestrator.errors import OrchestratorError
from orchestrator.request import InferenceRequest, InferenceResponse, Priority, StreamChunk
from orchestrator.resilience.breaker import BreakerState
from orchestrator.server.auth import is_authenticated
from orchestrator.server.bodies import (
    body_schema,
    cache_headers,
    json_body,
    parse_json,
    semantic_wanted,
    with_optimize_opt_in,
    with_task,
)
from orchestrator.server.http_errors import RequestRejected, field_path, from_exception
from orchestrator.server.state import ServerState, server_state, state_of
from orchestrator.server.status import status_payload
from orchestrator.server.streaming import open_stream, sse, sse_response

__all__ = [
    "WS_MAX_CONCURRENCY",
    "FeedbackBody",
    "PromptBody",
    "PromptResult",
    "TaskFeedbackBody",
    "chunk_json",
    "router",
]

log = logging.getLogger(__name__)

router = APIRouter()
State = Annotated[ServerState, Depends(server_state)]


class PromptBody(BaseModel):
    """One prompt for the pipeline; `prompt` is accepted as another name for `input`.

    `stream` is ignored on the WebSocket, which always streams.
    """

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, validation_alias=AliasChoices("input", "prompt"))
    system: str | None = None
    session_id: str | None = Field(None, min_length=1, max_length=256)
    model: str | None = Field(None, min_length=1, max_length=256)
    priority: Priority = Priority.NORMAL
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    timeout_s: float | None = Field(None, ge=0.1, le=3600)  # below 0.1 s nothing can answer
    stream: bool = False
    semantic_dedup: bool = True  # False: never answered by a semantic match
    # True: the prompt optimizer may rewrite it; None: the OPTIMIZE_HEADER decides.
    optimize_prompt: bool | None = None

    def to_request(self) -> InferenceRequest:
        return InferenceRequest(
            metadata={OPTIMIZE_PROMPT: "1"} if self.optimize_prompt else {},
            prompt=self.input,
            system=self.system,
            session_id=self.session_id,
            model=self.model,
            priority=self.priority,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            timeout_s=self.timeout_s,
            semantic_dedup=self.semantic_dedup,
        )


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int


class PromptResult(BaseModel):
    """The answer to a `POST /v1/prompt` without streaming."""

    text: str
    request_id: str
    provider: str
    model: str
    usage: UsageOut
    cost_usd: float
    deduped: bool
    cached: bool
    latency_ms: float
    finish_reason: str | None
    cache_kind: Literal["exact", "semantic"] | None = None
    similarity: float | None = None

    @classmethod
    def of(cls, response: InferenceResponse) -> PromptResult:
        return cls(
            text=response.text,
            request_id=response.request_id,
            provider=response.provider,
            model=response.model,
            usage=UsageOut(
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
            ),
            cost_usd=response.cost_usd,
            deduped=response.deduped,
            cached=response.cached,
            latency_ms=response.latency_ms,
            finish_reason=response.finish_reason,
            cache_kind=response.cache_kind,
            similarity=response.similarity,
        )


class FeedbackBody(BaseModel):
    """Feedback on one answer: `score` from -1 (bad) to 1 (good); `stale` true when the
    answer was out of date (a cached answer that was true once): the cache TTL's signal."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=256)
    score: float = Field(ge=-1, le=1)
    comment: str | None = Field(None, max_length=4000)
    stale: bool = False


class TaskFeedbackBody(BaseModel):
    """A fleet task's outcome: every request made for it (sent with `x-orchestrator-task:
    <task_id>`) is credited, `passed` as a good answer and `failed` as a poor one."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    verdict: Literal["passed", "failed"]


def chunk_json(chunk: StreamChunk, request_id: str) -> dict[str, Any]:
    """A stream chunk as sent to clients (usage only on the last chunk; `cache_kind` and
    `similarity` only on the first of a reused answer, as `/v1/prompt`'s JSON has them)."""
    data: dict[str, Any] = {
        "text": chunk.text,
        "index": chunk.index,
        "finish_reason": chunk.finish_reason,
        "request_id": request_id,
    }
    if chunk.cache_kind is not None:
        data["cache_kind"], data["similarity"] = chunk.cache_kind, chunk.similarity
    if chunk.usage is not None:
        data["usage"] = {
            "input_tokens": chunk.usage.input_tokens,
            "output_tokens": chunk.usage.output_tokens,
        }
    return data


@router.post(
    "/v1/prompt",
    response_model=PromptResult,
    responses={200: {"content": {"text/event-stream": {}}}},
    summary="Answer a prompt through the pipeline (JSON, or SSE with stream=true)",
    openapi_extra=body_schema(PromptBody),
)
async def prompt(http: Request, state: State) -> Response | PromptResult:
    body = await json_body(http, PromptBody)
    request = with_task(
        dataclasses.replace(body.to_request(), client=state.client_of(http)), http.headers
    )
    if not semantic_wanted(http.headers):
        request = dataclasses.replace(request, semantic_dedup=False)
    request = with_optimize_opt_in(request, http.headers, body.optimize_prompt)
    if not body.stream:
        response = await state.pipeline.infer(request)
        result = PromptResult.of(response)
        return JSONResponse(result.model_dump(), headers=cache_headers(response))
    chunks = await open_stream(state.pipeline, request)
    return sse_response(_prompt_events(chunks, request.request_id), chunks)


async def _prompt_events(
    chunks: AsyncIterator[StreamChunk], request_id: str
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield sse(chunk_json(chunk, request_id), "chunk")
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("native"), "error")
        return
    yield sse({"request_id": request_id}, "done")


WS_MAX_CONCURRENCY = 8
"""The most prompts one WebSocket may have answered at once (`?concurrency=N`; default 1)."""


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    """Each JSON text message `{"input": …}` (or `"prompt"`, plus any `/v1/prompt` field, and
    an optional `"id"` of the client's own) is answered by chunks `{"text", "index",
    "finish_reason", "request_id"}` (and that `"id"`) as the provider produces them; a problem
    is answered by `{"error": {...}}` (with the same ids) and the connection stays open.

    One prompt is answered at a time unless the client asks for `?concurrency=N` (up to
    `WS_MAX_CONCURRENCY`): the next message is not even read before a slot is free, so a
    client that sends faster than it reads is held back by TCP, not buffered by the server."""
    await websocket.accept()
    concurrency = _concurrency(websocket.query_params.get("concurrency"))
    if isinstance(concurrency, str):
        await websocket.send_json(_ws_error(concurrency, "concurrency", None, None))
        await websocket.close(1008, "bad concurrency")
        return
    state = state_of(websocket)
    slots = asyncio.Semaphore(concurrency)
    answering: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        answering.discard(task)
        slots.release()

    try:
        while True:
            await slots.acquire()
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            task = asyncio.create_task(_answer_ws(websocket, state, message.get("text")))
            answering.add(task)
            task.add_done_callback(done)
    finally:
        # The client left: nobody waits for these answers, so stop their upstream calls.
        for task in answering:
            task.cancel()
        await asyncio.gather(*answering, return_exceptions=True)


def _concurrency(raw: str | None) -> int | str:
    """`?concurrency=N` as an int, or the error message for a bad value."""
    if raw is None:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= WS_MAX_CONCURRENCY:
        return f"concurrency: an integer from 1 to {WS_MAX_CONCURRENCY}, got {raw[:20]!r}"
    return value


def _ws_error(
    message: str, field: str | None, request_id: str | None, client_id: str | int | None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"error": {"type": "invalid_request", "message": message}}
    if field is not None:
        frame["error"]["field"] = field
    return _with_ids(frame, request_id, client_id)


def _with_ids(
    frame: dict[str, Any], request_id: str | None, client_id: str | int | None
) -> dict[str, Any]:
    if request_id is not None:
        frame["request_id"] = request_id
    if client_id is not None:
        frame["id"] = client_id
    return frame


def _client_id(data: Any) -> str | int | None:
    """The client's own `"id"` for a prompt (echoed on its frames); ValueError if unusable."""
    if not isinstance(data, dict) or "id" not in data:
        return None
    value = data.pop("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("id: a string or an integer")
    if isinstance(value, str) and not 1 <= len(value) <= 128:
        raise ValueError("id: a string of 1-128 characters")
    return value


async def _answer_ws(websocket: WebSocket, state: ServerState, text: str | None) -> None:
    try:
        await _answer_one(websocket, state, text)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client left (or the socket is closing): nothing to answer to


async def _answer_one(websocket: WebSocket, state: ServerState, text: str | None) -> None:
    if text is None:
        await websocket.send_json(
            _ws_error("body: send each prompt as a JSON text message", "body", None, None)
        )
        return
    try:
        data = parse_json(text)
    except RequestRejected as exc:
        await websocket.send_json(_ws_error(exc.error.message, "body", None, None))
        return
    try:
        client_id = _client_id(data)
    except ValueError as exc:
        await websocket.send_json(_ws_error(str(exc), "id", None, None))
        return
    try:
        body = PromptBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_path(first.get("loc", ())) if data is not None else "body"
        message = f"{field}: {first.get('msg', 'invalid value')}"
        await websocket.send_json(_ws_error(message, field, None, client_id))
        return
    request = with_task(
        dataclasses.replace(body.to_request(), client=state.client_of(websocket)),
        websocket.headers,
    )
    try:
        # aclosing: if sending fails (the client left), the pipeline's stream is closed now,
        # not whenever the garbage collector finds it.
        async with aclosing(state.pipeline.stream(request)) as chunks:
            async for chunk in chunks:
                frame = chunk_json(chunk, request.request_id)
                await websocket.send_json(_with_ids(frame, None, client_id))
    except OrchestratorError as exc:
        frame = from_exception(exc).body_for("native")
        await websocket.send_json(_with_ids(frame, request.request_id, client_id))


@router.post(
    "/v1/feedback",
    status_code=202,
    summary="Record feedback on an answer",
    openapi_extra=body_schema(FeedbackBody),
)
async def feedback(http: Request, state: State) -> dict[str, Any]:
    """Recorded in the pipeline's `FeedbackLog`, attributed to the provider and model that
    produced that request's answer (both null when the request id is not remembered)."""
    body = await json_body(http, FeedbackBody)
    recorded = state.pipeline.feedback.record(
        body.request_id, body.score, body.comment, stale=body.stale
    )
    return {
        "accepted": True,
        "request_id": body.request_id,
        "provider": recorded.provider,
        "model": recorded.model,
        "cached": recorded.cached,
        "stale": recorded.stale,
    }


@router.post(
    "/v1/feedback/task",
    status_code=202,
    summary="Record a fleet task's outcome (credits the requests made for it)",
    openapi_extra=body_schema(TaskFeedbackBody),
)
async def task_feedback(http: Request, state: State) -> dict[str, Any]:
    """Handed to the intelligence layer (`IntelligenceBridge.task_outcome`), which rewards
    the router arm and judges the semantic-dedup entry behind each request the task's agent
    made; `credited` says how many reached a learner (0 without the intelligence layer, or
    when no remembered request named the task). What `coordinator run --orchestrator URL`
    posts for each attempt that ends."""
    body = await json_body(http, TaskFeedbackBody)
    bridge = getattr(state.pipeline, "intelligence", None)
    credited = 0 if bridge is None else bridge.task_outcome(body.task_id, body.verdict)
    return {
        "accepted": True,
        "task_id": body.task_id,
        "verdict": body.verdict,
        "credited": credited,
    }


@router.head("/health", include_in_schema=False)
@router.get(
    "/health",
    summary="Liveness: ok, degraded (a breaker is not closed) or 503 (no provider can serve)",
)
async def health(request: Request, state: State) -> JSONResponse:
    """`{"status": "ok" | "degraded"}`: degraded while any provider's breaker is open or
    probing; 503 while every provider's breaker is open, so a load balancer routes around the
    server. Callers that proved the token (or every caller of a server without one) also get
    each provider's breaker state; anyone else gets the status alone."""
    breakers = {r.name: r.breaker.state for r in state.pipeline.routes}
    healthy = all(b is BreakerState.CLOSED for b in breakers.values())
    serving = any(b is not BreakerState.OPEN for b in breakers.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "degraded"}
    if is_authenticated(request.scope):
        body["providers"] = {name: str(b) for name, b in breakers.items()}
    return JSONResponse(body, status_code=200 if serving else 503)


@router.get("/v1/status", summary="The pipeline's metrics snapshot (and the fleet's, if attached)")
async def status(state: State) -> dict[str, Any]:
    return status_payload(
        state.pipeline,
        state.fleet_status,
        state.config,
        state.self_tune_status,
        requests=state.requests,
    )


@router.get(
    "/v1/status/history",
    summary="The last fifteen minutes of throughput (requests per second per bucket)",
)
async def status_history(state: State) -> dict[str, Any]:
    return state.pipeline.throughput_history()
