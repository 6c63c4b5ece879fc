"""The routing seam: the inference stage asks its `Router` for the order of the providers and
reports every upstream attempt to it; `FallbackRouter` keeps the configured order."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pytest
from pipeline_fakes import ScriptedWorker

from orchestrator import InferenceRequest, Pipeline, PipelineConfig, Tunables
from orchestrator.errors import ProviderError
from orchestrator.routing import ErrorClass, FallbackRouter, Route, RouteOutcome, Router


class Recording(FallbackRouter):
    """The default order, remembering every outcome it is told."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, RouteOutcome]] = []

    def record(self, route: Route, outcome: RouteOutcome) -> None:
        self.outcomes.append((route.name, outcome))


class Reversed(Recording):
    """Tries the routes last first."""

    def order(self, request: InferenceRequest, routes: Sequence[Route]) -> Sequence[Route]:
        return list(reversed(routes))


def test_the_default_router_is_the_configured_order() -> None:
    """A pipeline without a router uses `FallbackRouter`, which returns the routes as given."""
    pipeline = Pipeline(PipelineConfig(), ScriptedWorker("a"), ScriptedWorker("b"))
    assert isinstance(pipeline.router, FallbackRouter)
    assert isinstance(pipeline.router, Router)
    routes = pipeline.routes
    assert list(pipeline.router.order(InferenceRequest("x"), routes)) == list(routes)


async def test_every_attempt_is_recorded_with_its_error_class() -> None:
    """A primary that fails (5xx) then a fallback that answers: the router hears both, the
    failure with its class and status, the answer with model, usage, latency and cost."""
    router = Recording()
    primary = ScriptedWorker("primary", [ProviderError("primary", "boom", status=500,
                                                       retryable=True)])
    fallback = ScriptedWorker("fallback")
    config = PipelineConfig(cache_enabled=False)
    async with Pipeline(config, primary, fallback, router=router) as pipeline:
        response = await pipeline.infer(InferenceRequest("hello", request_id="req-1"))
    assert response.provider == "fallback"
    assert [(name, o.error, o.status) for name, o in router.outcomes] == [
        ("primary", ErrorClass.UPSTREAM, 500),
        ("fallback", None, None),
    ]
    answer = router.outcomes[1][1]
    assert answer.ok and answer.model == "echo" and answer.usage is not None
    assert answer.request.request_id == "req-1"
    assert answer.latency_ms >= 0 and answer.cost_usd >= 0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ProviderError("p", "slow down", status=429, retryable=True), ErrorClass.RATE_LIMITED),
        (ProviderError("p", "bad request", status=400, retryable=False), ErrorClass.REJECTED),
        (ProviderError("p", "reset", retryable=True), ErrorClass.UPSTREAM),
        (TimeoutError(), ErrorClass.TIMEOUT),
        (RuntimeError("worker bug"), ErrorClass.WORKER),
    ],
)
async def test_error_classes(error: BaseException, expected: ErrorClass) -> None:
    """Each kind of failed attempt reaches the router as its own class."""
    router = Recording()
    worker = ScriptedWorker("only", [error])
    config = PipelineConfig(cache_enabled=False, tunables=Tunables(retry_max_attempts=1))
    async with Pipeline(config, worker, router=router) as pipeline:
        with contextlib.suppress(ProviderError):
            await pipeline.infer(InferenceRequest("x", timeout_s=5))
    assert router.outcomes[0][1].error is expected


async def test_the_router_decides_who_goes_first() -> None:
    """A router that reverses the order sends every request to the last provider first."""
    first, second = ScriptedWorker("first"), ScriptedWorker("second")
    async with Pipeline(PipelineConfig(cache_enabled=False), first, second,
                        router=Reversed()) as pipeline:
        for i in range(3):
            response = await pipeline.infer(InferenceRequest(f"q{i}"))
            assert response.provider == "second"
    assert (first.calls, second.calls) == (0, 3)


async def test_a_model_name_stays_with_the_configured_primary() -> None:
    """A request naming a model sends it to the configured primary only, whoever goes first."""
    first, second = ScriptedWorker("first"), ScriptedWorker("second")
    async with Pipeline(PipelineConfig(cache_enabled=False), first, second,
                        router=Reversed()) as pipeline:
        await pipeline.infer(InferenceRequest("q", model="big-model"))
    assert second.requests[0].model is None


async def test_a_broken_router_falls_back_to_the_configured_order() -> None:
    """A router whose `order` raises does not fail the request: the configured order is used."""

    class Broken(Recording):
        def order(self, request: InferenceRequest, routes: Sequence[Route]) -> Sequence[Route]:
            raise RuntimeError("router bug")

    async with Pipeline(PipelineConfig(), ScriptedWorker("a"), router=Broken()) as pipeline:
        response = await pipeline.infer(InferenceRequest("still answered"))
    assert response.text == "still answered"
