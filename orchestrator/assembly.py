"""The composition root: the one place a `Pipeline` is built from `ServerSettings`.

    pipeline = build_pipeline(settings)                        # orchestrator serve, the REPL,
    pipeline = build_pipeline(settings, live=live, router=r)   # orchestrator mcp, coordinator

`orchestrator serve`, the REPL, `orchestrator mcp` and `coordinator run --orchestrator start`
all build their pipeline here. Each provider's worker comes from its `PROVIDER_SPECS` entry;
the learning loop's parts plug in through the arguments (a live config, quality hooks, dedup
hooks, a cache, a router).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config import LiveConfig, PipelineConfig
from orchestrator.pipeline import Pipeline
from orchestrator.providers.registry import PROVIDER_SPECS

if TYPE_CHECKING:
    from intelligence.router import LearnerStore
    from orchestrator.resilience.cache import ResponseCache
    from orchestrator.resilience.coalesce import DedupHook
    from orchestrator.routing import Router
    from orchestrator.settings import ServerSettings
    from orchestrator.stages.postprocess import QualityHook

__all__ = ["build_pipeline"]


def build_pipeline(
    settings: ServerSettings,
    config: PipelineConfig | None = None,
    *,
    live: LiveConfig | None = None,
    quality_hooks: Sequence[QualityHook] = (),
    dedup_hooks: Sequence[DedupHook] = (),
    cache: ResponseCache | None = None,
    router: Router | None = None,
    memory: LearnerStore | None = None,
) -> Pipeline:
    """A (not yet started) `Pipeline` with the worker `settings.provider` names, then one per
    `settings.fallback`, tried in that order.

    `config` defaults to `PipelineConfig()`; `settings.max_spend_usd`, when set, becomes its
    global budget, `settings.prices_file` its price table, and `settings.log_prompts` turns
    on its prompt log. The configured model is the
    primary's; a fallback answers with its own default model. Provider SDKs are imported
    here, not at module import.

    The intelligence layer comes in through an `intelligence.IntelligenceBridge`:
    `settings.learned_routing` (the default; with a fallback, when no `router` is given) puts
    the learned router in the routing seam, rewarded by the quality of each answer;
    `settings.semantic_dedup` (the default; unless `dedup_hooks` are given) adds semantic
    dedup reading the live `semantic_dedup_threshold`, a lookup waiting at most
    `settings.semantic_dedup_max_wait_ms` for the embedder and, with
    `settings.semantic_dedup_path`, keeping its answered entries in that file (loaded as the
    pipeline starts, saved as the router's state is and at close); client feedback reaches
    both.
    `settings.prompt_optimizer` (the default) runs the `PromptOptimizer` on each request that
    opts in (`metadata["optimize_prompt"]` = "1"/"true"/"on"); off, the opt-in is ignored.
    `memory` (an `AgentMemory`) keeps the learned router's state: restored here, saved while
    the pipeline runs (every `settings.router_save_interval_s` that learned something, or
    after `settings.router_save_every` updates, in a worker thread) and when it closes. The
    bridge is `pipeline.intelligence` (fleet task outcomes reach it through `task_outcome`).
    """
    config = config if config is not None else PipelineConfig()
    if settings.prices_file is not None:
        config = dataclasses.replace(config, price_table_path=Path(settings.prices_file))
    if settings.max_spend_usd is not None:
        config = dataclasses.replace(config, global_budget_usd=settings.max_spend_usd)
    if settings.log_prompts:
        config = dataclasses.replace(config, log_prompts=True)
    chain = (settings.provider, *settings.fallback)
    config = dataclasses.replace(config, fallback_order=chain)
    workers = []
    for provider in chain:
        spec = PROVIDER_SPECS[provider]
        model = settings.model if provider == settings.provider else None
        workers.append(spec.build(settings, model or spec.default_model()))
    live = live if live is not None else LiveConfig(config.tunables)
    bridge = None
    if settings.semantic_dedup or settings.learned_routing:
        # Light imports: the model, FAISS and the verifier load on first use, off the loop.
        from intelligence.bridge import IntelligenceBridge

        tunables = live
        bridge = IntelligenceBridge(
            [w.name for w in workers],
            learned_routing=settings.learned_routing and router is None,
            semantic_dedup=settings.semantic_dedup and not dedup_hooks,
            threshold=lambda: tunables.current.semantic_dedup_threshold,
            semantic_dedup_max_wait_s=settings.semantic_dedup_max_wait_ms / 1000,
            semantic_dedup_path=settings.semantic_dedup_path,
            store=memory,
            save_interval_s=settings.router_save_interval_s,
            save_every=settings.router_save_every,
        )
        router = router if router is not None else bridge.router_seam
        dedup_hooks = (*dedup_hooks, *bridge.dedup_hooks)
        quality_hooks = (*quality_hooks, *bridge.quality_hooks)
    rewriters = []
    if settings.prompt_optimizer:
        from intelligence.optimize import PromptRewriter

        rewriters.append(PromptRewriter())
    pipeline = Pipeline(
        config,
        *workers,
        rewriters=rewriters,
        live=live,
        cache=cache,
        quality_hooks=quality_hooks,
        dedup_hooks=dedup_hooks,
        router=router,
    )
    if bridge is not None:
        bridge.attach(pipeline)
        pipeline.intelligence = bridge
    return pipeline
