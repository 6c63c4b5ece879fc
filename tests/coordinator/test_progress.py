"""Progress display: plain log lines off a terminal, a live status line on one."""

from __future__ import annotations

import io

from coordinator.metrics import EventKind, FleetEvent
from coordinator.progress import Progress
from coordinator.queue import FolderQueue
from coordinator.task import TaskState


def _event(kind: EventKind, **extra: object) -> FleetEvent:
    return FleetEvent(kind=kind, task_id="t1", agent="agent-1", attempt=1, **extra)


def test_plain_lines_when_not_a_terminal(tmp_path):
    """Off a terminal every event is one plain line, with no terminal control codes."""
    out = io.StringIO()
    with Progress(FolderQueue(tmp_path), out=out, live=False) as progress:
        progress.on_event(_event(EventKind.STARTED))
        progress.on_event(_event(EventKind.FAILED, detail="agent exited with code 3",
                                 task_state=TaskState.PENDING))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("started   t1 (attempt 1, agent-1)")
    assert lines[1].endswith("failed    t1 (attempt 1, agent-1): agent exited with code 3 — "
                             "will retry")
    assert "\x1b" not in out.getvalue()


def test_live_status_line_counts_tasks_and_busy_agents(tmp_path):
    """In a terminal the status line shows counts by state and how many agents are busy."""
    (tmp_path / "a.toml").write_text('prompt = "x"\n')
    queue = FolderQueue(tmp_path)
    queue.ingest()
    out = io.StringIO()
    with Progress(queue, out=out, live=True, refresh_s=60) as progress:
        for n in (1, 2, 3):
            progress.on_event(FleetEvent(kind=EventKind.AGENT_STARTED, agent=f"agent-{n}"))
        progress.on_event(_event(EventKind.STARTED))
        assert progress.status_line() == (
            "pending 1 · running 0 · done 0 · failed 0 · rejected 0 · agents busy 1/3"
        )
    assert out.getvalue().endswith("agents busy 1/3\n")
    assert "\r\x1b[K" in out.getvalue()


def test_log_records_carry_the_event_and_no_status_line(tmp_path):
    """As log records, each step is one JSON line with the event's fields, notes too, and
    nothing else is written (no status line, no terminal codes)."""
    import json
    import logging

    from orchestrator.logging_setup import JsonFormatter

    out, lines = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("coordinator")  # the fleet's steps log to coordinator.fleet
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        with Progress(FolderQueue(tmp_path), out=out, live=True,
                      as_log_records=True) as progress:
            progress.on_event(_event(EventKind.FAILED, detail="agent exited with code 3",
                                     task_state=TaskState.PENDING))
            progress.note("stopping: waiting for 1 agent")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    failed, note = (json.loads(line) for line in lines.getvalue().splitlines())
    assert failed["logger"] == "coordinator.fleet"
    assert (failed["event"], failed["task_id"], failed["attempt"], failed["agent"],
            failed["task_state"]) == ("failed", "t1", 1, "agent-1", "pending")
    assert failed["message"].startswith("failed    t1 (attempt 1, agent-1)")
    assert (note["logger"], note["message"]) == ("coordinator", "stopping: waiting for 1 agent")
    assert out.getvalue() == ""
