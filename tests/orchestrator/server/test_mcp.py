"""The MCP server, through a real `mcp` client session: over streamable HTTP against a running
server (uvicorn on a real socket) and over stdio against `orchestrator mcp --provider echo`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fakeclock import FakeClock
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from orchestrator import EchoWorker, Pipeline, PipelineConfig
from orchestrator.server import mcp as mcp_module
from orchestrator.server.app import create_app
from orchestrator.server.mcp import create_mcp_server
from orchestrator.server.runner import ServerTask
from orchestrator.settings import ServerSettings

TOOLS = {"infer", "batch_infer", "pipeline_status", "configure_pipeline", "feedback"}
REPO = Path(__file__).resolve().parents[3]


def structured(result: Any) -> dict[str, Any]:
    """The structured content of a successful tool result."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def error_text(result: Any) -> str:
    """The message of a tool error."""
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    """A real server (create_app over an echo pipeline) listening on a free loopback port."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    app = create_app(pipeline, settings=ServerSettings(provider="echo", port=0))
    async with ServerTask(app) as url:
        yield url + "/mcp"


def test_public_surface() -> None:
    """The module exports exactly its documented names."""
    assert sorted(mcp_module.__all__) == sorted(
        [
            "MAX_BATCH",
            "MAX_TOKENS",
            "BatchItem",
            "BatchResult",
            "ConfigChange",
            "ConfigureResult",
            "FeedbackResult",
            "InferResult",
            "create_mcp_server",
            "mount_mcp",
            "serve_stdio",
        ]
    )


async def test_http_lists_the_five_tools(http_url: str) -> None:
    """Over streamable HTTP at /mcp the server lists infer, batch_infer, pipeline_status,
    configure_pipeline and feedback, each with an input schema."""
    async with Client(http_url) as client:
        tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    infer = next(t for t in tools if t.name == "infer")
    assert infer.input_schema["required"] == ["prompt"]
    assert set(infer.input_schema["properties"]) >= {"prompt", "system", "model", "priority"}


async def test_http_infer_answers_through_the_pipeline(http_url: str) -> None:
    """`infer` returns the text with provider, model, usage, cost, and dedup/cache flags."""
    async with Client(http_url) as client:
        answer = structured(
            await client.call_tool(
                "infer", {"prompt": "hello over mcp", "session_id": "s1", "priority": "high"}
            )
        )
        again = structured(await client.call_tool("infer", {"prompt": "hello over mcp"}))
    assert answer["text"] == "hello over mcp"
    assert answer["provider"] == "echo"
    assert answer["model"] == "echo"
    assert answer["input_tokens"] > 0 and answer["output_tokens"] > 0
    assert answer["cost_usd"] == 0.0
    assert answer["deduped"] is False and answer["cached"] is False
    assert again["cached"] is True


async def test_http_batch_infer_answers_every_prompt_in_order(http_url: str) -> None:
    """`batch_infer` answers each prompt, in the order given."""
    prompts = ["alpha", "beta", "gamma", "alpha"]
    async with Client(http_url) as client:
        batch = structured(await client.call_tool("batch_infer", {"prompts": prompts}))
    assert batch["answered"] == 4 and batch["failed"] == 0
    assert [item["result"]["text"] for item in batch["items"]] == prompts
    assert [item["index"] for item in batch["items"]] == [0, 1, 2, 3]


async def test_http_batch_infer_reports_an_empty_prompt_as_its_own_error(http_url: str) -> None:
    """One empty prompt fails its own item only; the others are answered."""
    async with Client(http_url) as client:
        batch = structured(await client.call_tool("batch_infer", {"prompts": ["a", " ", "c"]}))
    assert batch["answered"] == 2 and batch["failed"] == 1
    items = batch["items"]
    assert [items[0]["result"]["text"], items[2]["result"]["text"]] == ["a", "c"]
    assert items[1]["result"] is None and "prompt must not be empty" in items[1]["error"]


async def test_http_pipeline_status_shows_live_measurements(http_url: str) -> None:
    """`pipeline_status` is the live snapshot: stages, latencies, counts, and the live config."""
    async with Client(http_url) as client:
        await client.call_tool("infer", {"prompt": "count me"})
        status = structured(await client.call_tool("pipeline_status", {}))
    assert [s["name"] for s in status["stages"]] == [
        "rag",
        "assemble",
        "inference",
        "postprocess",
        "stream",
    ]
    assert status["completed_total"] >= 1
    assert status["latency_p50_ms"] > 0
    assert all(
        {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"} <= set(s) for s in status["stages"]
    )
    assert {"latency_p95_ms", "latency_p99_ms", "throughput_rps"} <= set(status)
    assert status["providers"][0]["name"] == "echo"
    assert status["live_config"]["inference_concurrency"] == 64


async def test_pipeline_status_carries_live_per_stage_latencies(clock: FakeClock) -> None:
    """Each stage in `pipeline_status` reports how long requests spent in it: with a provider
    taking 50 ms (on a fake clock), the inference stage shows 50 ms and the others none."""
    worker = EchoWorker(latency_s=0.05, sleep=clock.sleep)
    pipeline = Pipeline(PipelineConfig(), worker, clock=clock)
    async with pipeline, Client(create_mcp_server(pipeline)) as client:
        for prompt in ("one", "two", "three"):  # one at a time: the fake clock is shared
            await client.call_tool("infer", {"prompt": prompt})
        status = structured(await client.call_tool("pipeline_status", {}))
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["inference"]["latency_p50_ms"] == pytest.approx(50.0)
    assert stages["inference"]["latency_p99_ms"] == pytest.approx(50.0)
    for name in ("rag", "assemble", "postprocess", "stream"):
        assert stages[name]["latency_p50_ms"] == 0.0
    assert status["latency_p50_ms"] == pytest.approx(50.0)


async def test_http_configure_pipeline_changes_the_live_config(http_url: str) -> None:
    """`configure_pipeline` returns exactly what changed, old -> new, and the pipeline's live
    values (read back through `pipeline_status`) really are the new ones."""
    async with Client(http_url) as client:
        result = structured(
            await client.call_tool(
                "configure_pipeline",
                {
                    "changes": {
                        "inference_concurrency": 8,
                        "cache_ttl_s": 12.5,
                        "retry_max_attempts": 3,
                    }
                },
            )
        )
        status = structured(await client.call_tool("pipeline_status", {}))
    assert result["changed"] == {
        "inference_concurrency": {"old": 64, "new": 8},
        "cache_ttl_s": {"old": 300.0, "new": 12.5},
    }
    assert result["version"] == 1
    assert status["live_config"]["inference_concurrency"] == 8
    assert status["inference_concurrency"] == 8
    assert status["live_config"]["cache_ttl_s"] == 12.5
    assert status["live_config_version"] == 1


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("configure_pipeline", {"changes": {"inference_concurrency": 0}}, "must be an integer"),
        ("configure_pipeline", {"changes": {"warp_speed": 9}}, "unknown tunable(s): warp_speed"),
        ("configure_pipeline", {"changes": {}}, "changes is empty"),
        ("configure_pipeline", {"changes": {"inference_concurrency": True}}, "changes"),
        ("configure_pipeline", {"changes": {"cache_ttl_s": "60"}}, "changes"),
        ("configure_pipeline", {}, "changes"),
        ("infer", {}, "prompt"),
        ("infer", {"prompt": "   "}, "prompt must not be empty"),
        ("infer", {"prompt": "x", "priority": "urgent"}, "priority"),
        ("infer", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("infer", {"prompt": "x", "max_tokens": 10**30}, "max_tokens"),
        ("batch_infer", {"prompts": ["x"], "max_tokens": 10**30}, "max_tokens"),
        ("batch_infer", {"prompts": []}, "prompts"),
        ("batch_infer", {"prompts": ["x"] * 65}, "prompts"),
        ("no_such_tool", {}, "no_such_tool"),
    ],
)
async def test_http_bad_arguments_are_tool_errors(
    http_url: str, tool: str, arguments: dict[str, Any], message: str
) -> None:
    """Bad arguments give a tool error naming the problem; the server keeps serving."""
    async with Client(http_url) as client:
        result = await client.call_tool(tool, arguments)
        assert message in error_text(result)
        after = structured(await client.call_tool("infer", {"prompt": "still here"}))
    assert after["text"] == "still here"


async def test_http_feedback_rates_an_answer_and_moves_the_stale_rate(http_url: str) -> None:
    """`feedback` records a verdict by the request_id `infer` returned, attributed to what
    answered; a stale verdict on a cached answer moves `feedback.stale_rate` in the status."""
    async with Client(http_url) as client:
        fresh = structured(await client.call_tool("infer", {"prompt": "rate me"}))
        cached = structured(await client.call_tool("infer", {"prompt": "rate me"}))
        good = structured(
            await client.call_tool("feedback", {"request_id": fresh["request_id"], "correct": True})
        )
        stale = structured(
            await client.call_tool(
                "feedback", {"request_id": cached["request_id"], "stale": True, "comment": "old"}
            )
        )
        unknown = structured(
            await client.call_tool("feedback", {"request_id": "req_nobody", "score": -0.5})
        )
        status = structured(await client.call_tool("pipeline_status", {}))
    assert cached["cached"] is True
    assert good == {
        "request_id": fresh["request_id"],
        "score": 1.0,
        "stale": False,
        "attributed": True,
        "provider": "echo",
        "model": "echo",
        "cached": False,
    }
    assert stale["stale"] is True and stale["score"] == 0.0 and stale["cached"] is True
    assert unknown["attributed"] is False and unknown["provider"] is None
    assert unknown["score"] == -0.5
    feedback = status["feedback"]
    assert feedback["received_total"] == 3 and feedback["attributed_total"] == 2
    assert feedback["stale_total"] == 1 and feedback["stale_rate"] == 1.0
    assert status["feedback_total"] == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"request_id": "r"}, "give correct (true or false), a score in [-1, 1], or stale"),
        ({"request_id": "r", "correct": True, "score": 1}, "not both"),
        ({"request_id": "r", "score": 2}, "score"),
        ({"request_id": "", "correct": True}, "request_id"),
    ],
)
async def test_http_bad_feedback_is_a_tool_error_and_records_nothing(
    http_url: str, arguments: dict[str, Any], message: str
) -> None:
    async with Client(http_url) as client:
        result = await client.call_tool("feedback", arguments)
        status = structured(await client.call_tool("pipeline_status", {}))
    assert message in error_text(result)
    assert status["feedback_total"] == 0


async def test_a_refused_configuration_changes_nothing(http_url: str) -> None:
    """A change list with one bad value applies none of its values."""
    async with Client(http_url) as client:
        result = await client.call_tool(
            "configure_pipeline", {"changes": {"inference_concurrency": 4, "shed_threshold": 2}}
        )
        status = structured(await client.call_tool("pipeline_status", {}))
    assert "shed_threshold must be a finite number in [0.05, 1]" in error_text(result)
    assert status["live_config"]["inference_concurrency"] == 64
    assert status["live_config_version"] == 0


async def test_stdio_server_serves_every_tool(tmp_path: Path) -> None:
    """`orchestrator mcp --provider echo` speaks MCP over stdio: list tools, call each, and the
    configured value reads back changed; a bad call is a tool error, not a crash."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "LOG_FORMAT": "json",
    }
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator.cli", "mcp", "--provider", "echo"],
        env=env,
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        answer = structured(await client.call_tool("infer", {"prompt": "over stdio"}))
        batch = structured(await client.call_tool("batch_infer", {"prompts": ["a", "b"]}))
        changed = structured(
            await client.call_tool("configure_pipeline", {"changes": {"shed_threshold": 0.5}})
        )
        bad = await client.call_tool("configure_pipeline", {"changes": {"shed_threshold": -1}})
        rated = structured(
            await client.call_tool("feedback", {"request_id": answer["request_id"], "stale": True})
        )
        status = structured(await client.call_tool("pipeline_status", {}))
    assert answer["text"] == "over stdio" and answer["provider"] == "echo"
    assert [item["result"]["text"] for item in batch["items"]] == ["a", "b"]
    assert changed["changed"] == {"shed_threshold": {"old": 0.9, "new": 0.5}}
    assert "shed_threshold" in error_text(bad)
    assert status["live_config"]["shed_threshold"] == 0.5
    assert status["completed_total"] == 3
    assert rated["attributed"] is True and status["feedback"]["stale_total"] == 1
    json.dumps(status)  # plain JSON all the way down


async def test_http_mcp_needs_the_token_when_the_server_has_one() -> None:
    """With API_KEY set, /mcp refuses a client without the token (401) and serves one with it."""
    token = "mcp-test-token-0123456789"
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    app = create_app(pipeline, settings=ServerSettings(provider="echo", api_key=token))
    async with ServerTask(app) as url:
        async with httpx.AsyncClient() as plain:
            refused = await plain.post(
                url + "/mcp", json={}, headers={"accept": "application/json, text/event-stream"}
            )
        http_client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        async with (
            http_client,
            Client(streamable_http_client(url + "/mcp", http_client=http_client)) as client,
        ):
            answer = structured(await client.call_tool("infer", {"prompt": "with a token"}))
    assert refused.status_code == 401
    assert answer["text"] == "with a token"


async def test_http_mcp_calls_are_counted_under_the_agent_that_names_itself() -> None:
    """`infer` and `batch_infer` over HTTP count in the usage ledger under the caller's
    `x-orchestrator-agent` header (its role without one); never under its token."""
    token = "mcp-usage-token-0123456789"
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    app = create_app(pipeline, settings=ServerSettings(provider="echo", api_key=token))
    async with ServerTask(app) as url:
        for headers in ({"x-orchestrator-agent": "mcp-agent"}, {}):
            http_client = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {token}", **headers}
            )
            async with (
                http_client,
                Client(streamable_http_client(url + "/mcp", http_client=http_client)) as client,
            ):
                name = headers.get("x-orchestrator-agent", "role")
                structured(await client.call_tool("infer", {"prompt": f"one {name}"}))
                structured(await client.call_tool("batch_infer", {"prompts": [f"two {name}"]}))
    clients = pipeline.usage.to_dict()["by_client"]
    # One token (API_KEY, no ADMIN_API_KEY) is the admin token too: its role is `admin`.
    assert {name: c["requests"] for name, c in clients.items()} == {"mcp-agent": 2, "admin": 2}
