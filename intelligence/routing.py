"""`LearnedRouting`: the learned router in the pipeline's routing seam.

    learned = LearnedRouter(["good", "cheap"], seed=7)
    routing = LearnedRouting(learned, collector=FeedbackCollector(router=learned))
    pipeline = Pipeline(config, good, cheap, router=routing, quality_hooks=[routing.quality_hook()])
    pipeline.feedback.subscribe(routing.on_feedback)     # POST /v1/feedback rewards too

It implements `orchestrator.routing.Router` by shape (this package never imports the
pipeline): `order(request, routes)` ranks the routes by the bandit's choice in the request's
context (its complexity level), and `record(route, outcome)` learns from each attempt. A
failed attempt earns reward 0 at once (a request the provider rejected as malformed teaches
nothing about the provider, and is skipped). An answer is attributed to its arm in the
`FeedbackCollector`, so its reward comes with the verdict on it: the quality hook's score at
once, a client's `POST /v1/feedback` or the fleet task's outcome later. Without a collector
an answer is rewarded at once on its latency and cost, its quality taken as 1.

Routes whose name is not an arm of the router keep their place after the ranked ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from intelligence.complexity import score_complexity
from intelligence.feedback import TASK_ID, Attribution, FeedbackCollector
from intelligence.quality import QualityEstimator
from intelligence.router import LearnedRouter

__all__ = ["LearnedRouting", "complexity_context", "last_user_text", "task_of"]

_NO_LESSON = "rejected"  # orchestrator.routing.ErrorClass.REJECTED: the request was at fault


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)


def last_user_text(request: Any) -> str:
    """What the request asks now: its prompt, or its last user turn ("" without one)."""
    prompt = getattr(request, "prompt", None)
    if prompt:
        return str(prompt)
    for message in reversed(getattr(request, "messages", ()) or ()):
        if getattr(message, "role", None) == "user":
            return str(getattr(message, "content", "") or "")
    return ""


def task_of(request: Any) -> str | None:
    """The fleet task `request` was made for (its `metadata[TASK_ID]`), if it names one."""
    metadata = getattr(request, "metadata", None) or {}
    task_id = metadata.get(TASK_ID)
    return task_id if isinstance(task_id, str) and task_id else None


def complexity_context(request: Any) -> str | None:
    """The request's complexity level (the router learns each level separately)."""
    prompt = last_user_text(request)
    return str(score_complexity(prompt).level) if prompt else None


class LearnedRouting:
    """A `LearnedRouter` behind the pipeline's `Router` protocol (see the module docstring).

    `context(request)` gives the context a request is learned in (default: its complexity
    level; return None for one context for all). `arm(route_name)` maps a route to the
    router's arm name (default: the route's name itself).
    """

    def __init__(
        self,
        router: LearnedRouter,
        *,
        collector: FeedbackCollector | None = None,
        context: Callable[[Any], str | None] = complexity_context,
        arm: Callable[[str], str] = lambda name: name,
    ) -> None:
        if collector is not None and collector.router is not router:
            raise ValueError("collector: it must reward the same LearnedRouter")
        self.router = router
        self.collector = collector
        self._context = context
        self._arm = arm
        self.failures_recorded = 0
        self.answers_recorded = 0

    def order(self, request: Any, routes: Sequence[R]) -> list[R]:
        """`routes` in the order the bandit ranks them for `request`'s context."""
        arms = set(self.router.arms)
        by_arm = {self._arm(r.name): r for r in routes}
        ranked = [by_arm[a] for a in self.router.rank(self._context(request)) if a in by_arm]
        return ranked + [r for r in routes if self._arm(r.name) not in arms]

    def record(self, route: _Named, outcome: Any) -> None:
        """Learn from one attempt: 0 for a failure now, an answer when its verdict comes."""
        arm = self._arm(route.name)
        if arm not in self.router.arms:
            return
        context = self._context(outcome.request)
        if outcome.error is not None:
            if str(outcome.error) != _NO_LESSON:
                self.router.update(arm, 0.0, context)
                self.failures_recorded += 1
            return
        self.answers_recorded += 1
        if self.collector is None:
            reward = self.router.weights.reward(
                quality=1.0, latency_ms=outcome.latency_ms, cost_usd=outcome.cost_usd
            )
            self.router.update(arm, reward, context)
            return
        self.collector.attribute(
            Attribution(
                request_id=outcome.request.request_id,
                provider=outcome.provider,
                model=outcome.model,
                arm=arm,
                context=context,
                latency_ms=outcome.latency_ms,
                cost_usd=outcome.cost_usd,
                task_id=task_of(outcome.request),
            )
        )

    def quality_hook(self, estimator: QualityEstimator | None = None) -> Callable[[Any, Any], None]:
        """A pipeline quality hook that scores each answer with `estimator` (default: a
        `QualityEstimator()`) and hands the score to the collector, which rewards the arm
        that produced it. Cached and coalesced answers teach nothing (no choice was made)."""
        if self.collector is None:
            raise ValueError("quality_hook needs a collector to attribute scores")
        collector = self.collector
        estimator = estimator if estimator is not None else QualityEstimator()

        def hook(request: Any, response: Any) -> None:
            if response.cached or response.deduped:
                return
            score = estimator.estimate(
                last_user_text(request),
                response.text,
                finish_reason=response.finish_reason,
            )
            collector.quality(response.request_id, score.value)

        return hook

    def on_feedback(self, feedback: Any) -> None:
        """A pipeline feedback listener (`pipeline.feedback.subscribe(routing.on_feedback)`):
        a client's score in [-1, 1] rewards the arm that produced that answer."""
        if self.collector is not None:
            self.collector.client_feedback(feedback.request_id, feedback.score)

    def status(self) -> dict[str, Any]:
        """JSON-ready state for `/v1/status`: the policy, each arm's estimated reward (the
        discounted mean, the evidence behind it, its updates) overall and per context, the
        abrupt changes seen, and what reached the router (attempts, feedback)."""
        router = self.router

        def arms(context: str | None) -> list[dict[str, Any]]:
            return [
                {
                    "name": e.arm,
                    "mean_reward": round(e.mean_reward, 4),
                    "evidence": round(e.evidence, 2),
                    "updates_total": e.updates_total,
                }
                for e in router.estimates(context)
            ]

        data: dict[str, Any] = {
            "policy": str(router.policy),
            "arms": arms(None),
            "contexts": {c: arms(c) for c in router.contexts},
            "changes_total": router.changes_total,
            "answers_recorded": self.answers_recorded,
            "failures_recorded": self.failures_recorded,
        }
        if self.collector is not None:
            stats = self.collector.stats
            data["feedback"] = {
                "received": stats.received,
                "router_updates": stats.router_updates,
                "dedup_updates": stats.dedup_updates,
                "unattributed": stats.unattributed,
            }
        return data
