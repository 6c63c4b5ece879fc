"""`IntelligenceBridge`: the intelligence layer wired into one pipeline, in one place.

    bridge = IntelligenceBridge(["anthropic", "openai"], threshold=lambda: live.current.x)
    pipeline = Pipeline(config, *workers, router=bridge.router_seam,
                        quality_hooks=bridge.quality_hooks, dedup_hooks=bridge.dedup_hooks)
    bridge.attach(pipeline)                    # POST /v1/feedback reaches the learners
    bridge.status()                            # the router's arms and estimated rewards

The composition root (`orchestrator.assembly.build_pipeline`) does exactly this. The flow:
- provider choice: `LearnedRouting` (the bandit behind the pipeline's `Router` seam) orders
  the providers for each request, by the request's complexity level;
- every answer from an upstream call: the `QualityEstimator` scores it (a pipeline quality
  hook), the `FeedbackCollector` turns the score, with the call's latency and cost, into the
  router's reward for the arm that answered;
- a semantic-dedup hit is attributed to its dedup entry; a client's verdict on it
  (`POST /v1/feedback`, negative = wrong) raises that entry's bar, and a task's outcome
  (`task_outcome`) credits every request made for it.

Each part has its switch: `learned_routing` (only with two or more providers: one has
nothing to choose) and `semantic_dedup`. Nothing heavy is imported here.

With a `store`, the router's state is saved while the pipeline runs (`autosave`, a
`Checkpointer`: every `save_interval_s` that learned something, or after `save_every` updates),
and once more at close (`save`), so a killed server loses at most that much. With a
`semantic_dedup_path` the semantic dedup's answered entries are kept in that file the same
way (the same interval and count, its changes being answers stored and verdicts), and
`autosave` starts loading them when the pipeline starts, not at its first lookup.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from intelligence.checkpoint import Checkpointer
from intelligence.feedback import FeedbackCollector
from intelligence.quality import QualityEstimator
from intelligence.router import LearnedRouter, LearnerStore, Policy, RewardWeights
from intelligence.routing import LearnedRouting
from intelligence.semantic_hook import SemanticDedupHook

__all__ = ["IntelligenceBridge"]


class IntelligenceBridge:
    """The learned router, quality, feedback and semantic dedup for one pipeline (see the
    module docstring). `providers` are the pipeline's provider (route) names, each an arm.
    `seed` makes the router's choices reproducible; `store` (an `AgentMemory`) restores its
    state at start, keeps it on `save()` and, while `autosave()` runs, every
    `save_interval_s` seconds (on `clock`) or `save_every` updates. `dedup_hook` passes a ready
    hook instead of building one (tests, a preloaded model); a built one reads `threshold`,
    lets a lookup wait at most `semantic_dedup_max_wait_s` for the embedder and persists its
    entries to `semantic_dedup_path` (None: memory only; a passed hook brings its own path)."""

    def __init__(
        self,
        providers: Sequence[str],
        *,
        learned_routing: bool = True,
        semantic_dedup: bool = True,
        threshold: float | Callable[[], float] = 0.8,
        semantic_dedup_max_wait_s: float | None = None,
        semantic_dedup_path: str | os.PathLike[str] | None = None,
        policy: Policy | str = Policy.THOMPSON,
        weights: RewardWeights | None = None,
        estimator: QualityEstimator | None = None,
        seed: int | None = None,
        store: LearnerStore | None = None,
        dedup_hook: SemanticDedupHook | None = None,
        save_interval_s: float = 60.0,
        save_every: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = list(providers)
        self.router: LearnedRouter | None = None
        if learned_routing and len(set(names)) > 1:
            self.router = LearnedRouter(
                names, policy=policy, weights=weights, seed=seed, store=store
            )
        self.dedup_hook: SemanticDedupHook | None = None
        if semantic_dedup:
            self.dedup_hook = dedup_hook or SemanticDedupHook(
                threshold=threshold,
                max_wait_s=semantic_dedup_max_wait_s,
                path=semantic_dedup_path,
            )
        self.collector = FeedbackCollector(router=self.router, dedup=self.dedup_hook)
        if self.dedup_hook is not None:
            self.dedup_hook.collector = self.collector
        self.routing = (
            LearnedRouting(self.router, collector=self.collector)
            if self.router is not None
            else None
        )
        self._estimator = estimator if estimator is not None else QualityEstimator()
        self.checkpointer: Checkpointer | None = None
        if self.router is not None and store is not None:
            router = self.router
            self.checkpointer = Checkpointer(
                router.save,
                lambda: router.updates_total,
                interval_s=save_interval_s,
                every_updates=save_every,
                clock=clock,
            )
        self.dedup_checkpointer: Checkpointer | None = None
        hook = self.dedup_hook
        if hook is not None and hook.path is not None:
            self.dedup_checkpointer = Checkpointer(
                hook.save,
                lambda: hook.changes_total,
                interval_s=save_interval_s,
                every_updates=save_every,
                clock=clock,
            )

    # -- what the pipeline is built with -----------------------------------------------------

    @property
    def router_seam(self) -> LearnedRouting | None:
        """The pipeline's `router` (None: keep the configured order)."""
        return self.routing

    @property
    def quality_hooks(self) -> tuple[Callable[[Any, Any], None], ...]:
        """Scores each upstream answer and rewards the arm that produced it."""
        if self.routing is None:
            return ()
        return (self.routing.quality_hook(self._estimator),)

    @property
    def dedup_hooks(self) -> tuple[SemanticDedupHook, ...]:
        return () if self.dedup_hook is None else (self.dedup_hook,)

    def attach(self, pipeline: Any) -> None:
        """Subscribe to the pipeline's feedback log: each client verdict reaches the router
        arm and the dedup entry that produced that answer."""
        pipeline.feedback.subscribe(self.on_feedback)

    def on_feedback(self, feedback: Any) -> None:
        """A pipeline feedback listener (a `Feedback` with `request_id` and `score`)."""
        self.collector.client_feedback(feedback.request_id, feedback.score)

    def task_outcome(self, task_id: str, verdict: str) -> int:
        """A fleet task ended (`passed`/`failed`): credit every request made for it."""
        return self.collector.task_outcome(task_id, verdict)

    def _checkpointers(self) -> list[Checkpointer]:
        return [c for c in (self.checkpointer, self.dedup_checkpointer) if c is not None]

    def save(self) -> None:
        """Persist the router's state in its store (when it has one) and the semantic dedup's
        entries in their file (when it has one); one failing does not keep the other from
        saving (the first error is raised after both ran). Blocking: call it from a worker
        thread when on an event loop. A semantic dedup still loading is waited for first:
        its entries are saved only once loaded, and a process must not exit mid-load."""
        if self.dedup_hook is not None:
            self.dedup_hook.settle()
        errors: list[Exception] = []
        for checkpointer in self._checkpointers():
            try:
                checkpointer.save()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def autosave(self) -> None:
        """Until cancelled, save the router's state and the semantic entries when due
        (`Checkpointer.run`: the write runs in a worker thread); with a dedup path, start
        loading the semantic dedup (and the entries the file holds) now. With nothing to
        save, returns at once."""
        if self.dedup_checkpointer is not None and self.dedup_hook is not None:
            self.dedup_hook.warm()
        runs = [c.run() for c in self._checkpointers()]
        if runs:
            await asyncio.gather(*runs)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        """The learned router's state (`LearnedRouting.status`); None without one."""
        return None if self.routing is None else self.routing.status()
