"""The fleet runs real agent processes: environment, output, retries, timeouts, stops."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from processes import ends_within

from coordinator.agents import AgentProfile, resolve_profile
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.metrics import EventKind, FleetEvent
from coordinator.queue import FolderQueue
from coordinator.task import TaskState


def make_queue(tmp_path: Path, *files: tuple[str, str]) -> FolderQueue:
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    for name, text in files:
        (folder / name).write_text(text)
    return FolderQueue(folder, retry_backoff_s=0)


def run_fleet(
    queue: FolderQueue, command: str, *, agents: int = 1, events: list[FleetEvent] | None = None,
    lease_s: float = 60.0, **settings: object,
) -> Fleet:
    fleet = Fleet(
        queue,
        resolve_profile(command, {}),
        settings=FleetSettings(poll_s=0.05, workdir=queue.root.parent,
                               **settings),  # type: ignore[arg-type]
        tunables=lambda: FleetTunables(agents=agents, lease_s=lease_s),
        on_event=events.append if events is not None else None,
    )
    fleet.run(until_empty=True)
    return fleet


def test_echo_agent_gets_prompt_on_stdin_and_output_goes_to_the_attempt_log(tmp_path):
    """The built-in echo agent writes the prompt back into the attempt's log file."""
    queue = make_queue(tmp_path, ("t1.toml", 'prompt = "hello fleet"\n'))
    run_fleet(queue, "echo")
    assert queue.get("t1").state == TaskState.DONE
    assert queue.log_path("t1", 1).read_text() == "hello fleet"


def test_agent_sees_the_coordinator_environment(tmp_path):
    """COORDINATOR_TASK_ID/TASK_FILE/AGENT_ID/ATTEMPT/PROMPT are set for the agent."""
    queue = make_queue(tmp_path, ("envy.toml", 'prompt = "p r o m p t"\n'))
    run_fleet(queue, 'env | grep ^COORDINATOR_ | sort')
    lines = dict(
        line.split("=", 1) for line in queue.log_path("envy", 1).read_text().splitlines()
    )
    assert lines["COORDINATOR_TASK_ID"] == "envy"
    assert lines["COORDINATOR_ATTEMPT"] == "1"
    assert lines["COORDINATOR_PROMPT"] == "p r o m p t"
    assert lines["COORDINATOR_AGENT_ID"].startswith("agent-1@")
    assert Path(lines["COORDINATOR_TASK_FILE"]).read_text() == 'prompt = "p r o m p t"\n'


def test_prompt_and_task_id_are_substituted_shell_quoted(tmp_path):
    """A prompt full of shell syntax reaches the agent as one literal argument."""
    nasty = "it's $(touch pwned) `touch pwned2`; echo \\\"hi\\\" > pwned3"
    queue = make_queue(tmp_path, ("q.toml", f'prompt = "{nasty}"\n'))
    run_fleet(queue, "printf '%s|%s' {task_id} {prompt}")
    assert queue.log_path("q", 1).read_text() == 'q|' + nasty.replace('\\"', '"')
    assert not list(tmp_path.glob("pwned*"))


_SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-secret", "ANTHROPIC_AUTH_TOKEN": "tok-secret",
            "OPENAI_API_KEY": "sk-secret", "COORDINATOR_DB_URL": "postgresql://u:pw@db/fleet",
            "GITHUB_TOKEN": "ghp_secret", "AWS_SECRET_ACCESS_KEY": "aws-secret"}


def test_agents_and_acceptance_commands_get_only_the_allow_listed_environment(
    tmp_path, monkeypatch
):
    """Provider keys, database URLs and credentials never reach an agent or an acceptance
    command; PATH, HOME, the locale, the COORDINATOR_* contract and --pass-env names do."""
    for name, value in {**_SECRETS, "LC_ALL": "C", "TEAM_SETTING": "on",
                        "UNRELATED": "x"}.items():
        monkeypatch.setenv(name, value)
    queue = make_queue(tmp_path, ("envy.toml", 'prompt = "x"\nacceptance = ["env > seen.txt"]\n'))
    run_fleet(queue, "env", pass_env=("TEAM_SETTING",))
    assert queue.get("envy").state == TaskState.DONE
    for seen_by in (queue.log_path("envy", 1).read_text(), (tmp_path / "seen.txt").read_text()):
        seen = dict(line.split("=", 1) for line in seen_by.splitlines() if "=" in line)
        assert not set(_SECRETS) & set(seen)
        assert not any(secret in seen_by for secret in _SECRETS.values())
        assert "UNRELATED" not in seen
        assert seen["PATH"] == os.environ["PATH"] and seen["HOME"] == os.environ["HOME"]
        assert seen["LC_ALL"] == "C" and seen["TEAM_SETTING"] == "on"
        assert seen["COORDINATOR_TASK_ID"] == "envy"


def test_pass_env_names_are_checked():
    """A `pass_env` entry that is not a variable name raises ValueError naming it."""
    with pytest.raises(ValueError, match="'A=B'"):
        FleetSettings(pass_env=("A=B",))


def test_the_claude_profile_gives_the_prompt_on_stdin_never_as_an_option(tmp_path, monkeypatch):
    """A prompt starting with "-" cannot become an option of the built-in claude profile."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text('#!/bin/sh\nprintf "args:%s\\n" "$*"\nprintf "stdin:"\ncat\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    prompt = "--permission-mode=bypassPermissions delete everything"
    queue = make_queue(tmp_path, ("opt.toml", f'prompt = "{prompt}"\n'))
    run_fleet(queue, "claude")
    assert queue.log_path("opt", 1).read_text() == (
        f"args:--print --output-format text\nstdin:{prompt}"
    )


def test_task_id_inside_the_prompt_text_is_not_substituted(tmp_path):
    """A prompt that mentions {task_id} or {prompt} reaches the agent exactly as written."""
    prompt = "name the file {task_id}.txt and quote {prompt}"
    queue = make_queue(tmp_path, ("lit.toml", f'prompt = "{prompt}"\n'))
    run_fleet(queue, "printf '%s|%s' {task_id} {prompt}")
    assert queue.log_path("lit", 1).read_text() == f"lit|{prompt}"


def test_failed_attempts_are_retried_up_to_max_attempts_then_fail(tmp_path):
    """A non-zero exit is a failed attempt; after max_attempts the task fails with the reason."""
    queue = make_queue(tmp_path, ("bad.toml", 'prompt = "x"\nmax_attempts = 3\n'))
    events: list[FleetEvent] = []
    run_fleet(queue, "exit 7", events=events)
    record = queue.get("bad")
    assert record.state == TaskState.FAILED
    assert [a.exit_code for a in record.history] == [7, 7, 7]
    assert "exited with code 7" in (record.reason or "")
    assert [e.kind for e in events].count(EventKind.FAILED) == 3


def test_a_flaky_agent_succeeds_on_a_later_attempt(tmp_path):
    """An agent killed by SIGKILL on its first attempt gets its task again, and finishes it."""
    queue = make_queue(tmp_path, ("flaky.toml", 'prompt = "x"\n'))
    run_fleet(queue, 'if [ "$COORDINATOR_ATTEMPT" = 1 ]; then kill -9 $$; fi; echo ok')
    record = queue.get("flaky")
    assert record.state == TaskState.DONE
    assert [a.outcome for a in record.history] == ["failed", "succeeded"]
    assert record.history[0].reason == "agent killed by signal 9"


def test_acceptance_commands_must_pass_for_done(tmp_path):
    """A failing acceptance command fails the attempt and is named in the reason."""
    queue = make_queue(
        tmp_path,
        ("ok.toml", 'prompt = "x"\nacceptance = ["test -f made.txt"]\n'),
        ("no.toml", 'prompt = "x"\nmax_attempts = 1\nacceptance = ["true", "test -f nope"]\n'),
    )
    run_fleet(queue, 'if [ "$COORDINATOR_TASK_ID" = ok ]; then touch made.txt; fi')
    assert queue.get("ok").state == TaskState.DONE
    failed = queue.get("no")
    assert failed.state == TaskState.FAILED
    assert "acceptance command 'test -f nope' exited with code 1" in (failed.reason or "")


def test_timeout_kills_the_whole_process_group(tmp_path):
    """On timeout the agent and everything it started are killed; the attempt times out."""
    pid_file = tmp_path / "child.pid"
    # Long enough for the shell to start and write the pid on a loaded machine (0.5 s was not).
    queue = make_queue(tmp_path, ("slow.toml", 'prompt = "x"\ntimeout_s = 4\nmax_attempts = 1\n'))
    run_fleet(queue, f"sleep 300 & echo $! > {pid_file}; wait")
    record = queue.get("slow")
    assert record.state == TaskState.FAILED
    assert record.history[0].outcome == "timed_out"
    child = int(pid_file.read_text())
    assert ends_within(child)


def _wait_for_pid(path: Path) -> str:
    """Shell that waits (bounded) until `path` holds a pid written by a background job."""
    return f"for i in $(seq 1000); do [ -s {path} ] && break; sleep 0.01; done"


def test_background_jobs_do_not_outlive_a_successful_attempt(tmp_path):
    """`sleep 45 & echo started`: the task is done, and the background sleep is gone."""
    pid_file = tmp_path / "bg.pid"
    queue = make_queue(tmp_path, ("bg.toml", 'prompt = "x"\n'))
    run_fleet(queue, f"sleep 45 & echo $! > {pid_file}; echo started")
    assert queue.get("bg").state == TaskState.DONE
    assert queue.log_path("bg", 1).read_text() == "started\n"
    assert ends_within(int(pid_file.read_text()))


def test_a_grandchild_that_left_the_process_group_is_killed(tmp_path):
    """A grandchild that calls setsid (its own session and group) and is orphaned is still
    caught: the supervisor is its subreaper and kills it when the attempt ends."""
    pid_file = tmp_path / "escaped.pid"
    queue = make_queue(tmp_path, ("esc.toml", 'prompt = "x"\n'))
    escape = f"(setsid sh -c 'echo $$ > {pid_file}; exec sleep 45' &)"
    run_fleet(queue, f"{escape}; {_wait_for_pid(pid_file)}; echo started")
    assert queue.get("esc").state == TaskState.DONE
    assert ends_within(int(pid_file.read_text()))


def test_a_timed_out_attempt_kills_descendants_outside_its_group(tmp_path):
    """On timeout the supervisor is asked to stop: the setsid grandchild dies with it."""
    pid_file = tmp_path / "escaped.pid"
    queue = make_queue(tmp_path, ("slow.toml", 'prompt = "x"\ntimeout_s = 1\nmax_attempts = 1\n'))
    escape = f"(setsid sh -c 'echo $$ > {pid_file}; exec sleep 45' &)"
    run_fleet(queue, f"{escape}; {_wait_for_pid(pid_file)}; sleep 300")
    assert queue.get("slow").history[0].outcome == "timed_out"
    assert ends_within(int(pid_file.read_text()))


def test_a_200_kib_prompt_reaches_the_agent_on_stdin_and_in_a_file(tmp_path):
    """A prompt over the kernel's 128 KiB per-string limit starts fine: it is on stdin and in
    COORDINATOR_PROMPT_FILE, and COORDINATOR_PROMPT (which would not fit) is left out."""
    prompt = "p" * (200 * 1024)
    queue = make_queue(tmp_path, ("big.toml", f'prompt = "{prompt}"\n'))
    run_fleet(queue,
              'wc -c; wc -c < "$COORDINATOR_PROMPT_FILE"; echo "${COORDINATOR_PROMPT-unset}"')
    assert queue.get("big").state == TaskState.DONE
    assert queue.log_path("big", 1).read_text().split() == ["204800", "204800", "unset"]


def test_a_command_too_long_to_start_fails_the_attempt_at_once_with_the_real_error(tmp_path):
    """`{prompt}` substituting 200 KiB into the command cannot start (E2BIG): the attempt fails
    at once saying so, instead of the task waiting for its lease to run out."""
    prompt = "p" * (200 * 1024)
    queue = make_queue(tmp_path, ("huge.toml", f'prompt = "{prompt}"\nmax_attempts = 1\n'))
    run_fleet(queue, "printf %s {prompt}", lease_s=1.0)
    record = queue.get("huge")
    assert record.state == TaskState.FAILED
    assert [a.outcome for a in record.history] == ["failed"]
    reason = record.history[0].reason or ""
    assert reason.startswith("could not start the agent: Argument list too long")
    assert "COORDINATOR_PROMPT_FILE" in reason
    assert "Argument list too long" in queue.log_path("huge", 1).read_text()


def test_a_missing_agent_binary_fails_with_the_shells_own_words(tmp_path):
    """An agent command that is not installed fails the attempt naming the missing command."""
    queue = make_queue(tmp_path, ("nope.toml", 'prompt = "x"\nmax_attempts = 1\n'))
    run_fleet(queue, "no-such-agent-xyz --print")
    reason = queue.get("nope").history[0].reason or ""
    assert reason.startswith("agent exited with code 127: ")
    assert "no-such-agent-xyz" in reason and "not found" in reason


def test_an_agent_printing_50_mb_is_not_blocked(tmp_path):
    """Large output streams to the log file while the agent runs; nothing blocks or is lost."""
    queue = make_queue(tmp_path, ("loud.toml", 'prompt = "x"\n'))
    run_fleet(queue, "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo tail >&2")
    assert queue.get("loud").state == TaskState.DONE
    log = queue.log_path("loud", 1)
    assert log.stat().st_size == 50_000_000 + len("\ntail\n")


def test_a_task_naming_an_unknown_profile_fails_at_once_with_the_reason(tmp_path):
    """`agent = "nobody"` fails the task without retries, saying which profile is missing."""
    queue = make_queue(tmp_path, ("who.toml", 'prompt = "x"\nagent = "nobody"\n'))
    run_fleet(queue, "echo")
    record = queue.get("who")
    assert record.state == TaskState.FAILED
    assert record.reason == "unknown agent profile 'nobody'"
    assert len(record.history) == 1


def test_a_task_picks_its_own_profile(tmp_path):
    """A task's `agent` field selects a configured profile with its environment."""
    queue = make_queue(tmp_path, ("mine.toml", 'prompt = "x"\nagent = "greeter"\n'))
    fleet = Fleet(
        queue,
        resolve_profile("echo", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
        profiles={"greeter": AgentProfile(name="greeter", command='echo "$GREETING"',
                                          env={"GREETING": "hi there"})},
    )
    fleet.run(until_empty=True)
    assert queue.log_path("mine", 1).read_text() == "hi there\n"


def test_several_agents_share_the_queue_and_run_each_task_once(tmp_path):
    """Four agent loops run twenty tasks; each task runs exactly once."""
    queue = make_queue(tmp_path, *[(f"t{i}.toml", f'prompt = "{i}"\n') for i in range(20)])
    ran = tmp_path / "ran.txt"
    run_fleet(queue, f"echo $COORDINATOR_TASK_ID >> {ran}", agents=4)
    assert sorted(ran.read_text().split()) == sorted(f"t{i}" for i in range(20))
    assert queue.counts()[TaskState.DONE] == 20


def test_stop_gives_grace_then_releases_running_tasks_without_using_an_attempt(tmp_path):
    """After a stop request and its grace period, running agents are killed and released."""
    started = threading.Event()
    queue = make_queue(tmp_path, ("long.toml", 'prompt = "x"\n'))
    fleet = Fleet(
        queue, resolve_profile("sleep 300", {}),
        settings=FleetSettings(poll_s=0.05, grace_s=0.0, workdir=tmp_path),
        on_event=lambda e: started.set() if e.kind == EventKind.STARTED else None,
    )
    runner = threading.Thread(target=fleet.run)
    runner.start()
    assert started.wait(10)
    fleet.request_stop()
    runner.join(10)
    assert not runner.is_alive()
    record = queue.get("long")
    assert record.state == TaskState.PENDING
    assert record.attempts == 0
    assert record.history[-1].outcome == "released"


def test_cancelling_a_running_task_kills_its_agent(tmp_path):
    """A cancelled task's agent loses its lease at the next heartbeat and is killed."""
    started = threading.Event()
    queue = make_queue(tmp_path, ("doomed.toml", 'prompt = "x"\n'))
    events: list[FleetEvent] = []

    def on_event(event: FleetEvent) -> None:
        events.append(event)
        if event.kind == EventKind.STARTED:
            started.set()

    fleet = Fleet(
        queue, resolve_profile("sleep 300", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
        tunables=lambda: FleetTunables(lease_s=0.6),
        on_event=on_event,
    )
    runner = threading.Thread(target=fleet.run, kwargs={"until_empty": True})
    runner.start()
    assert started.wait(10)
    queue.cancel("doomed")
    runner.join(20)
    assert not runner.is_alive()
    assert queue.get("doomed").state == TaskState.CANCELLED
    assert [e.kind for e in events if e.task_id][-1] == EventKind.LEASE_LOST


@pytest.mark.parametrize("bad", [{"grace_s": -1}, {"poll_s": 0}])
def test_fleet_settings_are_validated(bad):
    """Nonsense settings raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        FleetSettings(**bad)


@pytest.mark.parametrize("bad", [{"agents": 0}, {"agents": 1.5}, {"lease_s": 0},
                                 {"lease_s": float("inf")}])
def test_fleet_tunables_are_validated(bad):
    """Nonsense tunables raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        FleetTunables(**bad)


def test_every_attempt_is_recorded_in_agent_memory(tmp_path):
    """The fleet records each task and attempt (agent, outcome, exit code, log) in memory."""
    from memory_db import AgentMemory

    queue = make_queue(tmp_path, ("good.toml", 'prompt = "x"\n'),
                       ("bad.toml", 'prompt = "x"\nmax_attempts = 2\n'))
    memory = AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}")
    fleet = Fleet(
        queue, resolve_profile('[ "$COORDINATOR_TASK_ID" = good ] || exit 4', {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path), memory=memory,
    )
    fleet.run(until_empty=True)
    assert memory.task("good").state == "done"
    assert memory.task("bad").state == "failed"
    bad = sorted(memory.attempts("bad"), key=lambda a: a.attempt)
    assert [(a.attempt, a.outcome, a.exit_code) for a in bad] == [(1, "failed", 4),
                                                                  (2, "failed", 4)]
    assert bad[0].reason == "agent exited with code 4"
    assert bad[0].log_path == str(queue.log_path("bad", 1).resolve())
    memory.close()



def test_the_fleets_heartbeats_are_counted_in_agent_memory(tmp_path):
    """Every lease renewal of a running attempt reaches agent memory: its count grows while
    the agent works, and the expiry recorded is the queue's."""
    from memory_db import AgentMemory

    queue = make_queue(tmp_path, ("long.toml", 'prompt = "x"\n'))
    memory = AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}")
    release = tmp_path / "release"
    fleet = Fleet(queue, resolve_profile(f"while [ ! -e {release} ]; do sleep 0.02; done", {}),
                  settings=FleetSettings(poll_s=0.05, workdir=tmp_path), memory=memory,
                  tunables=lambda: FleetTunables(lease_s=0.6))
    runner = threading.Thread(target=fleet.run, kwargs={"until_empty": True})
    runner.start()
    try:
        seen = 0
        for _ in range(1500):  # renewals every 0.2 s: wait for the third one to be recorded
            running = [a for a in memory.attempts("long") if a.outcome is None]
            seen = running[0].heartbeats if running else 0
            if seen >= 3 or not runner.is_alive():
                break
            threading.Event().wait(0.02)
        assert seen >= 3
        expiry = queue.get("long").lease.expires_at
    finally:
        release.touch()
        runner.join(30)
    [attempt] = memory.attempts("long")
    assert attempt.outcome == "succeeded" and attempt.heartbeats >= 3
    assert attempt.lease_expires_at >= expiry - 1e-6
    memory.close()


def test_heartbeats_wait_for_no_memory_and_coalesce_while_it_is_slow():
    """A memory that blocks never holds a renewal back: `renewed` returns at once, and the
    renewals made meanwhile arrive as one write with their count and the latest expiry."""
    from coordinator.heartbeat_memory import HeartbeatMemory

    unblock, entered, writes = threading.Event(), threading.Event(), []

    class SlowMemory:
        def record_heartbeat(self, attempt_id, *, lease_expires_at, count=1):
            entered.set()
            unblock.wait(10)
            writes.append((attempt_id, lease_expires_at, count))

    recorder = HeartbeatMemory(SlowMemory())
    recorder.renewed(7, 100.0)
    assert entered.wait(10)  # the writer is stuck in the first write
    for expiry in (101.0, 102.0, 103.0):
        recorder.renewed(7, expiry)  # returns while the memory is stuck
    recorder.renewed(8, 50.0)
    unblock.set()
    recorder.close()
    assert writes == [(7, 100.0, 1), (7, 103.0, 3), (8, 50.0, 1)]


def test_a_setsid_grandchild_dies_even_when_its_supervisor_was_sigkilled(tmp_path):
    """The supervisor itself SIGKILLed (as the OOM killer would) cannot kill the grandchild
    that left its group: the fleet finds it by the attempt's environment and kills it."""
    pid_file = tmp_path / "escaped.pid"
    queue = make_queue(tmp_path, ("oom.toml", 'prompt = "x"\nmax_attempts = 1\n'))
    escape = f"(setsid sh -c 'echo $$ > {pid_file}; exec sleep 45' &)"
    run_fleet(queue, f"{escape}; {_wait_for_pid(pid_file)}; kill -KILL $PPID; sleep 300")
    assert queue.get("oom").state == TaskState.FAILED
    assert ends_within(int(pid_file.read_text()), timeout_s=10)


def _reaped_within(pid: int, timeout_s: float = 10.0) -> bool:
    """True once `pid` has ended and been reaped: no zombie of it is left in /proc."""
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _kill(*pid_files: Path) -> None:
    """Kill what a test's agent left running (a test must not leak a process)."""
    for path in pid_files:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(path.read_text()), signal.SIGKILL)


def _unmarked_escape(script: str) -> str:
    """Shell that starts `script` in the background with an empty environment (no
    COORDINATOR_* marks) in a session and group of its own."""
    env, setsid = shutil.which("env"), shutil.which("setsid")
    return f"({env} -i {setsid} /bin/sh -c '{script}' &)"


def test_an_unmarked_process_that_left_its_session_dies_when_its_supervisor_was_sigkilled(
    tmp_path,
):
    """`env -i setsid sleep`: no COORDINATOR_* mark, no group or session of the attempt's;
    with its supervisor SIGKILLed, the fleet (its subreaper's subreaper) adopts it, and kills
    and reaps it when it closes the attempt."""
    pid_file = tmp_path / "escaped.pid"
    queue = make_queue(tmp_path, ("oom.toml", 'prompt = "x"\nmax_attempts = 1\n'))
    escape = _unmarked_escape(f"echo $$ > {pid_file}; exec {shutil.which('sleep')} 45")
    try:
        run_fleet(queue, f"{escape}; {_wait_for_pid(pid_file)}; kill -KILL $PPID; sleep 300")
        assert queue.get("oom").state == TaskState.FAILED
        assert _reaped_within(int(pid_file.read_text()))
    finally:
        _kill(pid_file)


def test_what_an_unmarked_escaped_process_started_dies_with_it(tmp_path):
    """The escaped session leader's own child is reparented to the fleet when its parent is
    killed, and is killed and reaped in the next round."""
    leader, child = tmp_path / "leader.pid", tmp_path / "child.pid"
    queue = make_queue(tmp_path, ("oom.toml", 'prompt = "x"\nmax_attempts = 1\n'))
    escape = _unmarked_escape(
        f"{shutil.which('sleep')} 45 & echo $! > {child}; echo $$ > {leader}; wait")
    try:
        run_fleet(queue, f"{escape}; {_wait_for_pid(leader)}; kill -KILL $PPID; sleep 300")
        assert _reaped_within(int(leader.read_text()))
        assert _reaped_within(int(child.read_text()))
    finally:
        _kill(leader, child)


def test_the_fleets_own_children_survive_a_sigkilled_supervisors_clean_up(tmp_path):
    """A child the fleet's process starts while the attempt runs (as the validation gate
    does: a group of its own, in our session) is not taken for an orphan and stays alive."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    queue = make_queue(tmp_path, ("oom.toml", 'prompt = "x"\nmax_attempts = 1\n'))
    agent = (f"echo $$ > {ready}; {_wait_for_pid(go)}; kill -KILL $PPID; sleep 300")
    fleet = threading.Thread(target=run_fleet, args=(queue, agent), daemon=True)
    fleet.start()
    bystander = None
    try:
        for _ in range(1000):  # bounded: the agent writes it as soon as it starts
            if ready.exists() and ready.read_text():
                break
            time.sleep(0.01)
        bystander = subprocess.Popen(["sleep", "300"], process_group=0)
        go.write_text("1")
        fleet.join(timeout=60)
        assert not fleet.is_alive()
        assert queue.get("oom").state == TaskState.FAILED
        assert bystander.poll() is None
    finally:
        if bystander is not None:
            bystander.kill()
            bystander.wait()
        fleet.join(timeout=60)


def test_the_stop_signal_handler_takes_no_lock_and_run_acts_on_it(tmp_path):
    """A signal handler runs in the main thread between any two bytecodes, also while that
    thread holds the fleet's lock: a handler that took the lock would wait for itself forever
    (a Ctrl-C'd coordinator hung so). Here another thread holds the lock while the signal
    comes: the handler must return at once, and `run` acts on the signal."""
    queue = make_queue(tmp_path)
    fleet = Fleet(
        queue,
        resolve_profile("true", {}),
        settings=FleetSettings(poll_s=0.05, grace_s=0.0, workdir=tmp_path),
    )
    notes: list[str] = []
    held, holder_done = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with fleet._lock:
            held.set()
            time.sleep(5)  # the handler, if it wanted the lock, would wait out this sleep
        holder_done.set()

    with fleet.signals_handled(announce=notes.append):
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert held.wait(10)
        signal.raise_signal(signal.SIGINT)
        returned_while_held = not holder_done.is_set()
        holder.join()
        result = fleet.run()
    assert returned_while_held
    assert result.stopped_by_signal
    assert notes == ["stopping: no agent is running"]
