"""The queue and lease faults of issue 7, each pinned by a test that failed before its fix."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _workers import claim_on_a_full_disk, drop
from fakeclock import FakeClock

from coordinator.dependencies import find_cycle
from coordinator.errors import LeaseLost, TaskFileError
from coordinator.queue import FolderQueue
from coordinator.task import TaskState

SPAWN = multiprocessing.get_context("spawn")


def _queue(root: Path, wall: FakeClock, boot: FakeClock | None = None) -> FolderQueue:
    boot = boot or wall
    return FolderQueue(root, clock=wall, boot_clock=boot, monotonic=boot, retry_backoff_s=0)


def _add(queue: FolderQueue, task_id: str, text: str = 'prompt = "p"\n') -> None:
    drop(queue.root, f"{task_id}.toml", text)
    queue.ingest()


def test_an_id_is_known_even_while_its_log_is_between_folders(root: Path) -> None:
    """A live task whose log no listing sees right now (mid-move) still owns its id: a new
    file with that id is rejected, and the live task keeps its history and token."""
    clock = FakeClock()
    queue = _queue(root, clock)
    _add(queue, "t")
    claim = queue.claim("a", lease_s=60)
    assert claim is not None
    aside = root / "aside.jsonl"
    os.rename(root / "claimed" / "t.jsonl", aside)  # what a listing racing a move sees
    drop(root, "again.toml", 'id = "t"\nprompt = "other"\n')
    [rejected] = queue.ingest().rejected
    assert "already known" in rejected.reason
    os.rename(aside, root / "claimed" / "t.jsonl")
    queue.complete("t", claim.token)
    assert queue.get("t").task.prompt == "p"


def test_a_move_never_replaces_another_file(root: Path) -> None:
    """If a state folder already holds a file of the task's name, the move refuses."""
    clock = FakeClock()
    queue = _queue(root, clock)
    _add(queue, "t")
    (root / "claimed" / "t.jsonl").write_text("someone else's\n")
    with pytest.raises(FileExistsError):
        queue.claim("a", lease_s=60)
    assert (root / "claimed" / "t.jsonl").read_text() == "someone else's\n"


def test_a_retry_cut_short_before_its_rename_is_finished(root: Path) -> None:
    """A crash after `retried` was appended (the log still in failed/, the move announced)
    is finished by the next claimer: the task runs again instead of vanishing."""
    clock = FakeClock()
    queue = _queue(root, clock)
    _add(queue, "t", 'prompt = "p"\nmax_attempts = 1\n')
    claim = queue.claim("a", lease_s=60)
    assert claim is not None
    queue.fail("t", claim.token, reason="red")
    queue.retry("t")
    os.rename(root / "pending" / "t.jsonl", root / "failed" / "t.jsonl")  # the crash
    (root / ".queue" / "moving" / "t").touch()  # announced before the append
    restarted = _queue(root, clock)
    again = restarted.claim("b", lease_s=60)
    assert again is not None and again.task.id == "t"
    assert not (root / "failed" / "t.jsonl").exists()


def test_a_wall_clock_jump_forward_does_not_expire_a_live_local_lease(root: Path) -> None:
    """On the same machine leases run on the boot clock: a 1 h wall step changes nothing."""
    wall, boot = FakeClock(), FakeClock()
    queue = _queue(root, wall, boot)
    _add(queue, "t")
    claim = queue.claim("a", lease_s=60)
    assert claim is not None
    wall.advance(3600)
    assert queue.reclaim_expired() == []
    queue.heartbeat("t", claim.token)


def test_a_wall_clock_jump_backward_does_not_stall_reclaiming(root: Path) -> None:
    """After the wall clock steps back an hour, an expired lease is still reclaimed by the
    next claim's housekeeping (scheduled on the monotonic clock)."""
    wall, boot = FakeClock(), FakeClock()
    queue = _queue(root, wall, boot)
    _add(queue, "t")
    assert queue.claim("a", lease_s=60) is not None
    wall.advance(-3600)
    boot.advance(61)
    queue.claim("b", lease_s=60)
    assert queue.get("t").attempts == 1


def test_a_heartbeat_keeps_the_lease_length_of_its_claim(root: Path) -> None:
    """A plain heartbeat after a 120 s claim renews for 120 s, not a default."""
    clock = FakeClock()
    queue = _queue(root, clock)
    _add(queue, "t")
    claim = queue.claim("a", lease_s=120)
    assert claim is not None
    assert queue.heartbeat("t", claim.token) == clock() + 120


def test_the_cycle_check_is_linear_on_a_chain() -> None:
    """One DFS with a shared visited set: a 10,000-task chain costs one look per task."""
    chain = {f"t{i}": (f"t{i + 1}",) if i < 9999 else () for i in range(10_000)}
    looks = 0

    def deps_of(task_id: str) -> tuple[str, ...]:
        nonlocal looks
        looks += 1
        return chain[task_id]

    assert find_cycle(list(chain), deps_of) is None
    assert looks == 10_000


def test_a_rejected_dependency_fails_its_dependents_with_the_reason(root: Path) -> None:
    """a waits for b; b's file is rejected (it closes a cycle): a fails, naming b."""
    queue = _queue(root, FakeClock())
    _add(queue, "a", 'prompt = "p"\ndepends_on = ["b"]\n')
    _add(queue, "b", 'prompt = "p"\ndepends_on = ["a"]\n')
    assert queue.claim("x", lease_s=60) is None
    record = queue.get("a")
    assert record.state is TaskState.FAILED
    assert record.reason == "dependency 'b' rejected"


def test_a_dependency_on_an_unknown_id_shows_what_it_waits_for(root: Path) -> None:
    """A task waiting on an id no task has shows that id in its record."""
    queue = _queue(root, FakeClock())
    _add(queue, "a", 'prompt = "p"\ndepends_on = ["ghost"]\n')
    record = queue.get("a")
    assert (record.state, record.waiting_for, record.unknown_dependencies) == (
        TaskState.PENDING, ("ghost",), ("ghost",)
    )
    assert [r.task.id for r in queue.waiting()] == ["a"]


def test_a_cycle_through_a_cancelled_task_is_rejected(root: Path) -> None:
    """x waits for y and is cancelled; y waiting for x would let a retry of x re-form a
    cycle, so y is rejected."""
    queue = _queue(root, FakeClock())
    _add(queue, "x", 'prompt = "p"\ndepends_on = ["y"]\n')
    queue.cancel("x")
    drop(root, "y.toml", 'prompt = "p"\ndepends_on = ["x"]\n')
    [rejected] = queue.ingest().rejected
    assert "dependency cycle" in rejected.reason


def test_a_task_inherits_the_priority_of_what_waits_for_it(root: Path) -> None:
    """A low task that a critical task waits for is claimed before a normal one."""
    queue = _queue(root, FakeClock())
    _add(queue, "n")
    _add(queue, "low", 'prompt = "p"\npriority = "low"\n')
    _add(queue, "c", 'prompt = "p"\npriority = "critical"\ndepends_on = ["low"]\n')
    claim = queue.claim("a", lease_s=60)
    assert claim is not None and claim.task.id == "low"


def test_adding_an_empty_prompt_leaves_nothing_behind(root: Path) -> None:
    """`add("")` raises and writes no file at all (no rejected entry)."""
    queue = _queue(root, FakeClock())
    before = sorted(p for p in root.rglob("*") if p.is_file())
    with pytest.raises(TaskFileError):
        queue.add("", task_id="empty")
    assert sorted(p for p in root.rglob("*") if p.is_file()) == before


def test_an_accepted_file_supersedes_its_rejected_namesake(root: Path) -> None:
    """A fixed file dropped under the rejected one's name replaces the rejected entry."""
    queue = _queue(root, FakeClock())
    _add(queue, "fix", 'prompt = 5\n')
    assert [r.name for r in queue.rejected()] == ["fix.toml"]
    _add(queue, "fix", 'prompt = "p"\n')
    assert queue.rejected() == []
    assert (root / "archive" / "rejected" / "fix.toml").read_text() == "prompt = 5\n"


def test_clear_moves_done_entries_to_the_archive(root: Path) -> None:
    """`clear(DONE)` removes done tasks from the listings, keeping their files."""
    queue = _queue(root, FakeClock())
    _add(queue, "t")
    claim = queue.claim("a", lease_s=60)
    assert claim is not None
    queue.complete("t", claim.token)
    assert queue.clear(TaskState.DONE) == ["t"]
    assert queue.records() == []
    assert (root / "archive" / "done" / "t.jsonl").exists()
    drop(root, "again.toml", 'id = "t"\nprompt = "p"\n')
    assert queue.ingest().accepted == ()  # the id stays known


def test_reading_a_folder_that_is_not_a_queue_creates_nothing(tmp_path: Path) -> None:
    """`open(create=False)` on a missing folder raises naming it, and makes nothing."""
    from coordinator.errors import QueueNotFound

    missing = tmp_path / "taks"
    with pytest.raises(QueueNotFound, match="taks"):
        FolderQueue.open(missing)
    assert not missing.exists()


def test_a_short_write_on_a_full_disk_moves_nothing(root: Path) -> None:
    """A claim whose event only partly fits (the file size limit, as a full disk would) is
    a clear error; the task stays pending, and claims normally once there is room."""
    queue = FolderQueue(root)
    _add(queue, "t")
    receiver, sender = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=claim_on_a_full_disk, args=(str(root), 20, sender))
    child.start()
    assert receiver.poll(60)
    outcome = receiver.recv()
    child.join(timeout=10)
    assert outcome.startswith("QueueWriteError: could not write the log of task 't'")
    assert (root / "pending" / "t.jsonl").exists()
    assert queue.get("t").state is TaskState.PENDING
    claim = queue.claim("a", lease_s=60)
    assert claim is not None and claim.token == 1


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rpf", "--mount-proc", "true"], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not _unshare_works(),
                    reason="this kernel does not allow unprivileged PID namespaces "
                    "(unshare -rpf --mount-proc)")
def test_a_fleet_in_another_pid_namespace_keeps_its_leases(root: Path) -> None:
    """A live owner in another PID namespace (same host name, same machine) is not judged
    dead by its pid: its lease is kept until it runs out."""
    queue = FolderQueue(root)
    _add(queue, "t")
    script = textwrap.dedent(f"""
        import sys, time
        from coordinator.lease import Owner
        from coordinator.queue import FolderQueue
        claim = FolderQueue({str(root)!r}).claim("ns", lease_s=600, owner=Owner.current())
        print(claim.token, flush=True)
        time.sleep(600)
    """)
    # --kill-child: the namespace's init (the script) dies with unshare, which kill() ends.
    child = subprocess.Popen(
        ["unshare", "-rpf", "--kill-child", "--mount-proc", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        token = int(child.stdout.readline())
        assert queue.reclaim_expired() == []
        assert queue.get("t").state is TaskState.CLAIMED
        with pytest.raises(LeaseLost):
            queue.complete("t", token + 1)
    finally:
        child.kill()
        child.wait()
