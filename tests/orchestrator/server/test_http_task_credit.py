"""Fleet task outcomes credit the answers made for the task, through real HTTP: a request
names its task in `x-orchestrator-task` (the official SDKs send it as a default header), the
doors carry it into the intelligence layer's attribution, and `POST /v1/feedback/task` (what
a coordinator at another process posts) rewards the learned router for each of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from intelligence import IntelligenceBridge
from intelligence.feedback import TASK_ID as INTELLIGENCE_TASK_ID
from orchestrator import Pipeline, PipelineConfig
from orchestrator.request import TASK_ID, Completion, InferenceRequest, StreamChunk, Usage
from orchestrator.server.bodies import task_of

TASK = "fix-flaky-test"


class Provider:
    """A fake upstream answering in full, free."""

    free = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.default_model = f"{name}-model"
        self.requests: list[InferenceRequest] = []

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.requests.append(request)
        text = "It compiles the sources into objects. Then the linker joins them."
        return Completion(
            text=text,
            usage=Usage(input_tokens=20, output_tokens=20),
            model=self.default_model,
            finish_reason="stop",
        )

    def stream(self, request: InferenceRequest, *, timeout_s: float) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError("not streamed here")

    async def aclose(self) -> None:
        return None


def _served(start_server: Callable[..., str]) -> tuple[str, IntelligenceBridge, list[Provider]]:
    providers = [Provider("one"), Provider("two")]
    bridge = IntelligenceBridge([p.name for p in providers], semantic_dedup=False, seed=3)
    pipeline = Pipeline(
        PipelineConfig(cache_enabled=False),
        *providers,
        router=bridge.router_seam,
        quality_hooks=bridge.quality_hooks,
    )
    bridge.attach(pipeline)
    pipeline.intelligence = bridge  # as the composition root does
    return start_server(pipeline), bridge, providers


def _ask(client: anthropic.Anthropic, i: int) -> str:
    message = client.messages.create(
        model="any",
        max_tokens=64,
        messages=[{"role": "user", "content": f"Explain step {i} of the build."}],
    )
    return "req_" + message.id.removeprefix("msg_")


def _routing(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/status").json()["routing"]


def _evidence(routing: dict[str, Any]) -> dict[str, tuple[int, float]]:
    return {a["name"]: (a["updates_total"], a["evidence"]) for a in routing["arms"]}


def test_a_task_outcome_posted_over_http_rewards_the_arms_of_its_requests(
    start_server: Callable[..., str],
) -> None:
    """Two answers for one task (sent by the anthropic SDK with `x-orchestrator-task`) and one
    for no task; the task's `passed` verdict reaches the router once per answer of the task:
    the arms' updates and evidence on /v1/status grow by two, and the collector counts it."""
    url, bridge, _ = _served(start_server)
    agent = anthropic.Anthropic(
        base_url=url, api_key="unused", max_retries=0, default_headers={"x-orchestrator-task": TASK}
    )
    plain = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    ids = [_ask(agent, 1), _ask(agent, 2)]
    other = _ask(plain, 3)
    assert [bridge.collector.attribution(i).task_id for i in ids] == [TASK, TASK]  # type: ignore[union-attr]
    assert bridge.collector.attribution(other).task_id is None  # type: ignore[union-attr]

    before = _routing(url)
    posted = httpx.post(f"{url}/v1/feedback/task", json={"task_id": TASK, "verdict": "passed"})
    assert posted.status_code == 202
    assert posted.json() == {"accepted": True, "task_id": TASK, "verdict": "passed", "credited": 2}
    after = _routing(url)
    assert after["feedback"]["received"]["task"] == 1
    assert after["feedback"]["router_updates"] == before["feedback"]["router_updates"] + 2
    grown = {
        name: (n - _evidence(before)[name][0], e - _evidence(before)[name][1])
        for name, (n, e) in _evidence(after).items()
    }
    assert sum(n for n, _ in grown.values()) == 2
    assert all(e > 0 for n, e in grown.values() if n)

    # Credited once: the same verdict again finds nothing left to credit.
    again = httpx.post(f"{url}/v1/feedback/task", json={"task_id": TASK, "verdict": "failed"})
    assert again.json()["credited"] == 0


def test_task_feedback_bodies_are_checked(start_server: Callable[..., str]) -> None:
    """A verdict other than passed/failed, a task id that is no id, or a missing field is a 400
    naming it; a server without the intelligence layer accepts and credits nothing."""
    url, _, _ = _served(start_server)
    for body, field in (
        ({"task_id": TASK, "verdict": "maybe"}, "verdict"),
        ({"task_id": "a b", "verdict": "passed"}, "task_id"),
        ({"verdict": "passed"}, "task_id"),
    ):
        refused = httpx.post(f"{url}/v1/feedback/task", json=body)
        assert refused.status_code == 400, refused.text
        assert field in refused.text
    bare = start_server()
    answer = httpx.post(f"{bare}/v1/feedback/task", json={"task_id": TASK, "verdict": "failed"})
    assert answer.status_code == 202 and answer.json()["credited"] == 0


def test_every_door_carries_the_task_header(start_server: Callable[..., str]) -> None:
    """Chat Completions, Responses and /v1/prompt attribute their answers to the header's
    task as Messages does; a header that is not a sane id is ignored, without an error."""
    url, bridge, providers = _served(start_server)
    headers = {"x-orchestrator-task": TASK}
    oai = openai.OpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, default_headers=headers
    )
    oai.chat.completions.create(model="any", messages=[{"role": "user", "content": "chat"}])
    oai.responses.create(model="any", input="responses")
    prompt = httpx.post(f"{url}/v1/prompt", json={"input": "prompt"}, headers=headers)
    assert prompt.status_code == 200
    odd = anthropic.Anthropic(
        base_url=url,
        api_key="unused",
        max_retries=0,
        default_headers={"x-orchestrator-task": "no/such id" + "x" * 200},
    )
    odd_id = _ask(odd, 4)
    assert bridge.collector.attribution(odd_id).task_id is None  # type: ignore[union-attr]
    sent = [r for p in providers for r in p.requests]
    tasks = sorted(r.metadata.get(TASK_ID) or "-" for r in sent)
    assert tasks == ["-", TASK, TASK, TASK]
    assert bridge.collector.attribution(prompt.json()["request_id"]).task_id == TASK  # type: ignore[union-attr]
    credited = httpx.post(f"{url}/v1/feedback/task", json={"task_id": TASK, "verdict": "failed"})
    assert credited.json()["credited"] == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TASK, TASK),
        (f"  {TASK} ", TASK),
        ("a" * 128, "a" * 128),
        ("a" * 129, None),
        ("", None),
        ("../etc", None),
        ("x y", None),
        ("é", None),
        (None, None),
    ],
)
def test_task_header_validation(header: str | None, expected: str | None) -> None:
    assert task_of({} if header is None else {"x-orchestrator-task": header}) == expected


def test_the_metadata_key_is_one_key() -> None:
    """The pipeline's and the intelligence layer's names for the key are the same string."""
    assert TASK_ID == INTELLIGENCE_TASK_ID
