"""`orchestrator serve --db URL`: the agent memory keeps the learned router's state across a
restart of the server, and `--self-tune` writes its parameter changes (with their reasons)
there, not only in its status."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fakeclock import FakeClock
from processes import ends_within
from served import free_port, wait_until_serving

from memory_db import AgentMemory
from orchestrator.cli import build_parser
from orchestrator.request import InferenceRequest
from orchestrator.server.runner import ServerThread, build_app
from orchestrator.settings import ServerSettings

REPO = Path(__file__).resolve().parents[3]

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


def _learned_total(url: str) -> int:
    routing = httpx.get(url + "/v1/status", timeout=10).json()["routing"]
    return sum(arm["updates_total"] for arm in routing["arms"])


def _saved_total(memory: AgentMemory) -> int:
    state = memory.load_learner_state("router")
    if state is None:
        return 0
    return next(book["step"] for book in state["books"] if book["context"] is None)


def test_a_killed_server_keeps_what_its_router_learned(tmp_path: Path) -> None:
    """`orchestrator serve --db URL` saves the learned router's state while it serves: after a
    SIGKILL (no close, no final save) a restarted server restores what the traffic taught."""
    db = f"sqlite:///{tmp_path / 'memory.db'}"
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "LOG_LEVEL": "WARNING",
        "FALLBACK": "llamacpp",
        "LLAMA_CPP_URL": "http://127.0.0.1:9",
        "SEMANTIC_DEDUP": "0",
        "ROUTER_SAVE_INTERVAL_S": "0.05",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo",
         "--port", str(port), "--db", db],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        for i in range(12):
            answer = httpx.post(url + "/v1/prompt", json={"input": f"teach the router {i}"},
                                timeout=30)
            assert answer.status_code == 200, answer.text
        learned = _learned_total(url)
        assert learned >= 12
        with AgentMemory(db) as memory:
            deadline = time.monotonic() + 30
            while _saved_total(memory) != learned:  # the periodic save, not a close
                assert time.monotonic() < deadline, (_saved_total(memory), learned)
                time.sleep(0.05)  # polling the database for the save, not waiting for time
        process.kill()
        assert ends_within(process.pid)
    finally:
        process.kill()
        process.wait(timeout=30)
    with AgentMemory(db) as memory:
        restarted, _ = build_app(SETTINGS, memory=memory)
        restored = _estimates(restarted)
    assert sum(updates for _, updates in restored.values()) == learned
    assert restored["echo"][1] > 0
