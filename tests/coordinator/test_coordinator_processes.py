"""The `coordinator run` process itself: killed, restarted, signalled — nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from processes import ends_within

from coordinator.metrics import FLEET_STATUS_FILE, FleetStatusFile
from coordinator.queue import FolderQueue
from coordinator.task import TaskState

COORDINATOR = [sys.executable, "-m", "coordinator.cli"]


def _tasks(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i in range(n):
        (folder / f"t{i:02}.toml").write_text(f'prompt = "task {i}"\n')
    return folder


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    """Poll for a condition another process brings about (not a wait for time to pass)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_coordinator_sigkilled_and_restarted_loses_nothing_and_completes_nothing_twice(tmp_path):
    """SIGKILL mid-run, then restart: every task ends done, and each agent's work ran to its
    end exactly once (the restarted coordinator kills the dead one's orphaned agents)."""
    folder = _tasks(tmp_path, 8)
    starts, ends = tmp_path / "starts", tmp_path / "ends"
    agent = f"echo $COORDINATOR_TASK_ID >> {starts}; sleep 2; echo $COORDINATOR_TASK_ID >> {ends}"
    args = [*COORDINATOR, "run", "--tasks", str(folder), "--agents", "3", "--agent", agent,
            "--until-empty", "--no-memory"]
    first = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(_lines(starts)) >= 3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    interrupted = set(_lines(starts))

    second = subprocess.run(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True, timeout=60)
    assert second.returncode == 0, second.stderr

    queue = FolderQueue(folder)
    assert queue.counts()[TaskState.DONE] == 8
    assert sorted(_lines(ends)) == [f"t{i:02}" for i in range(8)]  # each finished once
    for task_id in interrupted:
        outcomes = [a.outcome for a in queue.get(task_id).history]
        assert outcomes == ["lease_lost", "succeeded"], (task_id, outcomes)
    assert sorted(p.name for p in (folder / "sources").iterdir()) == [
        f"t{i:02}.toml" for i in range(8)
    ]


def test_sigterm_releases_running_tasks_back_to_pending(tmp_path):
    """SIGTERM: stop claiming, kill agents after the grace period, release their tasks."""
    folder = _tasks(tmp_path, 2)
    starts = tmp_path / "starts"
    proc = subprocess.Popen(
        [*COORDINATOR, "run", "--tasks", str(folder), "--agents", "2", "--agent",
         f"echo $COORDINATOR_TASK_ID >> {starts}; sleep 300", "--grace-s", "0", "--no-memory"],
        cwd=tmp_path, stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: len(_lines(starts)) == 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    queue = FolderQueue(folder)
    for record in queue.records():
        assert record.state == TaskState.PENDING
        assert record.attempts == 0
        assert record.history[-1].outcome == "released"


def test_until_empty_exits_1_when_a_task_failed_or_a_file_was_rejected(tmp_path):
    """--until-empty: exit 0 only if every task ended done."""
    folder = _tasks(tmp_path, 1)
    ok = subprocess.run([*COORDINATOR, "run", "--tasks", str(folder), "--agent", "echo",
                         "--until-empty", "--no-memory"], cwd=tmp_path, capture_output=True)
    assert ok.returncode == 0
    (folder / "broken.toml").write_text("prompt = \n")
    bad = subprocess.run([*COORDINATOR, "run", "--tasks", str(folder), "--agent", "echo",
                          "--until-empty", "--no-memory"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert bad.returncode == 1
    assert "broken.toml:1" in bad.stderr


def test_new_files_dropped_while_running_are_picked_up(tmp_path):
    """Without --until-empty the coordinator watches the folder for new task files."""
    folder = _tasks(tmp_path, 0)
    proc = subprocess.Popen(
        [*COORDINATOR, "run", "--tasks", str(folder), "--agent", "echo", "--no-memory"],
        cwd=tmp_path, stderr=subprocess.DEVNULL,
    )
    try:
        staged = tmp_path / "late.toml"
        staged.write_text('prompt = "late arrival"\n')
        os.rename(staged, folder / "late.toml")
        _wait_for(lambda: (folder / "done" / "late.jsonl").exists())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_a_dead_coordinators_orphans_are_killed_even_outside_its_process_group(tmp_path):
    """Coordinator and supervisor both SIGKILLed (nothing left to clean up): the next reclaim
    kills the agent's shell and its setsid grandchild, found by the attempt's environment."""
    folder = _tasks(tmp_path, 1)
    escaped, shell, supervisor = tmp_path / "escaped", tmp_path / "shell", tmp_path / "sup"
    agent = (f"(setsid sh -c 'echo $$ > {escaped}; exec sleep 300' &); "
             f"echo $$ > {shell}; echo $PPID > {supervisor}; sleep 300")
    first = subprocess.Popen([*COORDINATOR, "run", "--tasks", str(folder), "--agent", agent,
                              "--no-memory"], cwd=tmp_path, stderr=subprocess.DEVNULL)
    _wait_for(lambda: all(len(_lines(p)) == 1 for p in (escaped, shell, supervisor)))
    first.send_signal(signal.SIGSTOP)  # so it cannot clean up when its supervisor dies
    os.kill(int(_lines(supervisor)[0]), signal.SIGKILL)
    first.send_signal(signal.SIGKILL)
    first.wait()
    orphans = [int(_lines(escaped)[0]), int(_lines(shell)[0])]
    assert not any(ends_within(pid, timeout_s=0.2) for pid in orphans)  # left running

    assert FolderQueue(folder).reclaim_expired() == ["t00"]
    assert all(ends_within(pid, timeout_s=10) for pid in orphans)


def test_status_json_shows_the_running_fleets_snapshot_and_forgets_it_when_it_stops(tmp_path):
    """`coordinator status --json` in another process shows the fleet's own `FleetSnapshot`
    (what /v1/status shows): two busy agents of two, two claims this minute; once the fleet
    has stopped, no fleet."""
    folder = _tasks(tmp_path, 3)
    starts = tmp_path / "starts"
    proc = subprocess.Popen(
        [*COORDINATOR, "run", "--tasks", str(folder), "--agents", "2", "--agent",
         f"echo $COORDINATOR_TASK_ID >> {starts}; sleep 300", "--grace-s", "0", "--no-memory"],
        cwd=tmp_path, stderr=subprocess.DEVNULL,
    )

    def status() -> dict:
        out = subprocess.run([*COORDINATOR, "status", "--json", "--tasks", str(folder)],
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    try:
        _wait_for(lambda: len(_lines(starts)) == 2)
        _wait_for(lambda: (status()["fleet"] or {}).get("agents_busy") == 2)
        fleet = status()["fleet"]
        assert fleet["pid"] == proc.pid
        assert fleet["agents"] == {"target": 2, "busy": 2, "idle": 0}
        assert fleet["running"] == 2 and fleet["pending"] == 1 and fleet["backlog"] == 1
        assert fleet["per_min"]["claimed"] == 2.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
    assert status()["fleet"] is None


def test_a_status_file_left_by_a_killed_fleet_is_ignored(tmp_path):
    """A fleet killed with SIGKILL cannot remove its file: a reader checks the writer lives."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".queue").mkdir()
    (tmp_path / ".queue" / FLEET_STATUS_FILE).write_text(json.dumps({"pid": dead.pid}))
    assert FleetStatusFile.read(tmp_path) is None
    (tmp_path / ".queue" / FLEET_STATUS_FILE).write_text(json.dumps({"pid": os.getpid()}))
    assert FleetStatusFile.read(tmp_path) == {"pid": os.getpid()}


def test_running_on_the_repositorys_own_tasks_folder_leaves_its_examples_alone(tmp_path):
    """`coordinator run --until-empty` over (a copy of) the repository's tasks/ moves none of
    its tracked example files, and each of them is a valid task file."""
    import shutil

    from coordinator.task import parse_task_file

    repo_tasks = Path(__file__).resolve().parents[2] / "tasks"
    folder = tmp_path / "tasks"
    shutil.copytree(repo_tasks, folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.toml")}
    assert before, "the repository ships example tasks"
    done = subprocess.run([*COORDINATOR, "run", "--tasks", str(folder), "--agent", "echo",
                           "--until-empty", "--no-memory"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.toml")
             if p.relative_to(folder).parts[0] not in ("sources", "archive", "rejected")}
    assert after == before
    for path in before:
        assert parse_task_file(folder / path)


def test_an_embedded_orchestrator_logs_in_the_orchestrators_own_style(tmp_path):
    """`run --orchestrator start`: the server's lines are single plain lines in the
    orchestrator's format (JSON with LOG_FORMAT=json), with no colour codes — not a Rich
    console wrapped around the fleet's lines. Under LOG_FORMAT=json the fleet's own lines
    are JSON lines too: every line on stderr is one JSON object."""
    folder = _tasks(tmp_path, 1)
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL")}
    env.update(PROVIDER="echo", PORT="0")
    args = [*COORDINATOR, "run", "--tasks", str(folder), "--agent", "echo", "--until-empty",
            "--no-memory", "--orchestrator", "start"]
    text = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert text.returncode == 0, text.stderr
    assert "\x1b" not in text.stderr
    assert any(" INFO    uvicorn.error: Started server process" in line
               for line in text.stderr.splitlines()), text.stderr

    (folder / "again.toml").write_text('prompt = "again"\n')
    as_json = subprocess.run(args, cwd=tmp_path, env={**env, "LOG_FORMAT": "json"},
                             capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    assert "\x1b" not in as_json.stderr and "\\u001b" not in as_json.stderr
    logged = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    assert {"uvicorn.error", "mcp.server.streamable_http_manager", "coordinator.fleet"} \
        <= {r["logger"] for r in logged}
    fleet = [(r.get("event"), r.get("task_id")) for r in logged
             if r["logger"] == "coordinator.fleet"]
    assert ("started", "again") in fleet and ("succeeded", "again") in fleet
    assert any(r["message"] == "done 2" for r in logged)


def test_ctrl_c_says_what_it_waits_for_and_a_second_one_stops_at_once(tmp_path):
    """SIGINT to a real `coordinator run` with a busy agent prints, at once, that it waits up to
    the grace period and how to skip it; a second SIGINT kills the agent and the task goes back
    to pending, long before the grace period is over."""
    folder = _tasks(tmp_path, 1)
    starts = tmp_path / "starts"
    proc = subprocess.Popen(
        [*COORDINATOR, "run", "--tasks", str(folder), "--agent",
         f"echo $COORDINATOR_TASK_ID >> {starts}; sleep 300", "--grace-s", "300",
         "--no-memory"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    _wait_for(lambda: len(_lines(starts)) == 1)
    proc.send_signal(signal.SIGINT)
    notice = ""
    while "press Ctrl-C again" not in notice:
        line = proc.stderr.readline()
        assert line, f"no notice before the output ended: {notice!r}"
        notice += line
    assert "waiting up to 300s for 1 running agent(s)" in notice
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "stopping now: killing 1 running agent(s)" in proc.stderr.read()
    [record] = FolderQueue(folder).records()
    assert record.state == TaskState.PENDING and record.history[-1].outcome == "released"
