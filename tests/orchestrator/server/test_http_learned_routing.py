"""The intelligence bridge in the live server: the learned router chooses the provider for
each request from the quality, latency and cost of the answers it got, driven through HTTP by
the official `anthropic` SDK. Seeded and clocked: no sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx
from fakeclock import FakeClock

from intelligence import IntelligenceBridge
from orchestrator import Pipeline, PipelineConfig
from orchestrator.assembly import build_pipeline
from orchestrator.request import Completion, InferenceRequest, StreamChunk, Usage
from orchestrator.routing import FallbackRouter
from orchestrator.settings import ServerSettings
from orchestrator.tui import routing_text


class Provider:
    """A fake upstream: answers in `style` (full, truncated or refusing) and takes
    `latency_s` on the pipeline's clock. Free, so only quality and latency differ."""

    free = True

    def __init__(self, name: str, clock: FakeClock, *, style: str, latency_s: float) -> None:
        self.name = name
        self.default_model = f"{name}-model"
        self.clock = clock
        self.style = style
        self.latency_s = latency_s
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.calls += 1
        self.clock.advance(self.latency_s)
        usage = Usage(input_tokens=20, output_tokens=20)
        if self.style == "refuses":
            text, finish = "I'm sorry, but I can't help with that.", "stop"
        elif self.style == "truncated":
            text, finish = "The step first", "length"
        else:
            text = "It compiles the sources into objects. Then the linker joins them."
            finish = "stop"
        return Completion(text=text, usage=usage, model=self.default_model, finish_reason=finish)

    def stream(self, request: InferenceRequest, *, timeout_s: float) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError("not streamed here")

    async def aclose(self) -> None:
        return None


def ask(client: anthropic.Anthropic, i: int) -> Any:
    return client.messages.create(
        model="any",
        max_tokens=64,
        messages=[{"role": "user", "content": f"Explain step {i} of the build in two sentences."}],
    )


def calls_during(
    client: anthropic.Anthropic, providers: list[Provider], start: int, count: int
) -> dict[str, int]:
    before = {p.name: p.calls for p in providers}
    for i in range(start, start + count):
        ask(client, i)
    return {p.name: p.calls - before[p.name] for p in providers}


def test_traffic_moves_to_the_better_provider_and_back_when_it_degrades(
    start_server: Callable[..., str],
) -> None:
    """A strong provider (full answers, 0.8 s) beats a weak one (truncated, 0.1 s); when the
    strong one starts refusing and slows to 3 s, the traffic returns to the weak one. The
    router's arms and estimated rewards are on /v1/status; client feedback reaches it."""
    clock = FakeClock()
    weak = Provider("weak", clock, style="truncated", latency_s=0.1)
    strong = Provider("strong", clock, style="full", latency_s=0.8)
    bridge = IntelligenceBridge(["weak", "strong"], semantic_dedup=False, seed=7)
    config = PipelineConfig(cache_enabled=False, fallback_order=("weak", "strong"))
    pipeline = Pipeline(
        config,
        weak,
        strong,
        router=bridge.router_seam,
        quality_hooks=bridge.quality_hooks,
        clock=clock,
    )
    bridge.attach(pipeline)
    url = start_server(pipeline)
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)

    calls_during(client, [weak, strong], 0, 60)  # exploring
    settled = calls_during(client, [weak, strong], 60, 40)
    assert settled["strong"] >= 36, settled

    strong.style, strong.latency_s = "refuses", 3.0
    calls_during(client, [weak, strong], 100, 60)  # noticing
    back = calls_during(client, [weak, strong], 160, 40)
    assert back["weak"] >= 36, back

    status = httpx.get(f"{url}/v1/status").json()
    arms = {a["name"]: a for a in status["routing"]["arms"]}
    assert arms["weak"]["mean_reward"] > arms["strong"]["mean_reward"]
    assert status["routing"]["answers_recorded"] == 200
    assert "weak" in routing_text(status["routing"])

    message = ask(client, 999)
    request_id = "req_" + message.id.removeprefix("msg_")
    before = status["routing"]["feedback"]["router_updates"]
    assert httpx.post(f"{url}/v1/feedback", json={"request_id": request_id, "score": -1})
    after = httpx.get(f"{url}/v1/status").json()["routing"]["feedback"]
    assert after["received"]["client"] == 1
    assert after["router_updates"] == before + 2  # the answer's quality score, then the verdict


def test_the_composition_root_puts_the_learned_router_in_the_seam() -> None:
    """With a fallback the server's pipeline routes with the learned router; LEARNED_ROUTING
    off (or a single provider) keeps the configured order."""
    settings = ServerSettings(provider="echo", fallback=("llamacpp",), llama_cpp_url="http://127.0.0.1:9")
    learned = build_pipeline(settings)
    assert type(learned.router).__name__ == "LearnedRouting"
    assert learned.snapshot().routing is not None
    assert [a["name"] for a in learned.snapshot().routing["arms"]] != []  # type: ignore[index]
    off = ServerSettings(
        provider="echo", fallback=("llamacpp",), llama_cpp_url="http://127.0.0.1:9",
        learned_routing=False,
    )
    assert isinstance(build_pipeline(off).router, FallbackRouter)
    assert isinstance(build_pipeline(ServerSettings(provider="echo")).router, FallbackRouter)
