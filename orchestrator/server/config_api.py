"""The live configuration over HTTP: `GET /v1/config` and `PATCH /v1/config`.

    GET   /v1/config   → {"version": 3, "values": {...}, "bounds": {name: {"low", "high", ...}}}
    PATCH /v1/config   {"inference_concurrency": 8, "cache_ttl_s": 30}
                       → {"changed": {"inference_concurrency": {"old": 64, "new": 8}}, "version": 4}

Reading needs the client token like every route; changing needs the admin token (403
otherwise). A bad change answers 422 naming the field and changes nothing. Both call the
server's `LiveConfigSet`, the same code MCP `configure_pipeline` calls.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from orchestrator.config import Change
from orchestrator.errors import InvalidTunable
from orchestrator.server.auth import is_admin
from orchestrator.server.bodies import json_any
from orchestrator.server.http_errors import ApiError, RequestRejected
from orchestrator.server.state import ServerState, server_state

__all__ = ["ADMIN_NEEDED", "changed_json", "router"]

router = APIRouter()
State = Annotated[ServerState, Depends(server_state)]

ADMIN_NEEDED = (
    "changing the configuration needs the admin token: send 'Authorization: Bearer "
    "<ADMIN_API_KEY>' (or API_KEY when ADMIN_API_KEY is not set)"
)


def changed_json(changed: Change) -> dict[str, dict[str, Any]]:
    """`{name: (old, new)}` as `{name: {"old": old, "new": new}}`."""
    return {name: {"old": old, "new": new} for name, (old, new) in changed.items()}


@router.get("/v1/config", summary="The live configuration: values, bounds and version")
async def get_config(state: State) -> dict[str, Any]:
    return state.config.describe()


@router.patch(
    "/v1/config",
    summary="Change live values (admin token); answers what changed, old -> new",
)
async def patch_config(request: Request, state: State) -> dict[str, Any]:
    if not is_admin(request.scope):
        raise RequestRejected(
            ApiError(
                status=403,
                kind="forbidden",
                message=ADMIN_NEEDED,
                anthropic_type="permission_error",
                openai_type="invalid_request_error",
            )
        )
    changes = _changes(await json_any(request))
    try:
        changed = state.config.apply(changes)
    except InvalidTunable as exc:
        raise RequestRejected(_unprocessable(str(exc), exc.field)) from exc
    return {"changed": changed_json(changed), "version": state.config.version}


def _changes(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestRejected(
            _unprocessable(
                "body must be a JSON object of tunable names and values, e.g. "
                '{"inference_concurrency": 8}',
                "body",
            )
        )
    return body


def _unprocessable(message: str, field: str) -> ApiError:
    return ApiError(status=422, kind="invalid_config", message=message, field=field)
