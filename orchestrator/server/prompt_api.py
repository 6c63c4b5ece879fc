"""Our own API: `POST /v1/prompt` (JSON or SSE), `WS /v1/stream`, `POST /v1/feedback`,
`GET /health`, `GET /v1/status`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.request import InferenceRequest, InferenceResponse, Priority, StreamChunk
from orchestrator.resilience.breaker import BreakerState
from orchestrator.server.auth import is_authenticated
from orchestrator.server.http_errors import field_path, from_exception
from orchestrator.server.state import ServerState, server_state, state_of
from orchestrator.server.status import status_payload
from orchestrator.server.streaming import open_stream, sse, sse_response

__all__ = ["FeedbackBody", "PromptBody", "PromptResult", "chunk_json", "router"]

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

    def to_request(self) -> InferenceRequest:
        return InferenceRequest(
            prompt=self.input,
            system=self.system,
            session_id=self.session_id,
            model=self.model,
            priority=self.priority,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            timeout_s=self.timeout_s,
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
        )


class FeedbackBody(BaseModel):
    """Feedback on one answer: `score` from -1 (bad) to 1 (good)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=256)
    score: float = Field(ge=-1, le=1)
    comment: str | None = Field(None, max_length=4000)


def chunk_json(chunk: StreamChunk, request_id: str) -> dict[str, Any]:
    """A stream chunk as sent to clients (usage only on the last chunk)."""
    data: dict[str, Any] = {
        "text": chunk.text,
        "index": chunk.index,
        "finish_reason": chunk.finish_reason,
        "request_id": request_id,
    }
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
)
async def prompt(body: PromptBody, state: State) -> Response | PromptResult:
    request = body.to_request()
    if not body.stream:
        return PromptResult.of(await state.pipeline.infer(request))
    chunks = await open_stream(state.pipeline, request)
    return sse_response(_prompt_events(chunks, request.request_id))


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


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    """Each JSON message `{"input": …}` (or `"prompt"`, plus any `/v1/prompt` field) is
    answered by chunks `{"text", "index", "finish_reason"}` as the provider produces them;
    a problem is answered by `{"error": {...}}` and the connection stays open."""
    await websocket.accept()
    state = state_of(websocket)
    try:
        while True:
            message = await websocket.receive_text()
            await _answer_ws(websocket, state, message)
    except WebSocketDisconnect:
        return


async def _answer_ws(websocket: WebSocket, state: ServerState, message: str) -> None:
    try:
        body = PromptBody.model_validate_json(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_path(first.get("loc", ())) if first.get("type") != "json_invalid" else "body"
        await websocket.send_json(
            {
                "error": {
                    "type": "invalid_request",
                    "message": f"{field}: {first.get('msg', 'invalid value')}",
                    "field": field,
                }
            }
        )
        return
    request = body.to_request()
    try:
        # aclosing: if sending fails (the client left), the pipeline's stream is closed now,
        # not whenever the garbage collector finds it.
        async with aclosing(state.pipeline.stream(request)) as chunks:
            async for chunk in chunks:
                await websocket.send_json(chunk_json(chunk, request.request_id))
    except OrchestratorError as exc:
        await websocket.send_json(from_exception(exc).body_for("native"))


@router.post("/v1/feedback", status_code=202, summary="Record feedback on an answer")
async def feedback(body: FeedbackBody, state: State) -> dict[str, Any]:
    """Recorded in the pipeline's `FeedbackLog`, attributed to the provider and model that
    produced that request's answer (both null when the request id is not remembered)."""
    recorded = state.pipeline.feedback.record(body.request_id, body.score, body.comment)
    return {
        "accepted": True,
        "request_id": body.request_id,
        "provider": recorded.provider,
        "model": recorded.model,
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
    return status_payload(state.pipeline, state.fleet_status, state.config,
                          state.self_tune_status)
