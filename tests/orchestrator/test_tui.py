"""The terminal dashboard, driven by Textual's pilot over status snapshots the test controls."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from fakeclock import FakeClock
from textual.widgets import DataTable, Sparkline, Static

from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
from orchestrator.metrics import MetricsSnapshot, ProviderSnapshot, StageSnapshot
from orchestrator.server import ServerTask, create_app
from orchestrator.settings import ServerSettings
from orchestrator.tui import RUNNING_ROWS, DashboardApp, Figure, RunningTasks, running_lines

SIZE = (160, 60)
NEVER_S = 3600.0  # a refresh period no test reaches: tests refresh explicitly


def snapshot(**changes: Any) -> MetricsSnapshot:
    """A snapshot with plausible numbers, and `changes` applied."""
    base = MetricsSnapshot(
        taken_at_s=100.0,
        uptime_s=75.0,
        stages=tuple(
            StageSnapshot(
                name=name,
                depth=depth,
                capacity=capacity,
                shed_total=0,
                latency_p50_ms=p50_ms,
                latency_p95_ms=p50_ms * 2,
                latency_p99_ms=p50_ms * 3,
            )
            for name, depth, capacity, p50_ms in [
                ("rag", 3, 512, 0.05),
                ("assemble", 0, 512, 0.1),
                ("inference", 40, 1024, 40.0),
                ("postprocess", 0, 256, 0.02),
                ("stream", 1, 256, 0.5),
            ]
        ),
        providers=(
            ProviderSnapshot(
                name="anthropic",
                breaker_state="closed",
                consecutive_failures=0,
                breaker_opened_total=0,
                calls_total=300,
                failures_total=2,
            ),
            ProviderSnapshot(
                name="openai",
                breaker_state="closed",
                consecutive_failures=0,
                breaker_opened_total=0,
                calls_total=100,
                failures_total=0,
            ),
        ),
        requests_total=1234,
        completed_total=1200,
        errors_total=12,
        errors_by_type={"ProviderError": 12},
        shed_total=0,
        cancelled_total=0,
        in_flight=22,
        inference_active=8,
        inference_concurrency=64,
        latency_p50_ms=41.5,
        latency_p95_ms=180.0,
        latency_p99_ms=420.0,
        throughput_rps=12.5,
        error_rate=0.01,
        dedup_hits=500,
        dedup_hit_rate=0.405,
        cache_hits=334,
        cache_misses=400,
        cache_hit_rate=0.455,
        cache_errors=0,
        upstream_calls=400,
        retries=3,
        fallbacks=1,
        cost_usd_total=2.4,
        budget_warnings=1,
        budget_refusals=0,
    )
    return dataclasses.replace(base, **changes)


class Statuses:
    """A fetch function serving `current`, counting its calls; `fail` makes it raise."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.current = status
        self.calls = 0
        self.fail: Exception | None = None

    async def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.current


def status(fleet: Mapping[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """The `/v1/status` JSON for `snapshot(**changes)`, with the fleet when given."""
    data = snapshot(**changes).to_dict()
    if fleet is not None:
        data["fleet"] = dict(fleet)
    return data


def figure(app: DashboardApp, id_: str) -> str:
    return app.query_one(f"#{id_}", Figure).value


def row(app: DashboardApp, table: str, key: str) -> list[str]:
    return [str(cell) for cell in app.query_one(f"#{table}", DataTable).get_row(key)]


def text(app: DashboardApp, id_: str) -> str:
    return str(app.query_one(f"#{id_}", Static).content)


async def test_panels_show_the_numbers_of_the_status() -> None:
    """Every panel shows its figures from the status: requests, latency, stages, breakers,
    routing shares, dedup and cache, cost."""
    app = DashboardApp("http://test", fetch=Statuses(status()), refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert figure(app, "requests-total") == "1,234"
        assert figure(app, "in-flight") == "22"
        assert figure(app, "error-rate") == "1.0%"
        assert figure(app, "latency-p50") == "42 ms"
        assert figure(app, "latency-p99") == "420 ms"
        assert row(app, "stages", "inference")[:3] == ["inference", "40", "1,024"]
        assert row(app, "stages", "inference")[-2:] == ["40 ms", "120 ms"]
        assert row(app, "stages", "rag")[-2:] == ["0.05 ms", "0.15 ms"]
        stages = app.query_one("#stages", DataTable)
        assert [stages.get_row_at(i)[0] for i in range(stages.row_count)] == [
            "rag",
            "assemble",
            "inference",
            "postprocess",
            "stream",
        ]
        assert "8 running of 64 allowed" in text(app, "inference-load")
        assert row(app, "breakers", "anthropic") == ["anthropic", "closed", "0", "0"]
        assert row(app, "routing", "anthropic")[1:3] == ["300", "2"]
        assert row(app, "routing", "anthropic")[3].endswith("75.0%")
        assert row(app, "routing", "openai")[3].endswith("25.0%")
        assert "retries 3 · fallbacks 1" in text(app, "routing-note")
        assert figure(app, "dedup-hits") == "500"
        assert figure(app, "calls-saved") == "834"
        assert figure(app, "cache-rate") == "45.5%"
        assert figure(app, "cost-total") == "$2.40"
        assert figure(app, "cost-per-answer") == "$0.0020"
        assert figure(app, "budget-warnings") == "1"
        assert "12.5 req/s" in str(app.query_one("#panel-throughput").border_title)


async def test_panels_follow_the_status_when_it_changes() -> None:
    """A new status replaces the numbers: counts grow, a breaker opens, the chart grows."""
    statuses = Statuses(status())
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert figure(app, "requests-total") == "1,234"
        assert app.query_one("#throughput-chart", Sparkline).data == [12.5]

        openai_open = dataclasses.replace(
            snapshot().providers[1], breaker_state="open", consecutive_failures=5
        )
        statuses.current = status(
            taken_at_s=101.0,
            requests_total=1300,
            throughput_rps=30.0,
            providers=(snapshot().providers[0], openai_open),
        )
        await pilot.press("r")
        await pilot.pause()
        assert figure(app, "requests-total") == "1,300"
        assert row(app, "breakers", "openai")[1:3] == ["open", "5"]
        assert app.query_one("#throughput-chart", Sparkline).data == [12.5, 30.0]
        assert "peak 30.0 req/s" in text(app, "throughput-note")


async def test_throughput_history_keeps_only_the_last_minutes() -> None:
    """Samples older than `history_s` drop out of the chart; a server restart starts it over."""
    statuses = Statuses(status(taken_at_s=100.0, throughput_rps=1.0))
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S, history_s=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for taken_at_s, rps in [(130.0, 2.0), (170.0, 3.0)]:
            statuses.current = status(taken_at_s=taken_at_s, throughput_rps=rps)
            await app.refresh_status()
        assert app.query_one("#throughput-chart", Sparkline).data == [2.0, 3.0]
        statuses.current = status(taken_at_s=5.0, throughput_rps=4.0)
        await app.refresh_status()
        assert app.query_one("#throughput-chart", Sparkline).data == [4.0]


async def test_the_chart_starts_with_the_history_the_server_kept() -> None:
    """A status carrying the server's throughput history puts those buckets on the chart
    before the app's own sample; later statuses add to them."""
    first = status(taken_at_s=100.0, throughput_rps=1.5)
    first["throughput_history"] = {
        "bucket_s": 5.0,
        "horizon_s": 900.0,
        "points": [[85.0, 2.0], [90.0, 0.0], [95.0, 4.0]],
    }
    statuses = Statuses(first)
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.query_one("#throughput-chart", Sparkline).data == [2.0, 0.0, 4.0, 1.5]
        assert "peak 4.00 req/s" in text(app, "throughput-note")
        statuses.current = status(taken_at_s=101.0, throughput_rps=1.0)
        await app.refresh_status()
        assert app.query_one("#throughput-chart", Sparkline).data == [2.0, 0.0, 4.0, 1.5, 1.0]


async def test_the_app_reads_a_real_servers_kept_history() -> None:
    """Against a real server that answered traffic before the app started, the first read
    brings that traffic's buckets onto the chart."""
    clock = FakeClock(start=1000.0)
    pipeline = Pipeline(PipelineConfig(), EchoWorker(latency_s=0.0), clock=clock)
    async with ServerTask(create_app(pipeline)) as url:
        for bucket in range(3):
            for i in range(bucket + 1):
                await pipeline.infer(InferenceRequest(f"question {bucket} {i}"))
            clock.advance(5.0)
        app = DashboardApp(url, refresh_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            await app.refresh_status()
            await pilot.pause()
            assert app.last_error is None
            data = app.query_one("#throughput-chart", Sparkline).data
            assert data is not None and list(data)[:3] == [0.2, 0.4, 0.6]


async def test_the_app_polls_on_its_own_every_refresh_period() -> None:
    """Without a key press, the status is read again and again at `refresh_s`."""
    statuses = Statuses(status())
    polled = asyncio.Event()
    original = statuses.__call__

    async def fetch() -> Mapping[str, Any]:
        data = await original()
        if statuses.calls == 3:
            polled.set()
        return data

    app = DashboardApp("http://test", fetch=fetch, refresh_s=0.01)
    async with app.run_test(size=SIZE):
        await asyncio.wait_for(polled.wait(), timeout=10)


async def test_an_unreachable_server_keeps_the_last_numbers_and_says_why() -> None:
    """A failed read leaves the figures as they were and shows the error; the next good read
    clears it."""
    statuses = Statuses(status())
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        statuses.fail = ConnectionError("connection refused")
        await app.refresh_status()
        assert figure(app, "requests-total") == "1,234"
        assert "connection refused" in text(app, "connection")
        assert app.query_one("#connection").has_class("down")
        statuses.fail = None
        await app.refresh_status()
        assert text(app, "connection").startswith("live")
        assert app.last_error is None


async def test_fleet_panel_shows_the_fleet_only_when_one_is_attached() -> None:
    """No fleet: no panel. A fleet: its task counts, updated; a fleet error: the message."""
    statuses = Statuses(status())
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not app.query_one("#panel-fleet").display

        statuses.current = status(fleet={"pending": 5, "running": 2, "done": 9, "failed": 1})
        await app.refresh_status()
        await pilot.pause()
        assert app.query_one("#panel-fleet").display
        assert [figure(app, f"fleet-{k}") for k in ("pending", "running", "done", "failed")] == [
            "5",
            "2",
            "9",
            "1",
        ]

        statuses.current = status(fleet={"pending": 4, "running": 3, "done": 9, "failed": 1})
        await app.refresh_status()
        assert figure(app, "fleet-running") == "3"

        statuses.current = status(fleet={"error": "fleet status unavailable (OSError)"})
        await app.refresh_status()
        await pilot.pause()
        assert text(app, "fleet-error") == "fleet status unavailable (OSError)"
        assert not app.query_one("#fleet-figures").display


async def test_reads_a_running_servers_status_over_http() -> None:
    """With no fetch given, the app reads `/v1/status` of a real server."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    app_under_test = create_app(pipeline, fleet_status=lambda: {"done": 7})
    async with ServerTask(app_under_test) as url:
        for i in range(2):
            await pipeline.infer(InferenceRequest(f"question {i}"))
        app = DashboardApp(url, refresh_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            await app.refresh_status()
            await pilot.pause()
            assert app.last_error is None
            assert figure(app, "requests-total") == "2"
            assert row(app, "routing", "echo")[1] == "2"
            assert figure(app, "fleet-done") == "7"


async def test_a_token_protected_server_is_read_with_the_api_key() -> None:
    """Against a server with API_KEY, the app reads the status with the key and says 401
    without it."""
    settings = ServerSettings(provider="echo", api_key="s3cret-token")
    app_under_test = create_app(Pipeline(PipelineConfig(), EchoWorker()), settings=settings)
    async with ServerTask(app_under_test) as url:
        without = DashboardApp(url, refresh_s=NEVER_S)
        async with without.run_test(size=SIZE):
            await without.refresh_status()
            assert without.last_error is not None and "401" in without.last_error
        with_key = DashboardApp(url, refresh_s=NEVER_S, api_key="s3cret-token")
        async with with_key.run_test(size=SIZE):
            await with_key.refresh_status()
            assert with_key.last_error is None
            assert figure(with_key, "requests-total") == "0"


@pytest.mark.parametrize("bad", [{"refresh_s": 0}, {"history_s": -1}])
def test_non_positive_periods_are_refused(bad: dict[str, float]) -> None:
    """A zero or negative period is a ValueError naming the parameter."""
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        DashboardApp("http://test", **bad)


def test_public_names() -> None:
    """The module exports the app, its figure and running-task widgets, the fetch type, the
    HTTP fetch and the running tasks' lines."""
    from orchestrator import tui

    assert sorted(tui.__all__) == [
        "DashboardApp",
        "Figure",
        "RunningTasks",
        "StatusFetch",
        "http_fetch",
        "running_lines",
    ]


TUNING = {
    "tuning": "on",
    "interval_s": 5.0,
    "ticks": 12,
    "parameters": [
        {
            "name": "inference_concurrency",
            "value": 32,
            "default": 64,
            "unit": "slots",
            "last_change": {"old": 64, "new": 32, "reason": "demand needs only 1 of 64 slots"},
        },
        {"name": "cache_ttl_s", "value": 300.0, "default": 300.0, "unit": "s", "last_change": None},
    ],
    "anomalies": [
        {
            "metric": "upstream_error_rate",
            "severity": "Critical",
            "value": 0.5,
            "baseline": 0.2,
            "detector": "slo",
            "action": "wrote si-x.toml",
        }
    ],
}


async def test_tuning_panel_shows_parameters_changes_and_anomalies() -> None:
    statuses = Statuses(status())
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not app.query_one("#panel-tuning").display
        statuses.current = status() | {"self_tune": TUNING}
        await app.refresh_status()
        await pilot.pause()
        assert app.query_one("#panel-tuning").display
        shown = text(app, "tuning-text")
        assert "inference_concurrency = 32 (default 64)  64 → 32: demand needs only" in shown
        assert "cache_ttl_s = 300.0 (default 300.0)" in shown
        assert "Critical upstream_error_rate = 0.5 (baseline 0.2): wrote si-x.toml" in shown


ROUTING = {
    "policy": "thompson",
    "changes_total": 1,
    "answers_recorded": 9,
    "failures_recorded": 0,
    "arms": [
        {"name": "strong", "mean_reward": 0.912, "evidence": 7.5, "updates_total": 8},
        {"name": "weak", "mean_reward": 0.4, "evidence": 1.0, "updates_total": 1},
    ],
    "contexts": {},
}
SEMANTIC = {
    "state": "ready",
    "embedder": "lexical",
    "fallback_reason": "no torch",
    "lookups": 10,
    "hits": 4,
    "hit_rate": 0.4,
    "errors": 0,
    "wrong_hit_rate": 0.25,
    "recent_hits": [{"request_id": "req_a", "similarity": 0.9731, "served_from": "flight"}],
}


async def test_learned_routing_and_semantic_panels_show_only_when_reported() -> None:
    """The router's arms with their estimated rewards, and semantic dedup's state and hits,
    appear when the status carries them."""
    statuses = Statuses(status())
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not app.query_one("#panel-learned-routing").display
        assert not app.query_one("#panel-semantic").display
        statuses.current = status() | {"routing": ROUTING, "semantic_dedup": SEMANTIC}
        await app.refresh_status()
        await pilot.pause()
        routing = text(app, "learned-text")
        assert "policy thompson" in routing and "strong" in routing and "0.912" in routing
        semantic = text(app, "semantic-text")
        assert "lexical" in semantic and "fallback: no torch" in semantic
        assert "hits 4 (40.0%)" in semantic and "req_a: similarity 0.973, joined" in semantic


def screen_lines(app: DashboardApp) -> list[str]:
    """The text the terminal shows now, one string per row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_every_figure_shows_its_whole_label_and_value(size: tuple[int, int]) -> None:
    """At 80×24 and at 120×40 each figure's label fits on its line (no wrap, no ellipsis)
    and its value shows in full on the line below, in every panel, the fleet's included."""
    fleet = {"pending": 12, "running": 3, "done": 1_400, "failed": 2}
    app = DashboardApp("http://test", fetch=Statuses(status(fleet=fleet)), refresh_s=NEVER_S)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        figures = [
            f
            for f in app.query(Figure)
            if f.visible
            and f.parent is not None
            and f.parent.parent is not None
            and f.parent.parent.display
        ]
        assert len(figures) == 9 + 7 + 4 + 4
        for fig in figures:
            app.screen.scroll_to_widget(fig, animate=False, immediate=True)
            await pilot.pause()
            x, y, width, _ = fig.region
            lines = screen_lines(app)
            assert width > 0, fig.id
            assert lines[y][x : x + width].strip() == fig.label, (size, fig.id, lines[y])
            assert lines[y + 1][x : x + width].strip() == fig.value, (size, fig.id, lines[y + 1])
            assert "…" not in lines[y] + lines[y + 1]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_no_table_is_cut_at_80x24_or_120x40(size: tuple[int, int]) -> None:
    """The stage, breaker and routing tables are as wide as their panels allow: no column
    is scrolled out of sight, and every column's heading is on screen."""
    app = DashboardApp("http://test", fetch=Statuses(status()), refresh_s=NEVER_S)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for table in app.query(DataTable):
            app.screen.scroll_to_widget(table, animate=False, immediate=True)
            await pilot.pause()
            assert table.virtual_size.width <= table.scrollable_content_region.width, table.id
            x, y, width, _ = table.region
            heading = screen_lines(app)[y][x : x + width]
            for column in table.columns.values():
                assert str(column.label) in heading, (size, table.id, heading)


def running_task(task_id: str, agent: str, attempt: int, left_s: float) -> dict[str, Any]:
    """One `running_tasks` entry as `FleetSnapshot.to_json()` writes it."""
    return {
        "task_id": task_id,
        "agent": agent,
        "attempt": attempt,
        "lease_expires_at_s": 0.0,
        "lease_remaining_s": left_s,
        "lease_s": 60.0,
    }


LONG_ID = "migrate-the-billing-service-to-the-new-ledger-schema-and-backfill-2025"
RUNNING = [
    running_task("fix-login", "agent-1", 2, 42.4),
    running_task(LONG_ID, "claude-code-agent-with-a-very-long-name-7", 1, 125.0),
    running_task("write-docs", "agent-2", 12, -3.0),
    *(running_task(f"task-{n}", f"agent-{n}", 1, 50.0 + n) for n in range(3, 8)),
]


async def test_fleet_panel_lists_running_tasks_with_agent_attempt_and_lease() -> None:
    """Under the counts, each running task with its agent, attempt and lease left (a lease
    that ran out says so), as the web dashboard shows them; `none running` for an empty list;
    a fleet that reports no list shows its counts only, and a fleet error hides the list."""
    fleet = {"pending": 2, "running": 3, "running_tasks": RUNNING[:3]}
    statuses = Statuses(status(fleet=fleet))
    app = DashboardApp("http://test", fetch=statuses, refresh_s=NEVER_S)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert figure(app, "fleet-running") == "3"  # the list is no count of its own
        assert not app.query("#fleet-running_tasks")
        tasks = app.query_one("#fleet-running-tasks", RunningTasks)
        assert tasks.display
        heading, *rows = tasks.lines
        assert heading.split() == ["task", "agent", "attempt", "lease", "left"]
        assert rows[0].split() == ["fix-login", "agent-1", "2", "42s"]
        assert rows[1].split()[2:] == ["1", "2m", "5s"]
        assert rows[2].split() == ["write-docs", "agent-2", "12", "expired"]

        statuses.current = status(fleet={**fleet, "running": 0, "running_tasks": []})
        await app.refresh_status()
        await pilot.pause()
        assert tasks.lines == ["none running"] and tasks.display

        statuses.current = status(fleet={"pending": 2, "running": 1})
        await app.refresh_status()
        await pilot.pause()
        assert not tasks.display and figure(app, "fleet-running") == "1"

        statuses.current = status(fleet={"error": "fleet status unavailable (OSError)"})
        await app.refresh_status()
        await pilot.pause()
        assert not tasks.display


def test_running_lines_cut_names_never_the_attempt_or_the_lease() -> None:
    """Narrow, the task and agent names are cut with an ellipsis to the width; the attempt
    and the lease come whole; past the row limit a line says how many more run."""
    lines = running_lines(RUNNING, 50)
    assert len(lines) == 1 + RUNNING_ROWS + 1 and lines[-1] == f"+{len(RUNNING) - 5} more"
    assert all(len(line) <= 50 for line in lines)
    long_row = lines[2]
    assert "…" in long_row and LONG_ID not in long_row
    assert long_row.split()[-3:] == ["1", "2m", "5s"]
    assert lines[3].split()[-2:] == ["12", "expired"]
    assert running_lines(RUNNING[:1], 50)[1].split() == ["fix-login", "agent-1", "2", "42s"]
    assert running_lines(RUNNING[:3], 400)[2].split()[:2] == [
        LONG_ID,
        "claude-code-agent-with-a-very-long-name-7",
    ]  # room enough: nothing cut


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_running_tasks_fit_the_fleet_panel_at_80x24_and_120x40(
    size: tuple[int, int],
) -> None:
    """On screen every running-task line is whole inside the panel (what is cut is a name,
    cut with an ellipsis, never a line by the panel's edge), with `+N more` past the rows."""
    fleet = {
        "pending": 12,
        "running": len(RUNNING),
        "done": 1_400,
        "failed": 2,
        "running_tasks": RUNNING,
    }
    app = DashboardApp("http://test", fetch=Statuses(status(fleet=fleet)), refresh_s=NEVER_S)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        tasks = app.query_one("#fleet-running-tasks", RunningTasks)
        app.screen.scroll_to_widget(tasks, animate=False, immediate=True)
        await pilot.pause()
        x, y, width, height = tasks.region
        lines = tasks.lines
        assert height == len(lines) == 1 + RUNNING_ROWS + 1
        assert all(len(line) <= width for line in lines), (size, width)
        shown = screen_lines(app)
        for n, line in enumerate(lines):
            assert shown[y + n][x : x + width].rstrip() == line, (size, n, shown[y + n])
        assert lines[-1] == f"+{len(RUNNING) - RUNNING_ROWS} more"
        assert "…" in lines[2]  # the long task id, cut to the panel
        assert lines[2].split()[-3:] == ["1", "2m", "5s"]
        assert lines[3].split()[-2:] == ["12", "expired"]
