"""What every API door reads from a request the same way: the JSON body, the model name,
and what the client's SDK announces about its own timeout and retries."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from orchestrator.server.http_errors import RequestRejected, bad_request

__all__ = [
    "client_retries",
    "client_timeout_s",
    "json_object",
    "model_of",
    "parse_json",
    "validated",
]


def parse_json(raw: bytes | str) -> Any:
    """`raw` parsed as JSON; a 400 naming `body` and saying where it stops being JSON (line
    and column), or that it is not UTF-8."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        message = f"body: not valid JSON: {exc.msg} at {where}"
        raise RequestRejected(bad_request(message, field="body")) from None
    except UnicodeDecodeError as exc:
        message = f"body: not UTF-8 text (byte {exc.start})"
        raise RequestRejected(bad_request(message, field="body")) from None


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body as a dict; a 400 naming `body` when it is not a JSON object."""
    data = parse_json(await request.body())
    if not isinstance(data, dict):
        raise RequestRejected(bad_request("body: expected a JSON object", field="body"))
    return data


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


def client_timeout_s(header: str | None) -> float | None:
    """How long the client waits, from the `X-Stainless-Timeout` the Anthropic and OpenAI SDKs
    send (600 s by default, Claude Code's `API_TIMEOUT_MS`): the request's deadline, so long
    agent turns are not cut at the pipeline's default. Anything unusable ("NOT_GIVEN") means
    no opinion."""
    try:
        value = float(header) if header else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None
