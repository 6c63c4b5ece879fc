"""`SEMANTIC_DEDUP_PATH`: a real server (the `serve` app on a socket) keeps its semantic
entries in the file while serving and at shutdown; a second server on the same path serves a
semantic hit for a prompt the first one answered. A corrupt file is reported by name and the
server starts with an empty index. The lexical embedder stands in for MiniLM (no torch)."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import intelligence.dedup
from intelligence.embed import LexicalEmbedder
from orchestrator.server.bodies import CACHE_HEADER
from orchestrator.server.runner import ServerThread, build_app
from orchestrator.settings import ServerSettings

QUESTION = "What is the capital of France?"
ASKED_AGAIN = "what is the capital of france?"


@pytest.fixture(autouse=True)
def lexical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intelligence.dedup, "DefaultEmbedder", LexicalEmbedder)


def settings_for(path: Path) -> ServerSettings:
    return ServerSettings(
        provider="echo", semantic_dedup_path=str(path), router_save_interval_s=0.05
    )


def semantic_status(url: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(url + "/v1/status", timeout=10).json()
    return status["semantic_dedup"]


def wait_loaded(url: str) -> dict[str, Any]:
    """The semantic status once the dedup (and its file) loaded: it starts with the server."""
    deadline = time.monotonic() + 60
    while (status := semantic_status(url))["state"] != "ready":
        assert status["state"] == "loading" and time.monotonic() < deadline, status
        time.sleep(0.02)
    return status


def ask(url: str, text: str) -> httpx.Response:
    response = httpx.post(url + "/v1/prompt", json={"input": text}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def saved_texts(path: Path) -> list[str]:
    with path.open("rb") as f:
        return [row["text"] for row in pickle.load(f)["entries"]]


def test_a_restarted_server_serves_what_the_first_one_stored(tmp_path: Path) -> None:
    path = tmp_path / "semantic.idx"
    app, _ = build_app(settings_for(path))
    with ServerThread(app) as url:
        assert wait_loaded(url)["entries"] == 0
        assert CACHE_HEADER not in ask(url, QUESTION).headers
        deadline = time.monotonic() + 30
        while not path.exists() or saved_texts(path) != [QUESTION]:  # the periodic save
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ask(url, "How long is the Nile?")
    assert sorted(saved_texts(path)) == sorted([QUESTION, "How long is the Nile?"])  # at close

    restarted, _ = build_app(settings_for(path))
    with ServerThread(restarted) as url:
        status = wait_loaded(url)
        assert status["entries"] == 2 and status["path"] == str(path)
        again = ask(url, ASKED_AGAIN)
        assert again.headers[CACHE_HEADER] == "semantic"
        body = again.json()
        assert body["text"] == QUESTION  # echo's answer to the first server's prompt
        assert body["cache_kind"] == "semantic"
        pipeline = restarted.state.orchestrator.pipeline
        assert pipeline.snapshot().upstream_calls == 0


def test_a_corrupt_file_is_reported_and_the_server_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "semantic.idx"
    path.write_bytes(b"\x00garbage")
    app, _ = build_app(settings_for(path))
    with caplog.at_level(logging.ERROR, logger="intelligence"), ServerThread(app) as url:
        status = wait_loaded(url)
        assert status["entries"] == 0 and str(path) in status["load_problem"]
        assert CACHE_HEADER not in ask(url, QUESTION).headers
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert path.with_name("semantic.idx.rejected").read_bytes() == b"\x00garbage"
    assert saved_texts(path) == [QUESTION]
