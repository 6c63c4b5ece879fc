"""The real agent CLIs through the gateway: Claude Code (`claude --print`) and Codex
(`codex exec`), as `make agent-clis` installs them from npm (pinned in the Makefile), each
pointed at our server, whose provider talks to a fake upstream on 127.0.0.1.

Each test asserts that the CLI's request reached the upstream (with the server's provider key,
never the agent's), that the upstream's answer came back out of the CLI, and that the call was
billed. A test is skipped, saying how to install it, only when its CLI is absent.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
from fakes import FakeAnthropic, FakeOpenAI, ReceivedRequest

from coordinator.agents import BUILTIN_PROFILES
from coordinator.queue import FolderQueue
from coordinator.task import TaskState
from coordinator.traffic import agent_env, agent_headers
from orchestrator import (
    AnthropicWorker,
    EchoWorker,
    InferenceRequest,
    OpenAIWorker,
    Pipeline,
    PipelineConfig,
)
from orchestrator.request import TASK_ID
from orchestrator.server import ServerTask, create_app

BIN = Path(__file__).resolve().parents[2] / ".agent-clis" / "node_modules" / ".bin"
ANTHROPIC_KEY = "sk-ant-upstream-canary-4f1d2c9e7b"
OPENAI_KEY = "sk-openai-upstream-canary-8a3e6d0f5c"
CLI_TIMEOUT_S = 180


def _cli(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {BIN.parent.parent}: run `make agent-clis`")
    return path


def _key_of(request: ReceivedRequest) -> str:
    """The API key an upstream request carried (`x-api-key`, or a bearer token)."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return request.headers.get("x-api-key") or bearer


def _isolated_env(home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: PATH (with the CLIs), a fresh HOME, and `extra`; no user config,
    no telemetry, no real key from the test runner's own environment."""
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_COLOR": "1",
        **extra,
    }


async def _run(command: str, *, env: Mapping[str, str], cwd: Path, stdin: str = "") -> str:
    """Run `command` through the shell, as the fleet runs an agent; its stdout, or a failure
    with everything it printed."""
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), CLI_TIMEOUT_S)
    except TimeoutError:
        os.killpg(process.pid, 9)
        await process.wait()
        raise
    assert process.returncode == 0, f"{command} exited {process.returncode}:\n{out!r}\n{err!r}"
    return out.decode()


@pytest.fixture
async def anthropic_gateway() -> AsyncIterator[tuple[FakeAnthropic, Pipeline, str]]:
    async with FakeAnthropic(reply="Hello from the fake upstream.") as upstream:
        worker = AnthropicWorker(ANTHROPIC_KEY, base_url=upstream.url)
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            yield upstream, pipeline, url


@pytest.fixture
async def openai_gateway() -> AsyncIterator[tuple[FakeOpenAI, Pipeline, str]]:
    async with FakeOpenAI(reply="Hello from the fake upstream.") as upstream:
        worker = OpenAIWorker(OPENAI_KEY, base_url=upstream.api_url)
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            yield upstream, pipeline, url


async def test_claude_code_print_mode_answers_through_the_gateway_with_a_tool_round_trip(
    anthropic_gateway: tuple[FakeAnthropic, Pipeline, str], tmp_path: Path
) -> None:
    """A default `claude --print` run (its own system-role messages, tools, betas): the fake
    answers with a tool_use, Claude Code sends the tool_result back, the fake's text answer
    comes out of the CLI; every upstream call carried the server's key and was billed."""
    upstream, pipeline, url = anthropic_gateway
    claude = _cli("claude")
    env = _isolated_env(tmp_path / "home", agent_env(url))
    out = await _run(f"{claude} --print --output-format text 'Say hello.'", env=env, cwd=tmp_path)
    assert "Hello from the fake upstream." in out
    messages = [r for r in upstream.requests if r.path == "/v1/messages"]
    assert len(messages) >= 2, [r.path for r in upstream.requests]
    assert all(_key_of(r) == ANTHROPIC_KEY for r in upstream.requests)
    answered = messages[-1].body["messages"][-1]["content"]
    assert any(block.get("type") == "tool_result" for block in answered)  # the round trip
    snapshot = pipeline.snapshot()
    assert snapshot.cost_usd_total > 0 and not snapshot.unpriced_models
    assert ANTHROPIC_KEY not in out


async def test_codex_exec_answers_through_the_gateway_natively(
    openai_gateway: tuple[FakeOpenAI, Pipeline, str], tmp_path: Path
) -> None:
    """The built-in `codex` profile: `codex exec` opens the Responses API's WebSocket mode on
    our server (one socket, no HTTP fallback), which forwards its body natively to the OpenAI
    upstream over HTTP, the whole conversation in it; the answer comes out, billed."""
    upstream, pipeline, url = openai_gateway
    _cli("codex")
    env = _isolated_env(tmp_path / "home", agent_env(url))
    command = BUILTIN_PROFILES["codex"].render(prompt="Say hello.", task_id="t1")
    out = await _run(command, env=env, cwd=tmp_path, stdin="Say hello.")
    assert "Hello from the fake upstream." in out
    calls = [r for r in upstream.requests if r.path == "/v1/responses"]
    assert calls, [r.path for r in upstream.requests]
    assert all(r.headers["authorization"] == f"Bearer {OPENAI_KEY}" for r in calls)
    user_texts = [
        part.get("text")
        for item in calls[0].body["input"]
        if isinstance(item, dict) and item.get("role") == "user"
        for part in item.get("content") or ()
        if isinstance(part, dict)
    ]
    assert "Say hello." in "".join(t for t in user_texts if t)
    assert all("previous_response_id" not in r.body for r in calls)
    snapshot = pipeline.snapshot()
    assert snapshot.cost_usd_total > 0 and not snapshot.unpriced_models
    assert await _responses_route(url) == {"101": 1}  # the socket, and no POST


async def test_codex_names_its_agent_and_task_to_the_gateway(tmp_path: Path) -> None:
    """The `codex` profile in a fleet attempt's environment (`agent_headers`, the task id):
    each Codex call reaches the pipeline labelled with its agent (the usage ledger's client)
    and its task (what the intelligence layer credits the task's outcome to), on the
    WebSocket mode still."""
    _cli("codex")
    seen: list[tuple[str | None, str | None]] = []

    def record(request: InferenceRequest, response: object) -> None:
        seen.append((request.client, request.metadata.get(TASK_ID)))

    pipeline = Pipeline(PipelineConfig(), EchoWorker(), quality_hooks=[record])
    async with ServerTask(create_app(pipeline)) as url:
        attempt = {"COORDINATOR_TASK_ID": "fix-7"}
        extra = {**agent_env(url), **attempt, **agent_headers("agent-2@4711", attempt)}
        env = _isolated_env(tmp_path / "home", extra)
        command = BUILTIN_PROFILES["codex"].render(prompt="", task_id="fix-7")
        out = await _run(command, env=env, cwd=tmp_path, stdin="ping pong")
        assert await _responses_route(url) == {"101": 1}
    assert "ping pong" in out
    assert seen and set(seen) == {("agent-2", "fix-7")}, seen


async def test_codex_exec_answers_offline_through_the_echo_provider(tmp_path: Path) -> None:
    """With only the echo provider, Codex's Responses body is translated to text: `codex
    exec`, over the WebSocket mode (its warm-up first, then its turn), prints the echo of its
    prompt and exits 0."""
    _cli("codex")
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    async with ServerTask(create_app(pipeline)) as url:
        env = _isolated_env(tmp_path / "home", agent_env(url))
        command = BUILTIN_PROFILES["codex"].render(prompt="", task_id="t1")
        out = await _run(command, env=env, cwd=tmp_path, stdin="ping pong")
        assert await _responses_route(url) == {"101": 1}
    assert "ping pong" in out
    assert pipeline.snapshot().requests_total >= 1


async def _responses_route(url: str) -> dict[str, int]:
    """How the server answered `/v1/responses`, by status, once the CLI's socket is counted
    (a socket is counted when it closes, which the server may see after the CLI exits)."""
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        while True:
            status = (await client.get(f"{url}/v1/status")).json()
            route: dict[str, int] = status["http_requests"]["by_route"].get("/v1/responses", {})
            if "101" in route or "200" in route:
                return route
            await asyncio.sleep(0.02)  # the close is on its way: the CLI has exited


async def test_a_two_task_claude_fleet_through_an_embedded_orchestrator_ends_done_and_billed(
    tmp_path: Path,
) -> None:
    """`coordinator run --agent claude --orchestrator start` with two tasks: both end done,
    the upstream saw the agents' calls with the real key, the agents only the placeholder,
    and the orchestrator billed them."""
    _cli("claude")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "a.toml").write_text('prompt = "Say hello."\n')
    (folder / "b.toml").write_text('prompt = "Say goodbye."\n')
    async with FakeAnthropic(reply="Hello from the fake upstream.") as upstream:
        env = _isolated_env(
            tmp_path / "home",
            {
                "PROVIDER": "anthropic",
                "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                "ANTHROPIC_UPSTREAM_URL": upstream.url,
                "PORT": "0",
            },
        )
        coordinator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coordinator.cli",
            "run",
            "--tasks",
            str(folder),
            "--agents",
            "2",
            "--agent",
            "claude",
            "--until-empty",
            "--no-memory",
            "--orchestrator",
            "start",
            cwd=tmp_path,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        assert coordinator.stderr is not None
        url = await _orchestrator_url(coordinator.stderr)
        seen: list[float] = [0.0]
        costs = asyncio.create_task(_watch_cost(url, seen))
        try:
            rest = (await asyncio.wait_for(coordinator.stderr.read(), CLI_TIMEOUT_S * 2)).decode()
            assert await coordinator.wait() == 0, rest
        finally:
            costs.cancel()
        await asyncio.gather(costs, return_exceptions=True)
    queue = FolderQueue(folder)
    assert queue.get("a").state == TaskState.DONE and queue.get("b").state == TaskState.DONE
    assert "Hello from the fake upstream." in queue.log_path("a", 1).read_text()
    messages = [r for r in upstream.requests if r.path == "/v1/messages"]
    assert len(messages) >= 4  # each agent: the tool_use turn and the tool_result turn
    assert all(_key_of(r) == ANTHROPIC_KEY for r in upstream.requests)
    assert max(seen) > 0
    assert ANTHROPIC_KEY not in rest
    for log in (folder / "logs").rglob("*"):
        assert not log.is_file() or ANTHROPIC_KEY not in log.read_text()


async def _orchestrator_url(stderr: asyncio.StreamReader) -> str:
    while True:
        line = (await asyncio.wait_for(stderr.readline(), 60)).decode()
        assert line, "the coordinator exited before its orchestrator served"
        if line.startswith("orchestrator: serving on "):
            return line.split()[3]


async def _watch_cost(url: str, seen: list[float]) -> None:
    """Append the orchestrator's billed total to `seen` while it serves (it goes when the
    run ends)."""
    async with httpx.AsyncClient() as client:
        while True:
            try:
                status = (await client.get(f"{url}/v1/status")).json()
            except httpx.HTTPError:
                return
            seen.append(float(status.get("cost_usd_total") or 0.0))
            await asyncio.sleep(0.05)
