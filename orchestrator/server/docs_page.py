"""`GET /docs`: the API's reference as one self-contained page, readable offline.

FastAPI's own `/docs` is Swagger UI loaded from a CDN, blank on a machine without internet
(and a page that runs a third party's script beside the server's tokens). This page is
rendered here from the app's OpenAPI schema: every route with its method, summary and
description, and a link to `/openapi.json` for tools. No script, no remote asset.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse

__all__ = ["mount_docs"]

_METHODS = ("get", "post", "put", "patch", "delete", "head")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} API</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }}
code {{ font: 14px ui-monospace, monospace; }}
.route {{ border-top: 1px solid #ddd; padding: .6rem 0; }}
.method {{ display: inline-block; min-width: 4.5rem; font-weight: 600; }}
.doc {{ margin: .3rem 0 0 4.8rem; color: #444; white-space: pre-wrap; }}
</style></head><body>
<h1>{title} API</h1>
<p>{summary}</p>
<p>The machine-readable schema is <a href="openapi.json"><code>/openapi.json</code></a>
(OpenAPI {openapi}); feed it to any OpenAPI tool.</p>
{routes}
</body></html>
"""


def mount_docs(app: FastAPI) -> None:
    """Serve the reference page at `/docs` (the app's `docs_url` must be None)."""

    @app.get("/docs", include_in_schema=False)
    async def docs(_: Request) -> HTMLResponse:
        return HTMLResponse(render_docs(app.openapi()))


def render_docs(schema: dict[str, Any]) -> str:
    """The page for an OpenAPI `schema`, every value HTML-escaped."""
    info = schema.get("info", {})
    routes = []
    for path, operations in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            summary = operation.get("summary", "")
            description = operation.get("description", "")
            doc = f'<div class="doc">{escape(description)}</div>' if description else ""
            routes.append(
                f'<div class="route"><span class="method">{method.upper()}</span>'
                f"<code>{escape(path)}</code> {escape(summary)}{doc}</div>"
            )
    return _PAGE.format(title=escape(info.get("title", "")),
                        summary=escape(info.get("summary", "")),
                        openapi=escape(str(schema.get("openapi", ""))),
                        routes="\n".join(routes))
