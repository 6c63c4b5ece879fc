"""The web dashboard in a real headless Chromium, over a real server and a real pipeline.

The pipeline's EchoWorker waits on a gate instead of a timer, so the test decides when the
requests it sent are answered; every wait is on a condition of the page, never on time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fakeclock import FakeClock
from fastapi import FastAPI
from playwright.async_api import Browser, Page, async_playwright

from intelligence import LearnedRouter, LearnedRouting, LexicalEmbedder, SemanticDedup
from intelligence.semantic_hook import SemanticDedupHook
from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app
from orchestrator.server.dashboard import mount_dashboard
from self_tune.live import LocalConfig
from self_tune.service import SelfTuning
from self_tune.sources import PipelineSource

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"
)


@dataclass
class Site:
    """A running server with the dashboard, its pipeline, and the gate the worker waits on."""

    url: str
    pipeline: Pipeline
    gate: asyncio.Event
    fleet: dict[str, Any]
    tuning: SelfTuning | None
    clock: FakeClock
    server: uvicorn.Server
    serving: asyncio.Task[None]

    async def stop(self) -> None:
        """Shut the server down as uvicorn does on Ctrl-C, and wait until it has."""
        self.server.should_exit = True
        await self.serving


@pytest.fixture
async def site(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    """A server with the dashboard. An `indirect` param may say `{"fleet": False}` (attach no
    fleet), `{"tuning": True}` (a tuning loop the test drives), `{"learned": True}` (the
    learned router and semantic dedup), `{"fake_clock": True}` (the pipeline on the site's
    clock) or give `stream_s` (how long each event stream lasts)."""
    options = getattr(request, "param", {})
    with_fleet = options.get("fleet", True)
    gate = asyncio.Event()

    async def wait_for_gate(_latency_s: float) -> None:
        await gate.wait()

    fleet: dict[str, Any] = {"pending": 4, "running": 0, "done": 0, "failed": 0}
    learned: dict[str, Any] = {}
    if options.get("learned"):  # the learned router and semantic dedup (lexical: no torch)
        learned["router"] = LearnedRouting(LearnedRouter(["echo"], seed=3))
        learned["dedup_hooks"] = [
            SemanticDedupHook(SemanticDedup(LexicalEmbedder(), verify=False))
        ]
    clock = FakeClock()
    if options.get("fake_clock"):
        learned["clock"] = clock
    pipeline = Pipeline(
        PipelineConfig(), EchoWorker(latency_s=1.0, sleep=wait_for_gate), **learned
    )
    app = FastAPI()
    fleet_status = (lambda: fleet) if with_fleet else None
    tuning = SelfTuning([PipelineSource(pipeline.snapshot)], config=LocalConfig(pipeline.live),
                        clock=clock, monotonic=clock) if options.get("tuning") else None
    timings = {"interval_s": 0.1} | {k: v for k, v in options.items() if k == "stream_s"}
    mount_dashboard(app, pipeline, fleet_status=fleet_status,
                    self_tune_status=tuning.status if tuning else None, **timings)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # A socket that already listens: the browser's connection waits in its backlog until
    # uvicorn accepts it, so nothing has to wait for the server to come up.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    async with pipeline:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        site = Site(f"http://127.0.0.1:{port}", pipeline, gate, fleet, tuning, clock, server,
                    serving)
        try:
            yield site
        finally:
            gate.set()
            await site.stop()
            sock.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser, site: Site) -> AsyncIterator[Page]:
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    await page.goto(f"{site.url}/dashboard")
    try:
        yield page
    finally:
        await page.close()  # ends the event stream before the server shuts down


async def text_becomes(page: Page, selector: str, expected: str) -> None:
    """Wait until the element's text is `expected`."""
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.textContent.trim() === want",
        arg=[selector, expected],
        timeout=10_000,
    )


async def number_exceeds(page: Page, selector: str, floor: float) -> None:
    """Wait until the element shows a number above `floor`."""
    await page.wait_for_function(
        "([sel, floor]) => parseFloat(document.querySelector(sel)?.textContent"
        ".replace(/[^0-9.]/g, '')) > floor",
        arg=[selector, floor],
        timeout=10_000,
    )


async def test_live_numbers_appear_and_follow_real_traffic(site: Site, page: Page) -> None:
    """Requests sent through the pipeline show up as in flight, then as completed, routed to
    the echo provider, with a throughput above zero and a growing chart."""
    await text_becomes(page, "#connection", "live")
    await text_becomes(page, "#requests-total", "0")
    await text_becomes(page, "#in-flight", "0")
    await text_becomes(page, "#breaker-echo .state", "closed")

    calls = [
        asyncio.create_task(site.pipeline.infer(InferenceRequest(f"question {i}")))
        for i in range(5)
    ]
    await text_becomes(page, "#requests-total", "5")
    await text_becomes(page, "#in-flight", "5")
    await text_becomes(page, "#inference-active", "5")
    await text_becomes(page, "#completed-total", "0")

    site.gate.set()
    await asyncio.gather(*calls)
    await text_becomes(page, "#completed-total", "5")
    await text_becomes(page, "#in-flight", "0")
    await text_becomes(page, "#route-echo .calls", "5")
    await text_becomes(page, "#upstream-calls", "5")
    await number_exceeds(page, "#throughput", 0)
    await page.wait_for_function(
        "document.querySelector('#stage-inference .latency').textContent"
        " !== 'p50 0.00 ms · p99 0.00 ms'",
        timeout=10_000,
    )
    points = int(await page.get_attribute("#throughput-chart", "data-points") or 0)
    await page.wait_for_function(
        "n => Number(document.querySelector('#throughput-chart').dataset.points) > n",
        arg=points,
        timeout=10_000,
    )


@pytest.mark.parametrize("site", [{"fake_clock": True}], indirect=True)
async def test_a_page_opened_after_traffic_draws_the_servers_history_at_once(
    site: Site, browser: Browser
) -> None:
    """Traffic served before the page was opened is on its chart from the first update: one
    point per bucket the server kept, and their peak."""
    site.gate.set()
    for bucket in range(6):  # 1, 2, ..., 6 requests in six 5 s buckets
        await asyncio.gather(*(site.pipeline.infer(InferenceRequest(f"q {bucket} {i}"))
                               for i in range(bucket + 1)))
        site.clock.advance(5.0)
    page = await browser.new_page()
    try:
        await page.goto(f"{site.url}/dashboard")
        await text_becomes(page, "#connection", "live")
        points = int(await page.get_attribute("#throughput-chart", "data-points") or 0)
        assert points >= 7  # six kept buckets and the first update's own
        assert await page.text_content("#throughput-peak") == "1.20"  # 6 requests in 5 s
    finally:
        await page.close()


async def test_stage_flow_shows_every_stage_with_its_capacity(site: Site, page: Page) -> None:
    """The stage flow lists the five stages in order, each with its live queue capacity."""
    await text_becomes(page, "#connection", "live")
    capacities = {s.name: s.capacity for s in site.pipeline.snapshot().stages}
    names = await page.eval_on_selector_all(
        "#stages .stage .name", "nodes => nodes.map(n => n.textContent)"
    )
    assert names == ["rag", "assemble", "inference", "postprocess", "stream"]
    for name, capacity in capacities.items():
        await text_becomes(page, f"#stage-{name} .depth", f"0 / {capacity:,}")
        await text_becomes(page, f"#stage-{name} .latency", "p50 0.00 ms · p99 0.00 ms")


async def test_identical_concurrent_requests_show_as_coalesced(site: Site, page: Page) -> None:
    """Three identical requests in flight together count as two dedup hits and one call."""
    await text_becomes(page, "#connection", "live")
    calls = [
        asyncio.create_task(site.pipeline.infer(InferenceRequest("same question")))
        for _ in range(3)
    ]
    await text_becomes(page, "#requests-total", "3")
    site.gate.set()
    await asyncio.gather(*calls)
    await text_becomes(page, "#dedup-hits", "2")
    await text_becomes(page, "#upstream-calls", "1")
    await text_becomes(page, "#calls-saved", "2")


async def test_fleet_panel_follows_the_fleet(site: Site, page: Page) -> None:
    """The fleet's task counts appear and change as the fleet's own numbers change."""
    await text_becomes(page, "#fleet-pending", "4")
    await text_becomes(page, "#fleet-running", "0")
    site.fleet.update(pending=2, running=2)
    await text_becomes(page, "#fleet-pending", "2")
    await text_becomes(page, "#fleet-running", "2")
    assert await page.is_visible("#panel-fleet")


async def test_fleet_panel_lists_running_tasks_with_agent_attempt_and_lease(
    site: Site, page: Page
) -> None:
    """Each running task shows with its agent, its attempt and the time its lease has left;
    a lease that ran out says so; with none running the list says that."""
    await text_becomes(page, "#fleet-pending", "4")
    assert not await page.is_visible("#fleet-running")  # a fleet that reports no list
    site.fleet.update(pending=2, running=2, running_tasks=[
        {"task_id": "fix-login", "agent": "agent-1", "attempt": 2, "lease_expires_at_s": 0.0,
         "lease_remaining_s": 42.4, "lease_s": 60.0},
        {"task_id": "write-docs", "agent": "agent-2", "attempt": 1, "lease_expires_at_s": 0.0,
         "lease_remaining_s": -3.0, "lease_s": 60.0},
    ])
    row = '#fleet-running-tasks tr[data-task="fix-login"]'
    await text_becomes(page, f"{row} .agent", "agent-1")
    await text_becomes(page, f"{row} .attempt", "2")
    await text_becomes(page, f"{row} .lease", "42s")
    await text_becomes(page, '#fleet-running-tasks tr[data-task="write-docs"] .lease', "expired")
    assert await page.is_visible("#fleet-running")
    site.fleet.update(running=0, running_tasks=[])
    await text_becomes(page, "#fleet-running-tasks", "none running")


@pytest.mark.parametrize("site", [{"fleet": False}], indirect=True)
async def test_fleet_panel_is_hidden_without_a_fleet(site: Site, page: Page) -> None:
    """With no fleet attached there is no fleet panel, and the rest is live."""
    await text_becomes(page, "#requests-total", "0")
    assert not await page.is_visible("#panel-fleet")


async def test_the_page_runs_without_script_errors(site: Site, browser: Browser) -> None:
    """Loading the page and following traffic raises no JavaScript error or console error."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        await page.goto(f"{site.url}/dashboard")
        await text_becomes(page, "#connection", "live")
        site.gate.set()
        await site.pipeline.infer(InferenceRequest("one question"))
        await text_becomes(page, "#completed-total", "1")
        await page.set_viewport_size({"width": 600, "height": 900})  # redraws the chart
        await text_becomes(page, "#fleet-pending", "4")
    finally:
        await page.close()
    assert errors == []


@pytest.mark.parametrize("site", [{"stream_s": 0.3}], indirect=True)
async def test_the_page_stays_live_across_event_streams(site: Site, page: Page) -> None:
    """When the server ends an event stream the page reconnects and keeps showing new numbers."""
    await text_becomes(page, "#requests-total", "0")
    for _ in range(2):
        await page.wait_for_event(
            "request", lambda r: r.resource_type == "eventsource", timeout=10_000
        )
    site.gate.set()
    await site.pipeline.infer(InferenceRequest("after the reconnects"))
    await text_becomes(page, "#completed-total", "1")
    await text_becomes(page, "#connection", "live")


@pytest.mark.parametrize("site", [{"stream_s": 0.5}], indirect=True)
async def test_an_open_page_never_gets_its_stream_cancelled_at_shutdown(
    site: Site, page: Page, caplog: pytest.LogCaptureFixture
) -> None:
    """With the page open and streaming, the server shuts down once the stream has ended by
    itself, instead of waiting out the graceful timeout and cancelling it."""
    await text_becomes(page, "#connection", "live")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        await site.stop()
    assert "Shutting down" in caplog.text
    assert "timeout graceful shutdown exceeded" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text


async def test_the_server_serves_the_dashboard_live_over_its_own_traffic(browser: Browser) -> None:
    """`create_app` mounts the dashboard: prompts posted to the API show up on the page, and
    every HTTP request in the panel of requests by route and status."""
    app = create_app(Pipeline(PipelineConfig(), EchoWorker()), fleet_status=lambda: {"done": 1})
    async with ServerTask(app) as url, httpx.AsyncClient(base_url=url) as client:
        page = await browser.new_page()
        try:
            await page.goto(f"{url}/dashboard")
            await text_becomes(page, "#requests-total", "0")
            await text_becomes(page, "#fleet-done", "1")
            for i in range(3):
                response = await client.post("/v1/prompt", json={"input": f"hello {i}"})
                assert response.status_code == 200
            await text_becomes(page, "#completed-total", "3")
            await text_becomes(page, "#route-echo .calls", "3")
            assert (await client.get("/no/such/page")).status_code == 404
            await text_becomes(page, '[data-route="/v1/prompt"] .statuses', "200 ×3")
            await text_becomes(page, '[data-route="other"] .statuses', "404 ×1")
            assert await page.is_visible("#panel-http")
        finally:
            await page.close()


@pytest.mark.parametrize("site", [{"tuning": True}], indirect=True)
async def test_tuning_panel_shows_each_parameter_and_its_last_change(
    site: Site, page: Page
) -> None:
    """The loop's parameters appear against their defaults; a change the controller makes on
    real traffic shows with its old value, new value and reason."""
    assert site.tuning is not None
    await text_becomes(page, "#param-inference_concurrency td:nth-child(3)", "64")
    site.gate.set()
    for round_ in range(3):
        await asyncio.gather(*(site.pipeline.infer(InferenceRequest(f"q {round_} {i}"))
                               for i in range(20)))
        site.clock.advance(5.0)
        site.tuning.tick()
    changed = [p for p in site.tuning.status()["parameters"] if p["last_change"]]
    assert changed, "the controller changed nothing on this traffic"
    row = f"#param-{changed[0]['name']}"
    await text_becomes(page, f"{row} td:nth-child(2)", str(changed[0]["value"]))
    shown = await page.text_content(f"{row} td:nth-child(4)")
    assert shown is not None and changed[0]["last_change"]["reason"] in shown
    assert await page.is_visible("#panel-tuning")


async def test_tuning_panel_is_hidden_without_a_tuning_loop(site: Site, page: Page) -> None:
    await text_becomes(page, "#connection", "live")
    assert not await page.is_visible("#panel-tuning")


@pytest.mark.parametrize("site", [{"learned": True}], indirect=True)
async def test_learned_routing_and_semantic_panels_follow_the_pipeline(
    site: Site, page: Page
) -> None:
    """The router's arms with their estimated reward and updates, and semantic dedup's
    lookups, appear once the pipeline has them."""
    site.gate.set()
    await site.pipeline.infer(InferenceRequest("q 1"))
    await text_becomes(page, "#arm-echo td:nth-child(4)", "1")
    await number_exceeds(page, "#semantic-lookups", 0)
    assert await page.is_visible("#panel-learned-routing")
    assert await page.is_visible("#panel-semantic")


async def test_learned_panels_are_hidden_without_them(site: Site, page: Page) -> None:
    await text_becomes(page, "#connection", "live")
    assert not await page.is_visible("#panel-learned-routing")
    assert not await page.is_visible("#panel-semantic")


async def test_usage_panel_shows_requests_by_model_and_client(site: Site, page: Page) -> None:
    """The usage panel lists each (model, client) pair with its requests and tokens, and the
    answers it got without an upstream call."""
    await text_becomes(page, "#connection", "live")
    await text_becomes(page, "#usage-rows td", "none yet")
    site.gate.set()
    for i in range(3):
        await site.pipeline.infer(InferenceRequest(f"usage question {i}", client="planner"))
    await site.pipeline.infer(InferenceRequest("another question", client="reviewer"))
    row = '#usage-rows tr[data-model="echo"][data-client="planner"]'
    await text_becomes(page, f"{row} .requests", "3")
    await number_exceeds(page, f"{row} .output", 0)
    await text_becomes(page, '#usage-rows tr[data-client="reviewer"] .requests', "1")
    # The same question again, from a third client: answered without a call (the cache).
    await site.pipeline.infer(InferenceRequest("another question", client="auditor"))
    auditor = '#usage-rows tr[data-client="auditor"]'
    await text_becomes(page, f"{auditor} .without-call", "1")
    await text_becomes(page, f"{auditor} .requests", "0")
