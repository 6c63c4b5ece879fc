"""Semantic dedup in the live server: the composition root's `SemanticDedupHook` (the packaged
MiniLM, FAISS, the learned verifier), driven through HTTP by the official `anthropic` SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import pytest

from intelligence.semantic_hook import SemanticDedupHook, SemanticMatch
from orchestrator import Pipeline, PipelineConfig
from orchestrator.assembly import build_pipeline
from orchestrator.request import Completion, InferenceRequest, StreamChunk, Usage
from orchestrator.server.bodies import CACHE_HEADER, SIMILARITY_HEADER
from orchestrator.settings import ServerSettings, SettingsError, load_settings

QUESTION = "How do I reverse a list in Python?"
PARAPHRASE = "What's the way to reverse a Python list?"
HARD_NEGATIVE = "How do I sort a list in Python?"
LOAD_TIMEOUT_S = 600  # the first load imports torch: slow on a busy machine


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


def ask(url: str, text: str, history: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """One Messages call; `history` alternates user and assistant turns before `text`."""
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": turn}
        for i, turn in enumerate(history)
    ]
    messages.append({"role": "user", "content": text})
    return client(url).messages.with_raw_response.create(
        model="echo", max_tokens=64, messages=messages, **kwargs
    )


@pytest.fixture
def served(start_server: Callable[..., str]) -> tuple[str, Pipeline]:
    """A server over the composition root's pipeline (echo), its semantic dedup loaded."""
    pipeline = build_pipeline(ServerSettings(provider="echo"))
    (hook,) = pipeline.semantic.hooks
    assert isinstance(hook, SemanticDedupHook)
    assert hook.wait_ready(LOAD_TIMEOUT_S), hook.status()
    return start_server(pipeline), pipeline


def test_a_paraphrase_gets_the_stored_answer_marked_semantic(served: tuple[str, Pipeline]) -> None:
    """The paraphrase is answered from the first call's answer, with kind and similarity in
    the headers; no second upstream call."""
    url, pipeline = served
    first = ask(url, QUESTION)
    second = ask(url, PARAPHRASE)
    assert CACHE_HEADER not in first.headers
    assert second.headers[CACHE_HEADER] == "semantic"
    assert 0.9 < float(second.headers[SIMILARITY_HEADER]) <= 1.0
    assert second.parse().content[0].text == QUESTION  # echo answered the first question
    snapshot = pipeline.snapshot()
    assert snapshot.upstream_calls == 1
    assert snapshot.semantic_dedup is not None
    assert snapshot.semantic_dedup["embedder"] == "sentence-transformers"
    # one request after the other: the embedder is idle for each, never over the budget
    assert snapshot.semantic_dedup["skipped_busy"] == 0
    assert snapshot.semantic_dedup["max_wait_ms"] == 20.0
    (hit,) = snapshot.semantic_dedup["recent_hits"]
    assert hit["served_from"] == "cache" and hit["similarity"] > 0.9


def test_a_streamed_paraphrase_is_marked_semantic_in_its_headers(
    served: tuple[str, Pipeline],
) -> None:
    """Streamed, a paraphrase served from the stored answer carries the same kind and
    similarity headers as a JSON answer."""
    url, pipeline = served
    ask(url, QUESTION)
    with client(url).messages.with_streaming_response.create(
        model="echo", max_tokens=64, stream=True,
        messages=[{"role": "user", "content": PARAPHRASE}],
    ) as response:
        assert response.headers[CACHE_HEADER] == "semantic"
        assert 0.9 < float(response.headers[SIMILARITY_HEADER]) <= 1.0
        assert any(QUESTION in line for line in response.iter_lines())
    assert pipeline.snapshot().upstream_calls == 1


def test_a_hard_negative_is_not_merged(served: tuple[str, Pipeline]) -> None:
    """Another operation on the same object is another question."""
    url, pipeline = served
    ask(url, QUESTION)
    other = ask(url, HARD_NEGATIVE)
    assert CACHE_HEADER not in other.headers
    assert other.parse().content[0].text == HARD_NEGATIVE
    assert pipeline.snapshot().upstream_calls == 2


def test_multi_turn_conversations_are_isolated(served: tuple[str, Pipeline]) -> None:
    """The same paraphrase after another conversation's history is not served; after the
    same history it is."""
    url, pipeline = served
    rome = ("We are writing a game in Python.", "Great, what do you need?")
    oslo = ("We are writing a web scraper in Rust.", "Great, what do you need?")
    ask(url, QUESTION, rome)
    elsewhere = ask(url, PARAPHRASE, oslo)
    no_history = ask(url, PARAPHRASE)
    same = ask(url, PARAPHRASE, rome)
    assert CACHE_HEADER not in elsewhere.headers
    assert CACHE_HEADER not in no_history.headers
    assert same.headers[CACHE_HEADER] == "semantic"
    assert pipeline.snapshot().upstream_calls == 3


def test_a_client_can_opt_out_by_header_or_field(served: tuple[str, Pipeline]) -> None:
    """`x-orchestrator-semantic-dedup: off` and `semantic_dedup: false` each skip semantic
    dedup (the exact cache still answers an identical repeat)."""
    url, pipeline = served
    ask(url, QUESTION)
    by_header = ask(url, PARAPHRASE, extra_headers={"x-orchestrator-semantic-dedup": "off"})
    assert CACHE_HEADER not in by_header.headers
    assert pipeline.snapshot().upstream_calls == 2
    by_field = ask(url, PARAPHRASE + " ", extra_body={"semantic_dedup": False})
    assert by_field.headers.get(CACHE_HEADER) == "exact"  # the same as the one just answered
    assert pipeline.snapshot().semantic_dedup["lookups"] == 1  # type: ignore[index]


def test_a_sampled_request_is_never_served_semantically(served: tuple[str, Pipeline]) -> None:
    """An explicit temperature above 0 asks for a fresh sample."""
    url, pipeline = served
    ask(url, QUESTION, extra_body={"temperature": 0})
    hot = ask(url, PARAPHRASE, extra_body={"temperature": 0.8})
    assert CACHE_HEADER not in hot.headers
    assert pipeline.snapshot().upstream_calls == 2


def test_a_threshold_raised_live_stops_the_hit(served: tuple[str, Pipeline]) -> None:
    """The bar is read from the live config at every lookup."""
    url, pipeline = served
    ask(url, QUESTION)
    pipeline.live.set(semantic_dedup_threshold=1.0)
    strict = ask(url, PARAPHRASE)
    pipeline.live.set(semantic_dedup_threshold=0.92)
    loose = ask(url, "What is the way to reverse a Python list?")
    assert CACHE_HEADER not in strict.headers
    assert loose.headers[CACHE_HEADER] == "semantic"


class HeldWorker:
    """An upstream whose calls wait for the test's gate (a thread event): echoes the prompt."""

    name = "held"
    default_model = "echo"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.called = threading.Event()
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.calls += 1
        self.called.set()
        await asyncio.to_thread(self.gate.wait, 60)
        text = request.messages_or_prompt[-1].content
        return Completion(text=text, usage=Usage(input_tokens=9, output_tokens=9), model="echo")

    def stream(self, request: InferenceRequest, *, timeout_s: float) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError("not streamed in these tests")

    async def aclose(self) -> None:
        self.gate.set()


class WatchedHook(SemanticDedupHook):
    """The real hook, telling the test when a match was used."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.used = threading.Event()

    def served(self, request_id: str, match: SemanticMatch, task_id: str | None = None) -> None:
        super().served(request_id, match)
        self.used.set()


def test_a_paraphrase_joins_the_request_in_flight(start_server: Callable[..., str]) -> None:
    """While the first call is upstream, the paraphrase joins it: one call, two answers."""
    worker, hook = HeldWorker(), WatchedHook()
    assert hook.wait_ready(LOAD_TIMEOUT_S)
    url = start_server(Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]))
    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.setdefault("a", ask(url, QUESTION)))
    first.start()
    assert worker.called.wait(60)
    second = threading.Thread(target=lambda: results.setdefault("b", ask(url, PARAPHRASE)))
    second.start()
    assert hook.used.wait(60)
    worker.gate.set()
    first.join(60)
    second.join(60)
    assert worker.calls == 1
    assert results["b"].headers[CACHE_HEADER] == "semantic"
    assert results["b"].parse().content[0].text == QUESTION
    assert hook.status()["joined_flights"] == 1


def test_the_server_starts_without_loading_the_model() -> None:
    """Building the server's pipeline and app, semantic dedup on, imports no numpy, torch,
    FAISS or sentence-transformers: they load on the first lookup, off the event loop."""
    code = (
        "import sys\n"
        "from orchestrator.assembly import build_pipeline\n"
        "from orchestrator.server.app import create_app\n"
        "from orchestrator.settings import ServerSettings, SettingsError, load_settings\n"
        "pipeline = build_pipeline(ServerSettings(provider='echo'))\n"
        "create_app(pipeline)\n"
        "assert pipeline.semantic.hooks, 'semantic dedup is on by default'\n"
        "heavy = {'numpy', 'torch', 'faiss', 'sentence_transformers'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_setting_turns_it_off() -> None:
    """`SEMANTIC_DEDUP=off` builds a pipeline without the hook."""
    settings = load_settings(environ={"PROVIDER": "echo", "SEMANTIC_DEDUP": "off"}, env_file=None)
    assert build_pipeline(settings).semantic.hooks == ()
    with pytest.raises(SettingsError, match="SEMANTIC_DEDUP"):
        load_settings(environ={"PROVIDER": "echo", "SEMANTIC_DEDUP": "maybe"}, env_file=None)


def test_the_wait_budget_is_a_setting_the_hook_gets() -> None:
    """`SEMANTIC_DEDUP_MAX_WAIT_MS` (20 by default) is how long the hook's lookups may wait for
    the embedder; a negative one is refused by name."""
    (hook,) = build_pipeline(ServerSettings(provider="echo")).semantic.hooks
    assert isinstance(hook, SemanticDedupHook) and hook.max_wait_s == 0.020
    settings = load_settings(
        environ={"PROVIDER": "echo", "SEMANTIC_DEDUP_MAX_WAIT_MS": "5"}, env_file=None
    )
    (hook,) = build_pipeline(settings).semantic.hooks
    assert isinstance(hook, SemanticDedupHook) and hook.max_wait_s == 0.005
    with pytest.raises(SettingsError, match="SEMANTIC_DEDUP_MAX_WAIT_MS"):
        load_settings(environ={"PROVIDER": "echo", "SEMANTIC_DEDUP_MAX_WAIT_MS": "-1"},
                      env_file=None)
