"""`JsonResponse`: a JSON response encoded with the hot path's codec (orjson)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from orchestrator.codec import dumps

__all__ = ["JsonResponse"]


class JsonResponse(Response):
    """Starlette's `JSONResponse`, rendered by `orchestrator.codec` (compact UTF-8 JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
