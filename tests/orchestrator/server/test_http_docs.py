"""GET /docs: the API reference as one page that needs nothing from the internet."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx


def test_docs_lists_every_route_and_loads_nothing_remote(
    start_server: Callable[..., str],
) -> None:
    """The page names every documented route, links the schema, and has no script or remote
    asset (FastAPI's Swagger UI came from a CDN and was blank offline)."""
    url = start_server()
    page = httpx.get(url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    schema = httpx.get(url + "/openapi.json").json()
    for path in ("/v1/messages", "/v1/chat/completions", "/v1/prompt", "/health"):
        assert path in schema["paths"]
        assert f"<code>{path}</code>" in page.text
    assert 'href="openapi.json"' in page.text
    assert "<script" not in page.text.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)


def test_docs_escapes_what_it_shows() -> None:
    """Summaries and descriptions are text, never markup."""
    from orchestrator.server.docs_page import render_docs

    page = render_docs({"info": {"title": "t"}, "paths": {"/x": {"get": {
        "summary": "<b>bold</b>", "description": "<script>alert(1)</script>"}}}})
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page
