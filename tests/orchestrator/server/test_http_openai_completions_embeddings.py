"""`POST /v1/completions` and `POST /v1/embeddings`, driven by the official `openai` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from conftest import PricedEcho, echo_pipeline

from intelligence.embed import DIM, LexicalEmbedder
from orchestrator import EchoWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app

MODEL = "gpt-5.4-mini"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


# --- /v1/completions -------------------------------------------------------------------------


def test_a_completion_returns_the_answer_and_usage(start_server: Callable[..., str]) -> None:
    """completions.create answers the prompt as one choice, with usage."""
    url = start_server()
    completion = client(url).completions.create(
        model="echo", prompt="red green blue", max_tokens=50
    )
    (choice,) = completion.choices
    assert completion.object == "text_completion"
    assert choice.text == "red green blue" and choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_several_prompts_get_one_choice_each_in_order(start_server: Callable[..., str]) -> None:
    """A list of prompts is answered with one choice per prompt, indexed in order."""
    url = start_server()
    completion = client(url).completions.create(model="echo", prompt=["one", "two", "three"])
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, "one"), (1, "two"), (2, "three")
    ]


def test_echo_puts_the_prompt_before_the_answer(start_server: Callable[..., str]) -> None:
    """`echo=True` returns the prompt followed by the answer."""
    url = start_server()
    completion = client(url).completions.create(model="echo", prompt="ab", echo=True)
    assert completion.choices[0].text == "abab"


def test_a_streamed_completion_sends_text_chunks_then_usage(
    start_server: Callable[..., str],
) -> None:
    """stream=True yields text deltas, one finish reason and a usage chunk when asked."""
    url = start_server()
    chunks = list(
        client(url).completions.create(
            model="echo", prompt="a b c d", stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    finishes = [f for f in finishes if f]
    assert text == "a b c d" and finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"suffix": "x"}, "suffix"), ({"n": 2}, "n"), ({"prompt": [1, 2, 3]}, "prompt"),
     ({"logprobs": 2}, "logprobs")],
)
def test_what_the_pipeline_cannot_carry_is_a_400_naming_the_field(
    start_server: Callable[..., str], extra: dict[str, object], field: str
) -> None:
    """Insertion, several answers, token prompts and logprobs are refused naming the field."""
    url = start_server()
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).completions.create(**{"model": "echo", "prompt": "hi", **extra})
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"].startswith(f"{field}:")


def test_a_completion_is_billed_and_refused_past_the_budget(
    start_server: Callable[..., str],
) -> None:
    """Completions go through the budget: past it, OpenAI's 429 insufficient_quota."""
    url = start_server(echo_pipeline(PricedEcho(model=MODEL), global_budget_usd=1e-9))
    with pytest.raises(openai.RateLimitError) as caught:
        client(url).completions.create(model=MODEL, prompt="spend money")
    assert caught.value.code == "insufficient_quota"


async def test_identical_concurrent_completions_make_one_upstream_call() -> None:
    """Five IDE completions of the same prompt at once: the provider is called once."""
    worker = EchoWorker(latency_s=0.2)
    pipeline = Pipeline(PipelineConfig(), worker)
    async with ServerTask(create_app(pipeline)) as url:
        sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        answers = await asyncio.gather(
            *(sdk.completions.create(model="echo", prompt="def main():") for _ in range(5))
        )
        await sdk.close()
    assert worker.calls == 1
    assert all(a.choices[0].text == "def main():" for a in answers)
    assert pipeline.snapshot().requests_total == 5


# --- /v1/embeddings --------------------------------------------------------------------------


def test_embeddings_come_from_the_local_model_as_unit_vectors(
    start_server: Callable[..., str],
) -> None:
    """embeddings.create (the SDK asks for base64) returns one 384-d unit vector per input,
    in order, from the intelligence layer's default embedder; the same text, the same vector."""
    url = start_server()
    result = client(url).embeddings.create(
        model="text-embedding-3-small", input=["hello world", "goodbye", "hello world"]
    )
    vectors = [np.array(d.embedding) for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(v.shape == (DIM,) for v in vectors)
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors)
    assert np.allclose(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert result.model in ("all-MiniLM-L6-v2", "lexical-hashing")
    assert result.usage.prompt_tokens > 0


def test_float_encoding_gives_the_same_vectors(start_server: Callable[..., str]) -> None:
    """`encoding_format="float"` returns the same numbers as the SDK's default base64."""
    url = start_server(embedder=LexicalEmbedder())
    as_float = client(url).embeddings.create(model="m", input="abc", encoding_format="float")
    as_base64 = client(url).embeddings.create(model="m", input="abc")
    assert np.allclose(as_float.data[0].embedding, as_base64.data[0].embedding, atol=1e-6)
    assert as_float.model == "lexical-hashing"


@pytest.mark.parametrize(
    ("extra", "field"), [({"dimensions": 1536}, "dimensions"), ({"input": [[1, 2]]}, "input")]
)
def test_unservable_embedding_requests_are_a_400_naming_the_field(
    start_server: Callable[..., str], extra: dict[str, object], field: str
) -> None:
    """Another width or token-array input is refused with a 400 naming the field."""
    url = start_server(embedder=LexicalEmbedder())
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).embeddings.create(**{"model": "m", "input": "abc", **extra})
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"].startswith(f"{field}:")


class RemoteEmbedder(LexicalEmbedder):
    """An embedder that names a model of its own (as a remote one would)."""

    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.model_name = model_name


def _status(url: str) -> dict[str, object]:
    data: dict[str, object] = httpx.get(url + "/v1/status").json()
    return data


def test_embeddings_are_metered_and_the_local_model_costs_nothing_without_a_warning(
    start_server: Callable[..., str],
) -> None:
    """Each embeddings request's tokens show on /v1/status and /metrics; the local model is
    priced at 0, so it bills nothing and is not listed as unpriced."""
    url = start_server(embedder=LexicalEmbedder())
    first = client(url).embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
    client(url).embeddings.create(model="text-embedding-3-small", input="e f")
    status = _status(url)
    assert status["embedding_requests"] == 2
    assert status["embedding_tokens"] >= first.usage.prompt_tokens > 0
    assert status["embedding_cost_usd"] == 0.0 and status["unpriced_models"] == {}
    metrics = httpx.get(url + "/metrics").text
    assert "orchestrator_embedding_requests_total 2.0" in metrics
    assert f"orchestrator_embedding_tokens_total {float(status['embedding_tokens'])}" in metrics


def test_a_priced_embedding_model_is_billed_and_refused_past_the_budget(
    start_server: Callable[..., str], tmp_path: Path
) -> None:
    """An embedder's model with a price is billed into the spend and the usage ledger (by
    model and client) like any call, and past the session budget the next request is OpenAI's
    429 insufficient_quota."""
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."remote-embed-1"]\ninput_per_mtok_usd = 10000.0\noutput_per_mtok_usd = 0.0\n'
    )
    pipeline = echo_pipeline(price_table_path=prices, session_budget_usd=0.5)
    url = start_server(pipeline, embedder=RemoteEmbedder("remote-embed-1"))
    sdk = client(url)
    answer = sdk.embeddings.create(
        model="m",
        input="one two three four",
        user="agent-1",
        extra_headers={"x-orchestrator-agent": "indexer"},
    )
    assert answer.model == "remote-embed-1"
    status = _status(url)
    cost = answer.usage.prompt_tokens * 10000.0 / 1e6
    assert status["embedding_cost_usd"] == pytest.approx(cost)
    assert status["cost_usd_total"] == pytest.approx(cost)
    row = status["usage"]["rows"][0]  # the usage ledger has it, under the embedding model
    assert (row["model"], row["client"], row["requests"]) == ("remote-embed-1", "indexer", 1)
    assert row["input_tokens"] == answer.usage.prompt_tokens and row["output_tokens"] == 0
    assert row["cost_usd"] == pytest.approx(cost)
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(20):
            sdk.embeddings.create(model="m", input="one two three four", user="agent-1")
    assert caught.value.code == "insufficient_quota"
    sdk.embeddings.create(model="m", input="x", user="agent-2")  # another session's budget
    assert _status(url)["budget_refusals"] == 1


def test_an_unpriced_remote_embedding_model_is_a_warning_on_status(
    start_server: Callable[..., str],
) -> None:
    """An embedder naming a model the price table does not know costs 0 and is listed in
    /v1/status's unpriced_models (a budget cannot see it)."""
    url = start_server(embedder=RemoteEmbedder("mystery-embed"))
    client(url).embeddings.create(model="m", input="abc")
    status = _status(url)
    assert status["unpriced_models"] == {"mystery-embed": 1}
    assert status["embedding_requests"] == 1
