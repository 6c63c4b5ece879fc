"""`orchestrator serve --db URL`: the agent memory keeps the learned router's state across a
restart of the server, and `--self-tune` writes its parameter changes (with their reasons)
there, not only in its status."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fakeclock import FakeClock

from memory_db import AgentMemory
from orchestrator.cli import build_parser
from orchestrator.request import InferenceRequest
from orchestrator.server.runner import ServerThread, build_app
from orchestrator.settings import ServerSettings

# Two providers, so the learned router has something to choose; llama.cpp is never called.
SETTINGS = ServerSettings(provider="echo", fallback=("llamacpp",), semantic_dedup=False,
                          llama_cpp_url="http://127.0.0.1:9")


def _estimates(app) -> dict[str, tuple[float, int]]:  # type: ignore[no-untyped-def]
    router = app.state.orchestrator.pipeline.intelligence.router
    return {e.arm: (round(e.mean_reward, 6), e.updates_total) for e in router.estimates(None)}


def test_a_restart_keeps_the_learned_routers_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with AgentMemory(url) as memory:
        app, tuning = build_app(SETTINGS, memory=memory)
        assert tuning is None
        router = app.state.orchestrator.pipeline.intelligence.router
        with ServerThread(app):
            for _ in range(5):
                router.update("llamacpp", 0.1)
                router.update("echo", 0.9)
        learned = _estimates(app)
        assert learned["echo"][1] == 5 and learned["llamacpp"][1] == 5
    with AgentMemory(url) as memory:  # a new process: a new memory, a new app
        restarted, _ = build_app(SETTINGS, memory=memory)
        assert _estimates(restarted) == learned
    fresh, _ = build_app(SETTINGS)  # without --db nothing is restored
    assert all(updates == 0 for _, updates in _estimates(fresh).values())


def test_self_tune_changes_are_recorded_in_the_memory(tmp_path: Path) -> None:
    settings = ServerSettings(provider="echo", semantic_dedup=False)
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        clock = FakeClock()
        app, tuning = build_app(settings, memory=memory, self_tune_interval_s=1.0,
                                clock=clock, monotonic=clock)
        pipeline = app.state.orchestrator.pipeline

        async def drive() -> None:
            async with pipeline:
                for round_ in range(6):
                    for i in range(10):
                        await pipeline.infer(InferenceRequest(prompt=f"request {round_}.{i}"))
                    clock.advance(1.0)
                    tuning.tick()

        asyncio.run(drive())
        recorded = [m for m in memory.modifications() if m.description.startswith("self_tune")]
        assert recorded
        # "self_tune tuned: <parameter> <old> -> <new>: <reason>", newest first; the newest
        # is the value the live config holds now.
        newest = recorded[0].description
        assert newest.startswith("self_tune tuned: ") and newest.count(": ") >= 2
        head = newest.split(": ")[1]
        parameter, new = head.split()[0], head.split(" -> ")[1]
        assert float(getattr(pipeline.live.current, parameter)) == float(new)


def test_serve_takes_db() -> None:
    args = build_parser().parse_args(["serve", "--db", "sqlite:///m.db", "--self-tune"])
    assert args.db == "sqlite:///m.db" and args.self_tune
