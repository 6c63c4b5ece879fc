"""`orchestrator tui`: a terminal dashboard (Textual) over a running server's `GET /v1/status`.

    DashboardApp("http://127.0.0.1:8080").run()

The same panels as the web dashboard — requests and latency, stage flow, circuit breakers,
routing, throughput over the last minutes, dedup and cache savings, cost, and the fleet's
tasks when the server has a fleet attached — drawn from the status JSON alone, fetched every
`refresh_s` seconds. The throughput chart starts with the history the server kept (`GET
/v1/status/history`) and goes on with what this app reads. If the server cannot be reached
the last numbers stay on screen, marked with the error.

Laid out for 80×24 and up: each grid of figures takes as many columns as its widest label
or value allows (no label wraps, no number is cut), and the side-by-side panels stack below
100 columns (two abreast below 150) so that no table is cut; what does not fit the height
scrolls. The fleet panel lists the running tasks under its counts as the web dashboard does
(task, agent, attempt, lease left, soonest lease end first): a name too long for the panel
is cut with an ellipsis, the attempt and the lease never are, and past `RUNNING_ROWS` rows a
last line says how many more there are.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import httpx
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.widgets import DataTable, Footer, Header, Sparkline, Static

from orchestrator.metrics import Stage

__all__ = ["DashboardApp", "Figure", "RunningTasks", "StatusFetch", "http_fetch", "running_lines"]

StatusFetch = Callable[[], Awaitable[Mapping[str, Any]]]
"""A zero-argument coroutine function returning the status JSON (`GET /v1/status`)."""

STAGE_ORDER = tuple(Stage)
FLEET_ORDER = ("pending", "running", "done", "failed")
_STATE_STYLE = {"closed": "bold green", "half_open": "bold yellow", "open": "bold red"}
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # fleet states usable as widget ids
RUNNING_ROWS = 5
"""At most this many running tasks are listed in the fleet panel; a line counts the rest."""


def http_fetch(client: httpx.AsyncClient, url: str, *, api_key: str | None = None) -> StatusFetch:
    """A `StatusFetch` that GETs `url` + `/v1/status` with `client` (bearer `api_key` if set).

    The first status it reads carries the server's throughput history too (`GET
    /v1/status/history`, under `"throughput_history"`, as the web dashboard's first event
    does), once the server has answered it. The coroutine raises `httpx.HTTPError` for a
    connection failure or a non-2xx status.
    """
    status_url = url.rstrip("/") + "/v1/status"
    history_url = status_url + "/history"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    history_read = False

    async def fetch() -> Mapping[str, Any]:
        nonlocal history_read
        response = await client.get(status_url, headers=headers)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        if not history_read:
            kept = await client.get(history_url, headers=headers)
            if kept.status_code == 200:  # an older server has none: the app's own samples
                data["throughput_history"] = kept.json()
                history_read = True
        return data

    return fetch


# -- formatting (the same conventions as the web page) ------------------------------------------


def _int(n: float) -> str:
    return f"{int(n):,}"


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _usd(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _rps(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h {m}m" if h else f"{m}m {sec}s" if m else f"{sec}s"


def _bar(fraction: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def _ordered(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    names = list(names)
    return [n for n in order if n in names] + [n for n in names if n not in order]


# -- widgets --------------------------------------------------------------------------------------


class Figure(Vertical):
    """One labelled number; `value` is the text shown."""

    DEFAULT_CSS = """
    Figure { height: 2; width: 1fr; }
    Figure > .label { color: $text-muted; }
    Figure > .value { text-style: bold; }
    """

    def __init__(self, label: str, *, id: str, value: str = "–") -> None:
        super().__init__(id=id)
        self._label = label
        self._value = Static(value, classes="value")

    def compose(self) -> ComposeResult:
        yield Static(self._label, classes="label")
        yield self._value

    @property
    def value(self) -> str:
        return str(self._value.content)

    @property
    def label(self) -> str:
        return self._label

    @value.setter
    def value(self, text: str) -> None:
        if text != self.value:
            self._value.update(text)
            if isinstance(self.parent, Figures):
                self.parent.fit()


class Figures(Grid):
    """A grid of `Figure`s with as many columns as fit the width it has: every column is as
    wide as the longest label or value in it, so no label wraps and no number is cut."""

    DEFAULT_CSS = """
    Figures { height: auto; grid-gutter: 0 2; grid-rows: 2; }
    """

    def on_resize(self) -> None:
        self.fit()

    def on_mount(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Set the column count from the content width and the widest figure."""
        figures = [child for child in self.children if isinstance(child, Figure)]
        if not figures or not self.content_size.width:
            return
        need = max(max(len(f.label), len(f.value)) for f in figures)
        gutter = self.styles.grid_gutter_vertical
        columns = max(1, min(len(figures), (self.content_size.width + gutter) // (need + gutter)))
        if self.styles.grid_size_columns != columns:
            self.styles.grid_size_columns = columns


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def running_lines(
    tasks: Sequence[Mapping[str, Any]], width: int, max_rows: int = RUNNING_ROWS
) -> list[str]:
    """The fleet's running tasks as lines at most `width` wide: a heading, then one row per
    task (task, agent, attempt, lease left or `expired`), at most `max_rows` of them and then
    `+N more`; `none running` for none. The attempt and lease columns are as wide as their
    widest value; the task and agent names share what is left, each cut with an ellipsis
    only when both do not fit."""
    if not tasks:
        return ["none running"]
    shown = list(tasks[:max_rows])
    rows = []
    for t in shown:
        left = float(t.get("lease_remaining_s", 0.0))
        rows.append(
            (
                str(t.get("task_id", "")),
                str(t.get("agent", "")),
                _int(t.get("attempt", 0)),
                _duration(left) if left > 0 else "expired",
            )
        )
    heading = ("task", "agent", "attempt", "lease left")
    attempt_w, lease_w = (max(len(r[i]) for r in [heading, *rows]) for i in (2, 3))
    task_w, agent_w = (max(len(r[i]) for r in [heading, *rows]) for i in (0, 1))
    gap = 2
    room = width - attempt_w - lease_w - 3 * gap
    if task_w + agent_w > room:  # share the room: the agent a third (or what the task
        # leaves), the task the rest
        agent_w = max(len("agent"), min(agent_w, max(room // 3, room - task_w)))
        task_w = max(len("task"), room - agent_w)

    def line(task: str, agent: str, attempt: str, lease: str) -> str:
        return (
            f"{_cut(task, task_w):<{task_w}}{'':{gap}}{_cut(agent, agent_w):<{agent_w}}"
            f"{'':{gap}}{attempt:>{attempt_w}}{'':{gap}}{lease:>{lease_w}}"
        ).rstrip()

    lines = [line(*heading), *(line(*r) for r in rows)]
    if len(tasks) > len(shown):
        lines.append(f"+{len(tasks) - len(shown)} more")
    return lines


class RunningTasks(Static):
    """The fleet's running tasks (`running_lines`), redrawn at the width the panel gives."""

    DEFAULT_CSS = """
    RunningTasks { height: auto; margin-top: 1; }
    """

    def __init__(self, *, id: str, max_rows: int = RUNNING_ROWS) -> None:
        super().__init__("", id=id)
        self.max_rows = max_rows
        self._tasks: list[Mapping[str, Any]] = []

    @property
    def lines(self) -> list[str]:
        """The lines shown now."""
        return running_lines(self._tasks, self.content_size.width or 76, self.max_rows)

    def show(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        self._tasks = list(tasks)
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        self.update(Text("\n".join(self.lines), no_wrap=True, overflow="ellipsis"))


def _panel(title: str, *children: Any, id: str, classes: str = "panel") -> Vertical:
    panel = Vertical(*children, id=id, classes=classes)
    panel.border_title = title
    return panel


def _table(id: str, *columns: str) -> DataTable[str | Text]:
    table: DataTable[str | Text] = DataTable(id=id, cursor_type="none", zebra_stripes=True)
    table.add_columns(*columns)
    return table


class DashboardApp(App[None]):
    """The terminal dashboard for the orchestrator server at `url`.

    `fetch` replaces the HTTP read of `url` + `/v1/status` (tests pass their own); `api_key`
    is sent as a bearer token by the default fetch. The status is read on start, every
    `refresh_s` seconds, and when `r` is pressed; throughput is charted over `history_s`
    seconds. Raises ValueError for a non-positive `refresh_s` or `history_s`.
    """

    TITLE = "orchestrator"
    CSS = """
    Screen { layout: vertical; }
    .panel { border: round $primary-background-lighten-2; border-title-color: $text-accent;
             height: auto; padding: 0 1; }
    #connection { height: 1; padding: 0 1; color: $text-muted; }
    #connection.down { color: $error; }
    #middle, #bottom { height: auto; }
    #middle { grid-size: 2; }
    #bottom { grid-size: 3; }
    /* Side by side only where the panels' tables and figures fit. */
    Screen.-narrow #middle, Screen.-narrow #bottom { grid-size: 1; }
    Screen.-medium #bottom { grid-size: 2; }
    #middle > .panel, #bottom > .panel { width: 1fr; }
    DataTable { height: auto; max-height: 8; }
    #throughput-chart { height: 4; }
    #inference-load, #routing-note, #throughput-note { color: $text-muted; }
    """
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (100, "-medium"),
        (150, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh"),
    ]

    def __init__(
        self,
        url: str,
        *,
        fetch: StatusFetch | None = None,
        refresh_s: float = 1.0,
        history_s: float = 300.0,
        api_key: str | None = None,
    ) -> None:
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be > 0, got {refresh_s!r}")
        if history_s <= 0:
            raise ValueError(f"history_s must be > 0, got {history_s!r}")
        super().__init__()
        self.url = url
        self.refresh_s = refresh_s
        self.history_s = history_s
        self._api_key = api_key
        self._fetch = fetch
        self._client: httpx.AsyncClient | None = None
        self._history: deque[tuple[float, float]] = deque()  # (taken_at_s, throughput_rps)
        self.last_status: Mapping[str, Any] | None = None
        self.last_error: str | None = None

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="connection")
        yield _panel(
            "Requests",
            Figures(
                Figure("requests", id="requests-total"),
                Figure("completed", id="completed-total"),
                Figure("in flight", id="in-flight"),
                Figure("errors", id="errors-total"),
                Figure("error rate", id="error-rate"),
                Figure("shed", id="shed-total"),
                Figure("p50", id="latency-p50"),
                Figure("p95", id="latency-p95"),
                Figure("p99", id="latency-p99"),
                id="figures",
            ),
            id="panel-requests",
        )
        yield _panel(
            "Stage flow",
            _table("stages", "stage", "queued", "capacity", "fill", "shed", "p50", "p99"),
            Static("", id="inference-load"),
            id="panel-stages",
        )
        yield _panel(
            "Throughput",
            Sparkline([], id="throughput-chart"),
            Static("", id="throughput-note"),
            id="panel-throughput",
        )
        with Grid(id="middle"):
            yield _panel(
                "Circuit breakers",
                _table("breakers", "provider", "state", "failures in a row", "opened"),
                id="panel-breakers",
            )
            yield _panel(
                "Routing",
                _table("routing", "provider", "calls", "failed", "share"),
                Static("", id="routing-note"),
                id="panel-routing",
            )
        with Grid(id="bottom"):
            yield _panel(
                "Dedup and cache",
                Figures(
                    Figure("coalesced", id="dedup-hits"),
                    Figure("dedup rate", id="dedup-rate"),
                    Figure("calls saved", id="calls-saved"),
                    Figure("cache hits", id="cache-hits"),
                    Figure("cache hit rate", id="cache-rate"),
                    Figure("upstream calls", id="upstream-calls"),
                    Figure("saved", id="saved-usd"),
                    id="savings-figures",
                ),
                id="panel-savings",
            )
            yield _panel(
                "Cost",
                Figures(
                    Figure("spent", id="cost-total"),
                    Figure("per answer", id="cost-per-answer"),
                    Figure("budget warnings", id="budget-warnings"),
                    Figure("budget refusals", id="budget-refusals"),
                    id="cost-figures",
                ),
                id="panel-cost",
            )
            yield _panel(
                "Fleet tasks",
                Figures(id="fleet-figures"),
                RunningTasks(id="fleet-running-tasks"),
                Static("", id="fleet-error"),
                id="panel-fleet",
            )
            yield _panel("Self-tuning", Static("", id="tuning-text"), id="panel-tuning")
            yield _panel(
                "Learned routing", Static("", id="learned-text"), id="panel-learned-routing"
            )
            yield _panel("Semantic dedup", Static("", id="semantic-text"), id="panel-semantic")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.url
        self.query_one("#panel-fleet").display = False
        self.query_one("#panel-tuning").display = False
        self.query_one("#panel-learned-routing").display = False
        self.query_one("#panel-semantic").display = False
        if self._fetch is None:
            self._client = httpx.AsyncClient(timeout=5.0)
            self._fetch = http_fetch(self._client, self.url, api_key=self._api_key)
        # The screen owns the timer, so polling stops with the screen holding the panels.
        self.screen.call_later(self.refresh_status)
        self.screen.set_interval(self.refresh_s, self.refresh_status)

    async def on_unmount(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def action_refresh_now(self) -> None:
        await self.refresh_status()

    # -- data -------------------------------------------------------------------------------

    async def refresh_status(self) -> None:
        """Fetch the status once and show it; on failure keep the last numbers and say why."""
        assert self._fetch is not None
        connection = self.query_one("#connection", Static)
        try:
            status = await self._fetch()
        except Exception as exc:  # whatever the server or network did, the app keeps running
            self.last_error = f"cannot read {self.url}: {type(exc).__name__}: {exc}"
            connection.update(self.last_error)
            connection.add_class("down")
            return
        self.last_error = None
        connection.remove_class("down")
        connection.update(
            f"live · uptime {_duration(status['uptime_s'])} · "
            f"updated {time.strftime('%H:%M:%S')} · every {self.refresh_s:g}s"
        )
        self.show(status)

    def show(self, s: Mapping[str, Any]) -> None:
        """Draw every panel from one status."""
        self.last_status = s
        self._figures(
            {
                "requests-total": _int(s["requests_total"]),
                "completed-total": _int(s["completed_total"]),
                "in-flight": _int(s["in_flight"]),
                "errors-total": _int(s["errors_total"]),
                "error-rate": _pct(s["error_rate"]),
                "shed-total": _int(s["shed_total"]),
                "latency-p50": _ms(s["latency_p50_ms"]),
                "latency-p95": _ms(s["latency_p95_ms"]),
                "latency-p99": _ms(s["latency_p99_ms"]),
                "dedup-hits": _int(s["dedup_hits"]),
                "dedup-rate": _pct(s["dedup_hit_rate"]),
                "calls-saved": _int(s["dedup_hits"] + s["cache_hits"]),
                "cache-hits": _int(s["cache_hits"]),
                "cache-rate": _pct(s["cache_hit_rate"]),
                "saved-usd": _usd((s.get("saved_usd") or {}).get("total", 0.0)),
                "upstream-calls": _int(s["upstream_calls"]),
                "cost-total": _usd(s["cost_usd_total"]),
                "cost-per-answer": _usd(s["cost_usd_total"] / s["completed_total"])
                if s["completed_total"]
                else "–",
                "budget-warnings": _int(s["budget_warnings"]),
                "budget-refusals": _int(s["budget_refusals"]),
            }
        )
        self._show_stages(s)
        self._show_providers(s)
        self._show_throughput(s)
        self._show_fleet(s.get("fleet"))
        self._show_tuning(s.get("self_tune"))
        self._show_text("#panel-learned-routing", "#learned-text", s.get("routing"), routing_text)
        self._show_text("#panel-semantic", "#semantic-text", s.get("semantic_dedup"), semantic_text)

    def _show_text(
        self,
        panel_id: str,
        text_id: str,
        data: Mapping[str, Any] | None,
        text: Any,
    ) -> None:
        """A text panel shown only while the status carries its section."""
        panel = self.query_one(panel_id)
        panel.display = data is not None
        if data is not None:
            self.query_one(text_id, Static).update(text(data))

    def _figures(self, values: Mapping[str, str]) -> None:
        for id_, text in values.items():
            self.query_one(f"#{id_}", Figure).value = text

    def _show_stages(self, s: Mapping[str, Any]) -> None:
        by_name = {stage["name"]: stage for stage in s["stages"]}
        table = self.query_one("#stages", DataTable)
        table.clear()
        for name in _ordered(by_name, STAGE_ORDER):
            stage = by_name[name]
            fill = stage["depth"] / stage["capacity"] if stage["capacity"] else 0.0
            table.add_row(
                name,
                _int(stage["depth"]),
                _int(stage["capacity"]),
                _bar(fill),
                _int(stage["shed_total"]),
                _ms(stage.get("latency_p50_ms", 0.0)),
                _ms(stage.get("latency_p99_ms", 0.0)),
                key=name,
            )
        self.query_one("#inference-load", Static).update(
            f"inference: {_int(s['inference_active'])} running of "
            f"{_int(s['inference_concurrency'])} allowed"
        )

    def _show_providers(self, s: Mapping[str, Any]) -> None:
        providers = s["providers"]
        breakers = self.query_one("#breakers", DataTable)
        routing = self.query_one("#routing", DataTable)
        breakers.clear()
        routing.clear()
        calls = sum(p["calls_total"] for p in providers)
        for p in providers:
            breakers.add_row(
                p["name"],
                Text(
                    p["breaker_state"].replace("_", "-"),
                    style=_STATE_STYLE.get(p["breaker_state"], ""),
                ),
                _int(p["consecutive_failures"]),
                _int(p["breaker_opened_total"]),
                key=p["name"],
            )
            share = p["calls_total"] / calls if calls else 0.0
            routing.add_row(
                p["name"],
                _int(p["calls_total"]),
                _int(p["failures_total"]),
                f"{_bar(share)} {_pct(share)}" if calls else "–",
                key=p["name"],
            )
        self.query_one("#routing-note", Static).update(
            f"upstream calls (attempts) per provider · retries {_int(s['retries'])} · "
            f"fallbacks {_int(s['fallbacks'])}"
        )

    def _show_throughput(self, s: Mapping[str, Any]) -> None:
        taken_at_s, rps = s["taken_at_s"], s["throughput_rps"]
        history = self._history
        kept = s.get("throughput_history")
        if isinstance(kept, Mapping) and isinstance(kept.get("points"), list):
            history.clear()  # what the server kept (5 s buckets), then this app's samples
            history.extend((float(t), float(v)) for t, v in kept["points"] if t <= taken_at_s)
        if history and taken_at_s < history[-1][0]:
            history.clear()  # the server restarted: its clock started again
        history.append((taken_at_s, rps))
        while history and history[0][0] < taken_at_s - self.history_s:
            history.popleft()
        self.query_one("#throughput-chart", Sparkline).data = [v for _, v in history]
        peak = max(v for _, v in history)
        self.query_one("#panel-throughput").border_title = f"Throughput — {_rps(rps)} req/s"
        self.query_one("#throughput-note", Static).update(
            f"finished requests/s as the server measures them, over the last "
            f"{_duration(min(self.history_s, taken_at_s - history[0][0]))} "
            f"({len(history)} samples, peak {_rps(peak)} req/s)"
        )

    def _show_tuning(self, tuning: Mapping[str, Any] | None) -> None:
        """The tuning loop: each parameter against its default with its last change, and the
        recent anomalies (the web dashboard's panel, as text)."""
        panel = self.query_one("#panel-tuning")
        panel.display = tuning is not None
        if tuning is not None:
            self.query_one("#tuning-text", Static).update(tuning_text(tuning))

    def _show_fleet(self, fleet: Mapping[str, Any] | None) -> None:
        panel = self.query_one("#panel-fleet")
        panel.display = fleet is not None
        if fleet is None:
            return
        figures = self.query_one("#fleet-figures", Figures)
        running = self.query_one("#fleet-running-tasks", RunningTasks)
        error = self.query_one("#fleet-error", Static)
        if isinstance(fleet.get("error"), str):
            error.update(fleet["error"])
            error.display = True
            figures.display = running.display = False
            return
        error.display = False
        figures.display = True
        tasks = fleet.get("running_tasks")
        running.display = isinstance(tasks, list)  # a fleet that reports no list: counts only
        if isinstance(tasks, list):
            running.show([t for t in tasks if isinstance(t, Mapping)])
        counts = {
            key: _int(fleet[key])
            for key in _ordered(fleet, FLEET_ORDER)
            if isinstance(fleet[key], int | float) and _ID.fullmatch(key)
        }
        shown = [child.id for child in figures.children]
        if shown == [f"fleet-{key}" for key in counts]:
            for key, text in counts.items():
                figures.query_one(f"#fleet-{key}", Figure).value = text
        else:  # the fleet reports other states than before: lay the panel out again
            figures.remove_children()
            figures.mount_all(Figure(k, id=f"fleet-{k}", value=v) for k, v in counts.items())


def tuning_text(tuning: Mapping[str, Any]) -> str:
    """The self-tuning panel's lines."""
    if isinstance(tuning.get("error"), str):
        return str(tuning["error"])
    lines = [
        f"tuning {tuning.get('tuning')} · every {tuning.get('interval_s')}s · "
        f"{_int(tuning.get('ticks', 0))} rounds"
    ]
    for p in tuning.get("parameters") or []:
        last = p.get("last_change")
        change = f"  {last['old']} → {last['new']}: {last['reason']}" if last else ""
        lines.append(f"{p['name']} = {p['value']} (default {p['default']}){change}")
    anomalies = list(tuning.get("anomalies") or [])[-5:]
    lines.append("anomalies:" + ("" if anomalies else " none"))
    lines += [
        f"  {a['severity']} {a['metric']} = {a['value']:.3g} (baseline "
        f"{a['baseline']:.3g}): {a['action']}"
        for a in reversed(anomalies)
    ]
    from self_tune.experiment import status_lines  # the panel shows only with self_tune

    lines += status_lines(tuning.get("experiments"))
    return "\n".join(lines)


def routing_text(routing: Mapping[str, Any]) -> str:
    """The learned router's panel: each provider's estimated reward, best first."""
    if isinstance(routing.get("error"), str):
        return str(routing["error"])
    changes = _int(routing.get("changes_total", 0))
    lines = [f"policy {routing.get('policy')} · changes seen {changes}"]
    for arm in routing.get("arms") or []:
        reward = float(arm.get("mean_reward", 0.0))
        lines.append(
            f"{arm['name']:<16} {reward:.3f} {_bar(reward)}  evidence "
            f"{float(arm.get('evidence', 0.0)):.1f} · {_int(arm.get('updates_total', 0))} updates"
        )
    return "\n".join(lines)


def semantic_text(dedup: Mapping[str, Any]) -> str:
    """The semantic dedup panel: state, embedder, hits, lookups skipped while the embedder was
    busy, and the recent hits' similarity."""
    head = [str(dedup.get("state", ""))]
    if dedup.get("embedder"):
        head.append(str(dedup["embedder"]))
    if dedup.get("fallback_reason"):
        head.append(f"fallback: {dedup['fallback_reason']}")
    lines = [
        " · ".join(head),
        f"lookups {_int(dedup.get('lookups', 0))} · hits {_int(dedup.get('hits', 0))} "
        f"({_pct(dedup.get('hit_rate', 0.0))}) · wrong reported "
        f"{_pct(dedup.get('wrong_hit_rate', 0.0))} · skipped (embedder busy) "
        f"{_int(dedup.get('skipped_busy', 0))}",
    ]
    for hit in list(dedup.get("recent_hits") or [])[-5:][::-1]:
        where = "joined a call in flight" if hit.get("served_from") == "flight" else "stored"
        lines.append(f"  {hit['request_id']}: similarity {float(hit['similarity']):.3f}, {where}")
    return "\n".join(lines)
