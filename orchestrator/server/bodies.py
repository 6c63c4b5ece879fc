"""What every API door reads from a request the same way: the JSON body, the model name, a
bounded header, and what the client's SDK announces about its own timeout and retries.

A body must be `application/json` (or say no type); it may hold at most `MAX_ITEMS` messages
(or `input` items); one over `LARGE_BODY_BYTES` is parsed and validated on a worker thread
(`off_loop`), so a 25 MB conversation does not stall every other request while it is read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from intelligence.optimize import OPTIMIZE_PROMPT
from orchestrator import codec
from orchestrator.request import TASK_ID, InferenceRequest
from orchestrator.server.http_errors import ApiError, RequestRejected, bad_request

__all__ = [
    "CACHE_HEADER",
    "LARGE_BODY_BYTES",
    "MAX_CLIENT_TIMEOUT_S",
    "MAX_ITEMS",
    "OPTIMIZE_FIELD",
    "OPTIMIZE_HEADER",
    "SEMANTIC_FIELD",
    "SEMANTIC_HEADER",
    "SIMILARITY_HEADER",
    "TASK_HEADER",
    "body_schema",
    "body_size",
    "cache_headers",
    "client_retries",
    "client_timeout_s",
    "header",
    "header_doc",
    "json_any",
    "json_body",
    "json_object",
    "model_of",
    "off_loop",
    "optimize_wanted",
    "parse_json",
    "semantic_wanted",
    "task_of",
    "validated",
    "with_optimize_opt_in",
    "with_task",
]

LARGE_BODY_BYTES = 256 * 1024
"""Bodies larger than this are parsed, validated and estimated off the event loop."""

MAX_ITEMS = 10_000
"""The most `messages` (or `input` items) one request may carry."""

SEMANTIC_HEADER = "x-orchestrator-semantic-dedup"
"""A request header: `off` (or `0`, `false`, `no`) opts the request out of semantic dedup."""

SEMANTIC_FIELD = "semantic_dedup"
"""A request body field on every door: `false` opts the request out of semantic dedup."""

CACHE_HEADER = "x-orchestrator-cache"
"""A response header on an answer that made no upstream call of its own: `exact` (the same
request was cached or in flight) or `semantic` (a semantic match)."""

SIMILARITY_HEADER = "x-orchestrator-similarity"
"""A response header on a semantic match: the cosine similarity of the two prompts."""

OPTIMIZE_HEADER = "x-orchestrator-optimize-prompt"
"""A request header: `1` (or `on`, `true`, `yes`) opts the request in to the prompt optimizer
(`intelligence.PromptOptimizer`, when the server's `prompt_optimizer` setting is on)."""

OPTIMIZE_FIELD = OPTIMIZE_PROMPT
"""A request body field on `/v1/prompt`, `/v1/messages` and `/v1/chat/completions`: `true`
opts the request in to the prompt optimizer, `false` keeps it out whatever the header says."""

_OFF = frozenset({"off", "0", "false", "no"})
_ON = frozenset({"on", "1", "true", "yes"})

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_BODY_SIZE = "orchestrator.body_bytes"  # the scope key json_object records the size under


def parse_json(raw: bytes | str) -> Any:
    """`raw` parsed as JSON; a 400 naming `body` and saying where it stops being JSON (line
    and column), or that it is not UTF-8."""
    try:
        return codec.loads(raw)  # orjson: the fast way for the bodies that are JSON
    except ValueError:
        pass
    # Not JSON to orjson: the standard library says where and why, in the words clients have
    # always seen (and takes the little orjson refuses that it took: NaN, huge integers).
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        message = f"body: not valid JSON: {exc.msg} at {where}"
        raise RequestRejected(bad_request(message, field="body")) from None
    except UnicodeDecodeError as exc:
        message = f"body: not UTF-8 text (byte {exc.start})"
        raise RequestRejected(bad_request(message, field="body")) from None


async def off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, on a worker thread when the body it works on is over `LARGE_BODY_BYTES`
    (a small body is cheaper to handle here than to hand to a thread)."""
    if size <= LARGE_BODY_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8"})


def _check_content_type(value: str | None) -> None:
    if not value or value in _PLAIN_JSON:
        return  # curl without -H, some scripts: read as JSON; what SDKs send needs no parsing
    message = Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    if message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    ):
        return
    raise RequestRejected(
        ApiError(
            status=415,
            kind="unsupported_media_type",
            message=f"body: send application/json (Content-Type: application/json), "
            f"not {message.get_content_type()}",
            field="body",
        )
    )


def _check_items(data: Mapping[str, Any]) -> None:
    for name in ("messages", "input"):
        items = data.get(name)
        if isinstance(items, list) and len(items) > MAX_ITEMS:
            raise RequestRejected(
                bad_request(
                    f"{name}: at most {MAX_ITEMS} items per request, got {len(items)}",
                    field=name,
                )
            )


def _object_of(raw: bytes) -> dict[str, Any]:
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise RequestRejected(bad_request("body: expected a JSON object", field="body"))
    _check_items(data)
    return data


async def json_any(request: Request) -> Any:
    """The request's body parsed as JSON, whatever its shape (415 unless it is JSON; a 400
    saying where it stops being JSON)."""
    _check_content_type(request.headers.get("content-type"))
    raw = await request.body()
    request.scope[_BODY_SIZE] = len(raw)
    return await off_loop(len(raw), parse_json, raw)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body as a dict: 415 unless it is JSON, a 400 naming `body` when it
    is not a JSON object (where it stops being JSON, by line and column), or naming
    `messages`/`input` past `MAX_ITEMS`."""
    _check_content_type(request.headers.get("content-type"))
    raw = await request.body()
    request.scope[_BODY_SIZE] = len(raw)
    return await off_loop(len(raw), _object_of, raw)


def body_size(request: Request) -> int:
    """How many bytes the body `json_object` read was (0 before it read one)."""
    size: int = request.scope.get(_BODY_SIZE, 0)
    return size


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body validated as `model` (see `json_object` and `validated`)."""
    data = await json_object(request)
    return await off_loop(body_size(request), validated, model, data)


def headers_of(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict, the first value of each name winning (as
    Starlette's `Headers.get` answers): built once for a route that reads several, since
    `Headers` decodes and scans the whole header list on every lookup."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])}


def header(headers: Mapping[str, str], name: str, max_length: int) -> str | None:
    """The header `name` of `headers` (`headers_of`; None when absent); longer than
    `max_length` characters, the server's 400 naming it, as a FastAPI
    `Header(max_length=...)` parameter answers. Read by hand on the hot routes: FastAPI's
    per-request dependency solving for three headers cost more than the rest of the route."""
    value = headers.get(name)
    if value is not None and len(value) > max_length:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("header", name),
                    "msg": f"String should have at most {max_length} characters",
                    "input": value,
                    "ctx": {"max_length": max_length},
                }
            ]
        )
    return value


def header_doc(name: str, max_length: int) -> dict[str, Any]:
    """The OpenAPI parameter documenting an optional `header(headers, name, max_length)`."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "maxLength": max_length}, {"type": "null"}],
            "title": name.title(),
        },
    }


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its JSON itself (`openapi_extra`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def validated(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """`data` validated as `model`; errors become the server's 400 naming the first field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def model_of(data: Mapping[str, Any]) -> str:
    """The one field the gateway needs from a body it forwards: a model to route and price."""
    model = data.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 256:
        raise RequestRejected(
            bad_request(
                "model: a model name (a string of 1-256 characters) is required", field="model"
            )
        )
    return model


def client_retries(headers: Mapping[str, str]) -> bool:
    """True when the client announces that it retries by itself: the Stainless SDKs
    (Anthropic's, OpenAI's, Claude Code) send `x-stainless-retry-count` on every attempt."""
    return "x-stainless-retry-count" in headers


MAX_CLIENT_TIMEOUT_S = 3600.0
"""The longest deadline a client's announced timeout may set (as `/v1/prompt`'s `timeout_s`)."""


def client_timeout_s(header: str | None) -> float | None:
    """How long the client waits, from the `X-Stainless-Timeout` the Anthropic and OpenAI SDKs
    send (600 s by default, Claude Code's `API_TIMEOUT_MS`): the request's deadline, so long
    agent turns are not cut at the pipeline's default, clamped to `MAX_CLIENT_TIMEOUT_S` (a
    request must not hold its slot for ever). Anything unusable ("NOT_GIVEN") means no
    opinion."""
    try:
        value = float(header) if header else math.nan
    except ValueError:
        return None
    if not value > 0 or math.isnan(value):
        return None
    return min(value, MAX_CLIENT_TIMEOUT_S)


def semantic_wanted(headers: Mapping[str, str], field: Any = None) -> bool:
    """Whether the client allows semantic dedup: neither `SEMANTIC_HEADER: off` nor the body's
    `SEMANTIC_FIELD` false (anything but a boolean there is a 400 naming it)."""
    if field is not None and not isinstance(field, bool):
        raise RequestRejected(
            bad_request(f"{SEMANTIC_FIELD}: expected true or false", field=SEMANTIC_FIELD)
        )
    header = headers.get(SEMANTIC_HEADER)
    return field is not False and (header is None or header.strip().lower() not in _OFF)


def optimize_wanted(headers: Mapping[str, str], field: Any = None) -> bool:
    """Whether the client opts in to the prompt optimizer: the body's `OPTIMIZE_FIELD` when
    given (anything but a boolean there is a 400 naming it), else `OPTIMIZE_HEADER` on."""
    if field is not None and not isinstance(field, bool):
        raise RequestRejected(
            bad_request(f"{OPTIMIZE_FIELD}: expected true or false", field=OPTIMIZE_FIELD)
        )
    if field is not None:
        return field
    header = headers.get(OPTIMIZE_HEADER)
    return header is not None and header.strip().lower() in _ON


def with_optimize_opt_in(
    request: InferenceRequest, headers: Mapping[str, str], field: Any = None
) -> InferenceRequest:
    """`request`, opted in to the prompt optimizer (`metadata[OPTIMIZE_PROMPT]` = "1", what
    the pipeline's `PromptRewriter` reads) when `optimize_wanted(headers, field)`."""
    if not optimize_wanted(headers, field):
        return request
    return dataclasses.replace(request, metadata={**request.metadata, OPTIMIZE_PROMPT: "1"})


TASK_HEADER = "x-orchestrator-task"
"""The request header naming the fleet task a request is made for (the coordinator gives each
attempt's agent one, beside `x-orchestrator-agent`)."""

_TASK_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # a coordinator task id, roomier


def task_of(headers: Mapping[str, str]) -> str | None:
    """The task id `TASK_HEADER` names, or None: no header, or one that is not a sane id
    (1-128 of letters, digits, `.`, `_`, `-`), which is ignored without an error."""
    raw = headers.get(TASK_HEADER)
    if raw is None:
        return None
    value = raw.strip()
    return value if _TASK_ID.fullmatch(value) else None


def with_task(request: InferenceRequest, headers: Mapping[str, str]) -> InferenceRequest:
    """`request` attributed to the fleet task its `TASK_HEADER` names (`metadata[TASK_ID]`,
    which the intelligence layer's attribution carries), or as it is without one."""
    task_id = task_of(headers)
    if task_id is None:
        return request
    return dataclasses.replace(request, metadata={**request.metadata, TASK_ID: task_id})


def cache_headers(response: Any) -> dict[str, str]:
    """`CACHE_HEADER` (and `SIMILARITY_HEADER`) for an `InferenceResponse`; {} for an answer
    from an upstream call of its own."""
    kind = response.cache_kind
    if kind is None:
        return {}
    headers = {CACHE_HEADER: kind}
    if response.similarity is not None:
        headers[SIMILARITY_HEADER] = f"{response.similarity:.4f}"
    return headers
