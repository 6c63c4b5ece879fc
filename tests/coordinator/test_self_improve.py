"""`coordinator --self-improve` end to end, as real processes on a scratch repository.

The coordinator runs as a subprocess with the echo provider and an injected fault schedule;
the test sends the traffic, a scripted agent (a shell command) makes the change, and the gate
runs real pytest and ruff in the worktree. Waits are for events, each with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from gitrepo import git, make_repo
from processes import ends_within

from coordinator.self_improve import LoopLock, read_status
from memory_db import AgentMemory, ModificationOutcome, ModificationRecord

DEADLINE_S = 120.0  # generous: two cores shared with the rest of the suite

BENCH = "import json, os\nprint(json.dumps({'calc_bytes': os.path.getsize('calc.py')}))\n"
"""The gate's bench: a real measurement of the worktree it runs in."""


def gate_config(root: Path) -> str:
    (root / "bench.py").write_text(BENCH)
    py = sys.executable
    return (
        "[gate]\ncommands = [\n"
        f'  {{ name = "pytest", command = "{py} -m pytest -q -p no:cacheprovider" }},\n'
        f'  {{ name = "ruff", command = "{py} -m ruff check --no-cache ." }},\n'
        "]\n"
        f'bench = {{ command = "{py} {root / "bench.py"}" }}\n'
    )


COMMENT = "# the scripted agent was here\n"
ADD_COMMENT = f"printf '{COMMENT.strip()}\\n' >> calc.py"
BREAK_RUFF = "printf 'import os\\n' | cat - calc.py > c.tmp && mv c.tmp calc.py"


def wait_for(what: str, check: Callable[[], object], timeout_s: float = DEADLINE_S) -> object:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Coordinator:
    """`coordinator` as a child process, its stderr collected line by line."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("COORDINATOR_", "ECHO_", "API_KEY", "ADMIN_API_KEY"))}
        environ.update({"PROVIDER": "echo", "PORT": "0", **(env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", *args], cwd=cwd, env=environ,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def url(self) -> str:
        line = wait_for("the orchestrator's URL", lambda: next(
            (ln for ln in self.lines if ln.startswith("orchestrator: serving on ")), None)
            or self.proc.poll() is not None)
        assert isinstance(line, str), f"the coordinator exited:\n{self.stderr}"
        return line.split()[3]

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return code

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Traffic:
    """Distinct prompts (no cache or dedup hits) sent to the orchestrator until stopped."""

    def __init__(self, url: str) -> None:
        self.url, self.sent = url, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                client.post("/v1/prompt", json={"input": f"prompt number {self.sent}"})
                self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """tmp/project (the user's checkout), tmp/tasks, tmp/coordinator.toml with a [gate]."""
    make_repo(tmp_path / "project")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "coordinator.toml").write_text(
        f'tasks = "tasks"\ndb = "sqlite:///{tmp_path}/memory.db"\n'
        # these tests are about the gate: no static-findings task may join the ones they drop
        "[self_improve]\nstatic_findings = false\n" + gate_config(tmp_path))
    return tmp_path


def modifications(root: Path) -> list[ModificationRecord]:
    with AgentMemory(f"sqlite:///{root}/memory.db") as memory:
        # the gated attempts' records (the tuner's changes are modifications too, taskless)
        return [m for m in memory.modifications() if m.task_id is not None]


def loop_args(root: Path) -> list[str]:
    return ["--self-improve", "--repo", str(root / "project")]


def worktrees(repo: Path) -> list[str]:
    return [ln for ln in git(repo, "worktree", "list", "--porcelain").splitlines()
            if ln.startswith("worktree ")]


def gated_task(root: Path, name: str = "fix") -> None:
    (root / "tasks" / f"{name}.toml").write_text(
        f'prompt = "make a small change"\ngate = true\nmax_attempts = 1\nid = "{name}"\n')


def test_an_upstream_fault_becomes_a_merged_change_recorded_in_memory(project: Path) -> None:
    """Healthy traffic, then the upstream fails half its calls: the loop writes a meta-task, the
    scripted agent changes the code in a worktree, the gate passes, the change is merged,
    and the memory holds a Deployed record with the bench's measured delta."""
    repo = project / "project"
    before = git(repo, "rev-parse", "main")
    run = Coordinator(project, *loop_args(project), "--merge", "auto",
                      "--telemetry-interval-s", "0.5", "--agent", ADD_COMMENT,
                      env={"ECHO_FAULTS": "40:0.5"})
    try:
        traffic = Traffic(run.url())
        deployed = wait_for("a Deployed modification", lambda: [
            m for m in modifications(project) if m.outcome is ModificationOutcome.DEPLOYED])
        traffic.stop()
        assert run.interrupt() == 130, run.stderr
    finally:
        run.kill()
    meta = [p for p in (project / "tasks" / "sources").glob("*.toml")]
    assert meta, run.stderr
    written = meta[0].read_text()
    assert 'created_by = "self-improve"' in written and "gate = true" in written
    assert "upstream_error_rate" in written
    (mod,) = deployed
    assert mod.task_id is not None and mod.task_id.startswith("si-")
    assert [(v["name"], v["passed"]) for v in mod.verdicts] == [
        ("pytest", True), ("ruff", True), ("bench (target)", True), ("bench (branch)", True)]
    assert mod.metric_deltas["calc_bytes"] == len(COMMENT)
    assert git(repo, "rev-parse", "main") != before
    assert COMMENT.strip() in (repo / "calc.py").read_text()
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout is clean
    assert len(worktrees(repo)) == 1  # the attempt's worktree is gone
    status = read_status(project / "tasks")
    assert status is not None
    assert any(a["metric"] == "upstream_error_rate" for a in status["anomalies"])


def test_a_change_that_breaks_ruff_fails_validation_and_merges_nothing(project: Path) -> None:
    repo = project / "project"
    before = git(repo, "rev-parse", "main")
    gated_task(project)
    run = Coordinator(project, *loop_args(project), "--merge", "auto", "--until-empty",
                      "--agent", BREAK_RUFF)
    assert run.wait() == 1, run.stderr
    (mod,) = modifications(project)
    assert mod.outcome is ModificationOutcome.VALIDATION_FAILED
    assert [(v["name"], v["passed"]) for v in mod.verdicts] == [("pytest", True), ("ruff", False)]
    assert git(repo, "rev-parse", "main") == before
    assert git(repo, "status", "--porcelain") == ""
    assert len(worktrees(repo)) == 1


def test_an_agent_that_changes_nothing_is_rejected(project: Path) -> None:
    gated_task(project)
    run = Coordinator(project, *loop_args(project), "--until-empty", "--agent", "true")
    assert run.wait() == 1, run.stderr
    (mod,) = modifications(project)
    assert mod.outcome is ModificationOutcome.REJECTED


def test_review_keeps_the_branch_until_gate_merge(project: Path) -> None:
    """--merge review: the gate passes, the branch waits; `coordinator gate merge` lands it."""
    repo = project / "project"
    before = git(repo, "rev-parse", "main")
    gated_task(project)
    run = Coordinator(project, *loop_args(project), "--merge", "review", "--until-empty",
                      "--agent", ADD_COMMENT)
    assert run.wait() == 0, run.stderr
    (mod,) = modifications(project)
    assert mod.outcome is ModificationOutcome.IN_PROGRESS
    assert git(repo, "rev-parse", "main") == before
    assert mod.branch is not None and git(repo, "rev-parse", "--verify", mod.branch)

    listed = cli(project, "gate", "list", "--json")
    assert [row["task"] for row in json.loads(listed.stdout)] == ["fix"]
    merged = cli(project, "gate", "merge", "fix", "--repo", str(repo))
    assert merged.returncode == 0, merged.stderr
    assert git(repo, "rev-parse", "main") != before
    assert COMMENT.strip() in (repo / "calc.py").read_text()
    (mod,) = modifications(project)
    assert mod.outcome is ModificationOutcome.DEPLOYED
    assert json.loads(cli(project, "gate", "list", "--json").stdout) == []


def test_discard_deletes_the_waiting_branch(project: Path) -> None:
    repo = project / "project"
    gated_task(project)
    run = Coordinator(project, *loop_args(project), "--until-empty", "--agent", ADD_COMMENT)
    assert run.wait() == 0, run.stderr
    (mod,) = modifications(project)
    discarded = cli(project, "gate", "discard", "fix", "--repo", str(repo))
    assert discarded.returncode == 0, discarded.stderr
    assert mod.branch not in git(repo, "branch", "--list")
    assert modifications(project)[0].outcome is ModificationOutcome.REJECTED


def test_a_second_loop_on_the_folder_says_who_holds_it_and_only_gates(project: Path) -> None:
    """Two coordinators on one folder: the second runs no loop, but the gated task its agent
    takes still goes through its gate (never failed for want of one)."""
    gated_task(project)
    with LoopLock(project / "tasks"):
        run = Coordinator(project, *loop_args(project), "--until-empty", "--agent", ADD_COMMENT)
        assert run.wait() == 0, run.stderr
    assert f"for this folder runs in pid {os.getpid()}" in run.stderr
    assert "runs no loop" in run.stderr and "watching" not in run.stderr
    (mod,) = modifications(project)
    assert mod.outcome is ModificationOutcome.IN_PROGRESS, run.stderr
    assert read_status(project / "tasks") is None  # no loop here to show


def test_one_loop_leads_a_redis_queue_and_every_coordinator_on_it_gates(
    project: Path, redis_queue_url: str
) -> None:
    """Machines sharing a Redis queue: while another process leads the queue's loop, a
    coordinator says which, runs no loop, and still validates the gated tasks it takes; once
    the lease is free, the next coordinator leads."""
    import redis

    from coordinator.self_improve import LeaderLease

    url, _, name = redis_queue_url.partition("#")
    client = redis.Redis.from_url(url)
    shared = (*loop_args(project), "--queue", redis_queue_url, "--tasks", "there")
    (project / "there").mkdir()
    gated_task(project)
    (project / "tasks" / "fix.toml").rename(project / "there" / "fix.toml")
    with LeaderLease(client, f"coordinator:{name}:self-improve"):
        run = Coordinator(project, *shared, "--until-empty", "--agent", ADD_COMMENT)
        assert run.wait() == 0, run.stderr
    assert f"for this queue runs in pid {os.getpid()} on" in run.stderr
    assert "runs no loop" in run.stderr and "watching" not in run.stderr
    (mod,) = modifications(project)  # the gate ran here: the change waits for review
    assert mod.outcome is ModificationOutcome.IN_PROGRESS, run.stderr
    assert [v["name"] for v in mod.verdicts][:2] == ["pytest", "ruff"]
    assert client.get(f"coordinator:{name}:self-improve") is None
    leader = Coordinator(project, *shared, "--until-empty")
    assert leader.wait() == 0, leader.stderr
    assert "self-improve: watching every" in leader.stderr
    client.close()


def test_a_coordinator_without_the_loop_takes_it_over_when_its_holder_ends(
    project: Path,
) -> None:
    """The loop's holder goes away: the coordinator that ran only the gate starts the loop."""
    toml = project / "coordinator.toml"
    toml.write_text(toml.read_text().replace("[self_improve]\n",
                                             "[self_improve]\ntakeover_every_s = 0.2\n"))
    holder = LoopLock(project / "tasks")
    holder.acquire()
    run = Coordinator(project, *loop_args(project))
    try:
        wait_for("the coordinator to run without the loop", lambda: "runs no loop" in run.stderr
                 or run.proc.poll() is not None)
        assert read_status(project / "tasks") is None
        holder.release()  # the loop's holder ends
        wait_for("the coordinator to take the loop over",
                 lambda: read_status(project / "tasks") or run.proc.poll() is not None)
        assert "runs the loop now" in run.stderr
        assert run.interrupt() == 130, run.stderr
    finally:
        holder.release()
        run.kill()
    with LoopLock(project / "tasks"):  # it let the lock go when it ended
        pass


def test_a_leader_that_lost_the_queues_lease_steps_down_and_leads_again_when_it_is_free(
    project: Path, redis_queue_url: str
) -> None:
    """Its lease taken from it (another holder, or Redis gone past the lease), a leader
    stops its loop and goes on as a fleet with its gate; once the lease is free again, it
    leads again."""
    import redis

    url, _, name = redis_queue_url.partition("#")
    client = redis.Redis.from_url(url)
    key = f"coordinator:{name}:self-improve"
    toml = project / "coordinator.toml"
    toml.write_text(toml.read_text().replace(
        "[self_improve]\n", "[self_improve]\ntakeover_every_s = 0.2\nlease_s = 0.6\n"))
    (project / "there").mkdir()
    run = Coordinator(project, *loop_args(project), "--queue", redis_queue_url,
                      "--tasks", "there")
    try:
        wait_for("the coordinator to lead", lambda: "self-improve: watching every" in run.stderr
                 or run.proc.poll() is not None)
        client.set(key, "another process (intruder)", px=60_000)  # the lease is someone else's
        wait_for("the leader to step down", lambda: "lease on the queue is lost" in run.stderr
                 or run.proc.poll() is not None)
        assert "another process holds it now" in run.stderr
        assert "runs the loop now" not in run.stderr
        client.delete(key)  # the other holder let go
        wait_for("the coordinator to lead again", lambda: "runs the loop now" in run.stderr
                 or run.proc.poll() is not None)
        assert client.get(key).decode().startswith(f"pid {run.proc.pid} ")
        assert run.interrupt() == 130, run.stderr
        assert client.get(key) is None  # it let the lease go when it ended
    finally:
        run.kill()
        client.close()


def test_dry_run_detects_but_writes_no_task(project: Path) -> None:
    run = Coordinator(project, *loop_args(project), "--dry-run", "--telemetry-interval-s", "0.5",
                      env={"ECHO_FAULTS": "20:0.5"})
    try:
        traffic = Traffic(run.url())
        wait_for("an anomaly in the loop's status", lambda: (read_status(project / "tasks")
                                                             or {}).get("anomalies"))
        traffic.stop()
        assert run.interrupt() == 130, run.stderr
    finally:
        run.kill()
    status = read_status(project / "tasks")
    assert status is not None and status["dry_run"]
    assert all(a["action"].startswith("dry run") for a in status["anomalies"])
    assert not list((project / "tasks").glob("*.toml"))
    assert not (project / "tasks" / "sources").exists() or not list(
        (project / "tasks" / "sources").glob("si-*"))


def test_killed_mid_gate_the_attempt_is_retried_never_deployed_unchecked(project: Path) -> None:
    """SIGKILL while the gate runs: on restart the stale worktree is removed and the task runs
    again from a fresh one; nothing is recorded Deployed without a passing gate."""
    repo = project / "project"
    started, release = project / "gate-started", project / "gate-may-pass"
    (project / "slow_check.py").write_text(
        "import os, pathlib, sys, time\n"
        f"if pathlib.Path({str(release)!r}).exists(): sys.exit(0)\n"
        f"pathlib.Path({str(started)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(600)\n")
    config = project / "coordinator.toml"
    config.write_text(config.read_text().replace("[gate]\ncommands = [\n", (
        "[gate]\ncommands = [\n"
        f'  {{ name = "slow", command = "{sys.executable} {project / "slow_check.py"}" }},\n')))
    (project / "tasks" / "fix.toml").write_text(
        'id = "fix"\nprompt = "make a small change"\ngate = true\n')
    first = Coordinator(project, *loop_args(project), "--merge", "auto", "--agent", ADD_COMMENT,
                        "--lease-s", "2")
    try:
        wait_for("the gate to start", started.exists)
        first.proc.kill()
        first.wait()
    finally:
        first.kill()
    orphan = int(wait_for("the slow check's pid", started.read_text))
    os.kill(orphan, signal.SIGKILL)  # what the dead coordinator's gate left running
    assert ends_within(orphan)
    assert not [m for m in modifications(project) if m.outcome is ModificationOutcome.DEPLOYED]
    release.touch()  # the restarted gate's slow check passes at once
    second = Coordinator(project, *loop_args(project), "--merge", "auto", "--agent", ADD_COMMENT,
                         "--until-empty", "--lease-s", "2")
    try:
        assert second.wait() == 0, second.stderr
    finally:
        second.kill()
    deployed = [m for m in modifications(project) if m.outcome is ModificationOutcome.DEPLOYED]
    assert len(deployed) == 1
    assert all(v["passed"] for v in deployed[0].verdicts)
    assert len(worktrees(repo)) == 1
    assert git(repo, "status", "--porcelain") == ""


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=root,
                          capture_output=True, text=True, timeout=DEADLINE_S)


def test_gate_commands_never_see_the_provider_key(project: Path) -> None:
    """The coordinator holds ANTHROPIC_API_KEY; a gate command that finds it in its
    environment fails, so a Deployed outcome proves it was not there."""
    config = project / "coordinator.toml"
    config.write_text(config.read_text().replace("[gate]\ncommands = [\n", (
        "[gate]\ncommands = [\n"
        '  { name = "no-key", command = "test -z \\"$ANTHROPIC_API_KEY$OPENAI_API_KEY\\"" },\n')))
    gated_task(project)
    run = Coordinator(project, *loop_args(project), "--merge", "auto", "--until-empty",
                      "--agent", ADD_COMMENT,
                      env={"ANTHROPIC_API_KEY": "sk-ant-canary-0123456789"})
    assert run.wait() == 0, run.stderr
    (mod,) = modifications(project)
    assert mod.outcome is ModificationOutcome.DEPLOYED
    assert mod.verdicts[0]["name"] == "no-key" and mod.verdicts[0]["passed"]
    assert "sk-ant-canary" not in run.stderr


def test_two_folders_loops_on_one_repository_keep_each_others_worktrees(project: Path) -> None:
    """Two `--self-improve` processes, two task folders, one repository, a task "fix" in
    each: the second's start-up recovery leaves the first's live worktree alone, and the
    second's attempt takes a branch of its own instead of moving the first's aside."""
    repo = project / "project"
    started, release = project / "a-started", project / "a-release"
    blocking = (f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done; "
                f"{ADD_COMMENT}")
    gated_task(project)
    other = project / "other"
    (other / "tasks").mkdir(parents=True)
    (other / "coordinator.toml").write_text(
        (project / "coordinator.toml").read_text().replace(
            f"sqlite:///{project}/memory.db", f"sqlite:///{other}/memory.db"))
    gated_task(other)
    first = Coordinator(project, *loop_args(project), "--until-empty", "--agent", blocking)
    try:
        wait_for("the first loop's agent to start", started.exists)
        [a_tree] = [ln.split(" ", 1)[1] for ln in worktrees(repo) if "self-improve" in ln]
        second = Coordinator(other, *loop_args(project), "--until-empty", "--agent",
                             ADD_COMMENT)
        try:
            assert second.wait() == 0, second.stderr
        finally:
            second.kill()
        assert Path(a_tree).is_dir()  # the first loop's attempt still has its worktree
        assert git(Path(a_tree), "rev-parse", "--abbrev-ref", "HEAD") == "self-improve/fix-1"
        release.touch()
        assert first.wait() == 0, first.stderr
    finally:
        release.touch()
        first.kill()
    (a_mod,) = modifications(project)
    (b_mod,) = modifications(other)
    assert a_mod.outcome is b_mod.outcome is ModificationOutcome.IN_PROGRESS  # review waits
    assert a_mod.branch == "self-improve/fix-1"
    assert b_mod.branch is not None and b_mod.branch.startswith("self-improve/fix-1-")
    assert b_mod.branch != a_mod.branch
    assert git(repo, "rev-parse", a_mod.branch) == a_mod.commit
    assert git(repo, "rev-parse", b_mod.branch) == b_mod.commit
    assert len(worktrees(repo)) == 1  # both attempts' worktrees are gone
