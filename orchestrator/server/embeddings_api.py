"""`POST /v1/embeddings`: OpenAI's embeddings API, served by the local embedding model the
intelligence layer brings (`intelligence.embed.DefaultEmbedder`: all-MiniLM-L6-v2, 384
dimensions, L2-normalised; the lexical fallback when sentence-transformers cannot load), so it
works offline.

Embeddings are metered and billed by the pipeline like any call (`Pipeline.admit_embedding`
before the work, `bill_embedding` after it): their tokens and cost are on `/v1/status` and
`/metrics`, and in the usage ledger by model and client (as input tokens), the cost counts
against the session (`user`) and global budgets, and past a budget the request is refused as
a chat call would be. The model priced is the one that embedded, not
the one the request names: the local models are priced at 0 in the shipped table; an embedder
naming another model (its `model_name` attribute) is looked up there, and an unknown one is
warned about and listed in `unpriced_models`.

Any `model` name is accepted (IDE extensions name OpenAI's); the answer names the model that
embedded. `encoding_format` is `float` or `base64` (little-endian float32, what the `openai`
SDK asks for by default); `dimensions` other than 384 and token-array inputs are refused with
a 400 naming the field. The model loads on the first request (seconds: torch), in a worker
thread, as every embedding runs, so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from orchestrator.server.bodies import body_schema, json_body
from orchestrator.server.embedder import LazyEmbedder
from orchestrator.server.http_errors import RequestRejected, bad_request
from orchestrator.server.state import ServerState, server_state
from orchestrator.tokens import estimate_tokens

if TYPE_CHECKING:
    from intelligence.embed import Embedder

__all__ = ["EmbeddingsBody", "router"]

router = APIRouter(tags=["openai"])
State = Annotated[ServerState, Depends(server_state)]

MAX_INPUTS = 2048  # OpenAI's own limit per request
_MODEL_NAMES = {"sentence-transformers": "all-MiniLM-L6-v2", "lexical": "lexical-hashing"}


class EmbeddingsBody(BaseModel):
    """An embeddings request."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)


def _refuse(field: str, message: str) -> RequestRejected:
    return RequestRejected(bad_request(f"{field}: {message}", field=field))


def _texts(body: EmbeddingsBody) -> list[str]:
    value = body.input
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise _refuse("input", "at least one input is needed")
    if not all(isinstance(t, str) for t in texts):
        raise _refuse("input", "token-array inputs are not supported; send text")
    if len(texts) > MAX_INPUTS:
        raise _refuse("input", f"at most {MAX_INPUTS} inputs per request, got {len(texts)}")
    return [str(t) for t in texts]


def _resolve(embedder: LazyEmbedder) -> tuple[Embedder, str]:
    """The embedder that will serve (loading it, the first time) and its model's name."""
    active = embedder.get()
    named = getattr(active, "model_name", None)
    if isinstance(named, str) and named:
        return active, named
    kind = str(active.kind)
    return active, _MODEL_NAMES.get(kind, kind)


@router.post(
    "/v1/embeddings",
    summary="OpenAI embeddings, by the local embedding model",
    openapi_extra=body_schema(EmbeddingsBody),
)
async def embeddings(http: Request, state: State) -> Response:
    body = await json_body(http, EmbeddingsBody)
    texts = _texts(body)
    active, model = await asyncio.to_thread(_resolve, state.embedder)
    if body.dimensions is not None and body.dimensions != active.dim:
        raise _refuse("dimensions", f"this server's embedding model has {active.dim} dimensions")
    tokens = sum(estimate_tokens(t) for t in texts)
    session_id = body.user or None
    state.pipeline.admit_embedding(session_id, model, tokens)
    rows = await asyncio.to_thread(active.embed, texts)
    state.pipeline.bill_embedding(session_id, model, tokens, client=state.client_of(http))
    data = []
    for index, row in enumerate(rows):
        vector: Any = (
            base64.b64encode(row.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else row.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
