"""The fleet's own LLM traffic goes through the orchestrator the coordinator starts."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
from fakes import FakeAnthropic

from coordinator.queue import FolderQueue
from coordinator.task import TaskState

AGENT = Path(__file__).with_name("anthropic_agent.py")
SECRET = "sk-ant-test-upstream-secret-0123456789"


async def _orchestrator_url(stderr: asyncio.StreamReader) -> str:
    while True:
        line = (await asyncio.wait_for(stderr.readline(), 60)).decode()
        assert line, "the coordinator exited before its orchestrator served"
        if line.startswith("orchestrator: serving on "):
            return line.split()[3]


async def _wait_for_status(url: str, condition) -> dict:
    """Poll /v1/status until `condition(status)` holds (another process brings it about)."""
    async with httpx.AsyncClient() as client:
        for _ in range(3000):
            status = (await client.get(f"{url}/v1/status")).json()
            if condition(status):
                return status
            await asyncio.sleep(0.01)
    raise AssertionError(f"status never matched; last: {status}")


async def test_identical_concurrent_calls_from_several_agents_reach_the_upstream_once(tmp_path):
    """Six agents, two distinct prompts, all calls in flight together: two upstream calls."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i in range(6):
        prompt = "Summarise the queue module" if i % 2 else "Explain the lease design"
        (folder / f"t{i}.toml").write_text(f'prompt = "{prompt}"\n')
    env = {**os.environ, "PROVIDER": "anthropic", "ANTHROPIC_API_KEY": SECRET,
           "ANTHROPIC_UPSTREAM_URL": "", "PORT": "0", "LOG_LEVEL": "DEBUG"}
    async with FakeAnthropic(reply="the answer") as upstream:
        env["ANTHROPIC_UPSTREAM_URL"] = upstream.url
        upstream.hold()  # every upstream call waits until all six agents have asked
        coordinator = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "coordinator.cli", "run", "--tasks", str(folder),
            "--agents", "6", "--agent", f"{sys.executable} {AGENT}", "--until-empty",
            "--no-memory", "--orchestrator", "start",
            cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE,
        )
        url = await _orchestrator_url(coordinator.stderr)
        status = await _wait_for_status(url, lambda s: s["requests_total"] == 6)
        assert upstream.request_count == 2
        assert status["fleet"]["running"] == 6  # the dashboards' name for claimed
        upstream.release()
        rest = (await coordinator.stderr.read()).decode()
        assert await coordinator.wait() == 0, rest

    assert upstream.request_count == 2
    queue = FolderQueue(folder)
    for i in range(6):
        assert queue.get(f"t{i}").state == TaskState.DONE
        assert queue.log_path(f"t{i}", 1).read_text() == "key: via-orchestrator\nthe answer\n"
    # The provider key stays with the orchestrator: agents never see it, nor do the logs.
    assert SECRET not in rest
    for log in (folder / "logs").rglob("*"):
        assert not log.is_file() or SECRET not in log.read_text()
