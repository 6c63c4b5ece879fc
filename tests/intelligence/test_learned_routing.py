"""`LearnedRouting` in the pipeline: the learned router chooses the provider for each request,
learns from every attempt and from the quality of each answer, and the traffic moves to the
provider whose answers are better."""

from __future__ import annotations

from intelligence import FeedbackCollector, LearnedRouter
from intelligence.routing import LearnedRouting
from orchestrator import InferenceRequest, Pipeline, PipelineConfig
from orchestrator.errors import ProviderError
from orchestrator.request import Completion, Usage
from orchestrator.routing import Router


class Provider:
    """A fake provider: answers each prompt with `answer(prompt)`; counts its calls."""

    def __init__(self, name: str, answer, *, fails: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.name = name
        self.default_model = f"{name}-model"
        self._answer = answer
        self._fails = fails
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.calls += 1
        if self._fails:
            raise ProviderError(self.name, "upstream 503", status=503, retryable=True)
        text = self._answer(request.prompt)
        return Completion(
            text=text, usage=Usage(input_tokens=20, output_tokens=20), model=self.default_model
        )

    async def stream(self, request, *, timeout_s):  # type: ignore[no-untyped-def]
        raise NotImplementedError  # these tests do not stream
        yield

    async def aclose(self) -> None:
        return None


def careful(prompt: str) -> str:
    return f"Here is a full answer to {prompt!r}: first the reason, then an example."


def refusing(prompt: str) -> str:
    return "I'm sorry, but I can't help with that."


def routing(*names: str, seed: int = 5) -> LearnedRouting:
    learned = LearnedRouter(list(names), seed=seed)
    return LearnedRouting(learned, collector=FeedbackCollector(router=learned))


def test_it_is_a_router() -> None:
    """`LearnedRouting` satisfies the pipeline's `Router` protocol."""
    assert isinstance(routing("a", "b"), Router)


async def test_traffic_shifts_to_the_provider_with_better_answers() -> None:
    """Two providers, one whose answers are refusals: after a short exploration nearly all
    requests go to the one whose answers score well."""
    good, bad = Provider("good", careful), Provider("bad", refusing)
    router = routing("bad", "good")  # the bad one is listed first: the order must be learned
    config = PipelineConfig(cache_enabled=False, fallback_order=("bad", "good"))
    providers: list[str] = []
    async with Pipeline(
        config, bad, good, router=router, quality_hooks=[router.quality_hook()]
    ) as pipeline:
        for i in range(120):
            response = await pipeline.infer(InferenceRequest(f"Explain step {i} of the build."))
            providers.append(response.provider)
    early, late = providers[:20], providers[-40:]
    assert late.count("good") >= 38, late
    assert late.count("good") > early.count("good")
    assert router.collector is not None
    assert router.collector.stats.router_updates == 120


async def test_a_failing_provider_loses_its_traffic() -> None:
    """A provider that fails every call earns 0 for each attempt; requests soon try the
    healthy one first (and each still gets an answer through the fallback)."""
    down, up = Provider("down", careful, fails=True), Provider("up", careful)
    router = routing("down", "up", seed=9)
    config = PipelineConfig(cache_enabled=False, fallback_order=("down", "up"))
    async with Pipeline(
        config, down, up, router=router, quality_hooks=[router.quality_hook()]
    ) as pipeline:
        for i in range(60):
            response = await pipeline.infer(InferenceRequest(f"Describe item {i} briefly."))
            assert response.provider == "up"
        calls_before = down.calls
        for i in range(20):
            await pipeline.infer(InferenceRequest(f"Describe thing {i} briefly."))
    assert down.calls - calls_before <= 2
    assert router.failures_recorded == down.calls
