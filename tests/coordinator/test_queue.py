"""The folder queue through its public API: ingest, order, leases, fencing, user actions,
and recovery from a crash at each step of a state change."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _workers import drop
from fakeclock import FakeClock
from filelock import FileLock

from coordinator.errors import InvalidTransition, LeaseLost, TaskFileError, UnknownTask
from coordinator.lease import Machine, Owner
from coordinator.queue import Claim, FolderQueue
from coordinator.task import Priority, TaskState, parse_task_file


def _task(prompt: str = "do it", **fields: Any) -> str:
    lines = [f"prompt = {json.dumps(prompt)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def _queued(queue: FolderQueue, *ids: str, **fields: Any) -> None:
    """Drop one file per id and ingest them one by one (so arrival order is the id order)."""
    for task_id in ids:
        drop(queue.root, f"{task_id}.toml", _task(f"prompt of {task_id}", **fields))
        assert queue.ingest().accepted == (task_id,)


def _claim(queue: FolderQueue, agent: str = "a1", lease_s: float = 60.0) -> Claim:
    claim = queue.claim(agent, lease_s=lease_s)
    assert claim is not None
    return claim


def _drain(queue: FolderQueue) -> list[str]:
    order = []
    while (claim := queue.claim("a", lease_s=60)) is not None:
        order.append(claim.task.id)
        queue.complete(claim.task.id, claim.token)
    return order


def _record_file(root: Path, state: TaskState, task_id: str) -> Path:
    return root / state.value / f"{task_id}.jsonl"


def _where(root: Path, task_id: str) -> list[str]:
    """Every state folder holding a record of `task_id` (exactly one, when all is well)."""
    return [s.value for s in TaskState if _record_file(root, s, task_id).exists()]


# ---------------------------------------------------------------- ingest


def test_ingest_moves_an_accepted_file_to_sources_byte_for_byte(queue: FolderQueue) -> None:
    """The user's file leaves the inbox for `sources/`, unchanged to the byte."""
    original = b'# my task\r\nprompt = "p"   # trailing comment\r\n\r\n'
    drop(queue.root, "mine.toml", original)
    result = queue.ingest()
    assert result.accepted == ("mine",)
    assert not (queue.root / "mine.toml").exists()
    assert (queue.root / "sources" / "mine.toml").read_bytes() == original
    assert queue.get("mine").source == "sources/mine.toml"


def test_ingested_task_is_pending_on_disk(queue: FolderQueue) -> None:
    """An accepted task has one record, in `pending/`."""
    _queued(queue, "t")
    assert _where(queue.root, "t") == ["pending"]
    assert queue.get("t").state is TaskState.PENDING


def test_all_tasks_of_a_tasks_file_are_accepted(queue: FolderQueue) -> None:
    """Each `[[tasks]]` table becomes its own pending task."""
    text = '[[tasks]]\nid = "a"\nprompt = "p"\n[[tasks]]\nid = "b"\nprompt = "q"\n'
    drop(queue.root, "batch.toml", text)
    assert queue.ingest().accepted == ("a", "b")
    assert queue.get("b").source == "sources/batch.toml"


def test_rejected_file_is_moved_aside_byte_for_byte(queue: FolderQueue) -> None:
    """A malformed file goes to `rejected/` unchanged, never deleted or rewritten."""
    original = b'prompt = "p"\npriority = "urgent"\n'
    drop(queue.root, "bad.toml", original)
    result = queue.ingest()
    assert result.accepted == ()
    assert not (queue.root / "bad.toml").exists()
    assert (queue.root / "rejected" / "bad.toml").read_bytes() == original


def test_rejected_file_has_an_error_file_naming_file_line_and_field(queue: FolderQueue) -> None:
    """`rejected/<file>.error` says which file, line and field, and what was expected."""
    drop(queue.root, "bad.toml", 'prompt = "p"\n\nmax_attempts = "three"\n')
    queue.ingest()
    error = (queue.root / "rejected" / "bad.toml.error").read_text()
    assert error.startswith("bad.toml:3: field 'max_attempts': expected a whole number")


def test_rejected_files_are_listed_with_their_reason(queue: FolderQueue) -> None:
    """`rejected()` lists each rejected file and why."""
    drop(queue.root, "bad.toml", "prompt = 5\n")
    [ingested] = queue.ingest().rejected
    [listed] = queue.rejected()
    assert listed.name == ingested.name == "bad.toml"
    assert listed.reason == ingested.reason
    assert "field 'prompt'" in listed.reason


def test_a_rejected_file_does_not_stop_the_rest_of_the_inbox(queue: FolderQueue) -> None:
    """Good files dropped beside a bad one are still accepted."""
    drop(queue.root, "a.toml", _task())
    drop(queue.root, "broken.toml", "prompt = = 1\n")
    drop(queue.root, "c.toml", _task())
    result = queue.ingest()
    assert sorted(result.accepted) == ["a", "c"]
    assert [r.name for r in result.rejected] == ["broken.toml"]


def test_file_with_an_already_known_id_is_rejected(queue: FolderQueue) -> None:
    """A second task with a known id is rejected, saying which id and where it is."""
    _queued(queue, "dup")
    _claim(queue)
    drop(queue.root, "other.toml", _task(id="dup"))
    [rejected] = queue.ingest().rejected
    assert rejected.name == "other.toml"
    assert "'dup' is already known (it is claimed)" in rejected.reason
    assert queue.get("dup").state is TaskState.CLAIMED


def test_known_id_rejection_names_the_id_line(queue: FolderQueue) -> None:
    """The error file of a known-id rejection points at the `id` line."""
    _queued(queue, "dup")
    drop(queue.root, "other.toml", 'title = "t"\nprompt = "p"\nid = "dup"\n')
    [rejected] = queue.ingest().rejected
    assert rejected.reason.startswith("other.toml:3: field 'id'")


def test_cycle_rejection_names_the_depends_on_line(queue: FolderQueue) -> None:
    """The error file of a cycle rejection points at the `depends_on` line."""
    _queued(queue, "a", depends_on=["b"])
    drop(queue.root, "b.toml", 'prompt = "p"\ndepends_on = ["a"]\n')
    [rejected] = queue.ingest().rejected
    assert rejected.reason.startswith("b.toml:2: field 'depends_on'")


def test_same_file_name_twice_keeps_both_originals(queue: FolderQueue) -> None:
    """A reused file name never overwrites an earlier source or rejected file."""
    drop(queue.root, "x.toml", _task("one", id="first"))
    queue.ingest()
    drop(queue.root, "x.toml", _task("two", id="second"))
    queue.ingest()
    drop(queue.root, "x.toml", "bad = 1\n")
    queue.ingest()
    drop(queue.root, "x.toml", "worse = 1\n")
    queue.ingest()
    sources = sorted(p.name for p in (queue.root / "sources").iterdir())
    assert sources == ["x.1.toml", "x.toml"]
    assert queue.get("second").source == "sources/x.1.toml"
    assert sorted(r.name for r in queue.rejected()) == ["x.1.toml", "x.toml"]


def test_dependency_cycle_within_a_file_is_rejected(queue: FolderQueue) -> None:
    """a -> b -> a in one file rejects the file."""
    text = (
        '[[tasks]]\nid = "a"\nprompt = "p"\ndepends_on = ["b"]\n'
        '[[tasks]]\nid = "b"\nprompt = "p"\ndepends_on = ["a"]\n'
    )
    drop(queue.root, "cyc.toml", text)
    [rejected] = queue.ingest().rejected
    assert "dependency cycle" in rejected.reason
    assert queue.counts()[TaskState.PENDING] == 0


def test_dependency_cycle_through_a_queued_task_is_rejected(queue: FolderQueue) -> None:
    """A new task closing a cycle with tasks already queued is rejected; the queue is kept."""
    drop(queue.root, "a.toml", _task(depends_on=["b"]))
    drop(queue.root, "b.toml", _task(depends_on=["c"]))
    queue.ingest()
    drop(queue.root, "c.toml", _task(depends_on=["a"]))
    [rejected] = queue.ingest().rejected
    assert "dependency cycle: c -> a -> b -> c" in rejected.reason
    assert {r.task.id for r in queue.records()} == {"a", "b"}


def test_dependency_on_an_unknown_task_waits_for_it(queue: FolderQueue) -> None:
    """Depending on a task not yet dropped is allowed; the task waits until it is done."""
    _queued(queue, "later", depends_on=["first"])
    assert queue.claim("a", lease_s=60) is None
    _queued(queue, "first")
    assert _drain(queue) == ["first", "later"]


def test_files_not_ending_in_toml_or_hidden_are_ignored(queue: FolderQueue) -> None:
    """Only visible `*.toml` files are task files (a half-written `.x.toml` is not)."""
    drop(queue.root, "notes.txt", _task())
    drop(queue.root, ".editing.toml", _task())
    assert queue.ingest().accepted == ()
    assert (queue.root / "notes.txt").exists()
    assert (queue.root / ".editing.toml").exists()


def test_claim_picks_up_files_dropped_at_any_time(queue: FolderQueue) -> None:
    """No explicit ingest is needed: a claim sees a newly dropped file."""
    assert queue.claim("a", lease_s=60) is None
    drop(queue.root, "new.toml", _task())
    assert _claim(queue).task.id == "new"


# ---------------------------------------------------------------- order


def test_higher_priority_is_claimed_first(queue: FolderQueue) -> None:
    """critical, high, normal, low — whatever the arrival order."""
    for task_id, priority in [("l", "low"), ("n", "normal"), ("h", "high"), ("c", "critical")]:
        _queued(queue, task_id, priority=priority)
    assert _drain(queue) == ["c", "h", "n", "l"]


def test_equal_priority_is_first_come_first_served(queue: FolderQueue) -> None:
    """Within a priority, tasks are claimed in arrival order (not name order)."""
    _queued(queue, "z", "m", "a", "q")
    assert _drain(queue) == ["z", "m", "a", "q"]


def test_a_new_higher_priority_task_overtakes_queued_ones(queue: FolderQueue) -> None:
    """A critical task dropped while others wait is claimed next."""
    _queued(queue, "n1", "n2", "n3")
    assert _claim(queue).task.id == "n1"
    _queued(queue, "urgent", priority="critical")
    assert _claim(queue).task.id == "urgent"


def test_a_task_waits_until_its_dependencies_are_done(queue: FolderQueue) -> None:
    """A dependent is not claimable while its dependency is pending or claimed."""
    _queued(queue, "child", priority="critical", depends_on=["parent"])
    _queued(queue, "parent")
    parent = _claim(queue)
    assert parent.task.id == "parent"
    assert queue.claim("b", lease_s=60) is None
    queue.complete("parent", parent.token)
    assert _claim(queue).task.id == "child"


def test_a_failed_dependency_fails_its_dependents_with_the_reason(queue: FolderQueue) -> None:
    """When a dependency fails for good, its dependents fail, saying which and why."""
    _queued(queue, "parent", max_attempts=1)
    _queued(queue, "child", depends_on=["parent"])
    claim = _claim(queue)
    assert queue.fail("parent", claim.token, reason="boom") is TaskState.FAILED
    assert queue.claim("a", lease_s=60) is None
    child = queue.get("child")
    assert child.state is TaskState.FAILED
    assert child.reason == "dependency 'parent' failed"


def test_a_cancelled_dependency_fails_its_dependents(queue: FolderQueue) -> None:
    """A cancelled dependency will never be done, so its dependents fail."""
    _queued(queue, "parent")
    _queued(queue, "child", depends_on=["parent"])
    queue.cancel("parent")
    assert queue.claim("a", lease_s=60) is None
    assert queue.get("child").reason == "dependency 'parent' cancelled"


def test_dependency_failure_propagates_down_a_chain(queue: FolderQueue) -> None:
    """a fails -> b fails -> c fails; nothing in the chain is ever claimed."""
    _queued(queue, "a", max_attempts=1)
    _queued(queue, "b", depends_on=["a"])
    _queued(queue, "c", depends_on=["b"])
    queue.fail("a", _claim(queue).token, reason="no")
    assert _drain(queue) == []
    assert [queue.get(t).state for t in "abc"] == [TaskState.FAILED] * 3


# ---------------------------------------------------------------- failures and retries


def test_a_failed_attempt_waits_for_its_backoff(queue: FolderQueue, clock: FakeClock) -> None:
    """After a failure the task is pending but not claimable until the backoff passes."""
    _queued(queue, "t")
    first = _claim(queue)
    assert queue.fail("t", first.token, reason="exit 1") is TaskState.PENDING
    assert queue.claim("a", lease_s=60) is None
    clock.advance(9.9)
    assert queue.claim("a", lease_s=60) is None
    clock.advance(0.1)
    second = _claim(queue)
    assert (second.task.id, second.attempt) == ("t", 2)
    assert second.token > first.token


def test_backoff_doubles_with_each_failed_attempt(queue: FolderQueue, clock: FakeClock) -> None:
    """10 s after the first failure, 20 s after the second."""
    _queued(queue, "t", max_attempts=5)
    queue.fail("t", _claim(queue).token, reason="1")
    assert queue.get("t").not_before == clock() + 10
    clock.advance(10)
    queue.fail("t", _claim(queue).token, reason="2")
    assert queue.get("t").not_before == clock() + 20


def test_task_fails_for_good_after_max_attempts(queue: FolderQueue, clock: FakeClock) -> None:
    """The last allowed failure moves the task to `failed` with the reason."""
    _queued(queue, "t", max_attempts=2)
    assert queue.fail("t", _claim(queue).token, reason="first") is TaskState.PENDING
    clock.advance(10)
    claim = _claim(queue)
    assert claim.attempt == 2
    assert queue.fail("t", claim.token, reason="second", exit_code=3) is TaskState.FAILED
    record = queue.get("t")
    assert record.state is TaskState.FAILED
    assert record.attempts == 2
    assert record.reason == "failed on attempt 2 of 2: second"
    assert [a.reason for a in record.history] == ["first", "second"]
    assert record.history[-1].exit_code == 3
    clock.advance(3600)
    assert queue.claim("a", lease_s=60) is None


def test_permanent_failure_fails_at_once(queue: FolderQueue) -> None:
    """`fail(permanent=True)` skips the remaining attempts and keeps the reason."""
    _queued(queue, "t", max_attempts=5)
    claim = _claim(queue)
    assert queue.fail("t", claim.token, reason="bad input", permanent=True) is TaskState.FAILED
    record = queue.get("t")
    assert (record.state, record.attempts, record.reason) == (TaskState.FAILED, 1, "bad input")


def test_complete_records_a_succeeded_attempt(queue: FolderQueue) -> None:
    """A completed task is done, with its attempt in the history."""
    _queued(queue, "t")
    claim = _claim(queue, agent="alice")
    queue.complete("t", claim.token, exit_code=0, log_path="logs/t/attempt-1.log")
    record = queue.get("t")
    assert record.state is TaskState.DONE
    assert record.lease is None
    [attempt] = record.history
    assert (attempt.agent, attempt.outcome, attempt.log_path) == (
        "alice", "succeeded", "logs/t/attempt-1.log"
    )


# ---------------------------------------------------------------- leases and fencing


def test_heartbeat_extends_the_lease(queue: FolderQueue, clock: FakeClock) -> None:
    """A renewed lease is not reclaimed at its original expiry."""
    _queued(queue, "t")
    claim = _claim(queue, lease_s=60)
    clock.advance(50)
    assert queue.heartbeat("t", claim.token, lease_s=60) == clock() + 60
    clock.advance(50)
    assert queue.reclaim_expired() == []
    assert queue.get("t").state is TaskState.CLAIMED


def test_expired_lease_is_reclaimed_and_uses_an_attempt(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """A lease that runs out sends the task back to pending with one attempt used."""
    _queued(queue, "t")
    _claim(queue, agent="slow", lease_s=60)
    clock.advance(59.9)
    assert queue.reclaim_expired() == []
    clock.advance(0.1)
    assert queue.reclaim_expired() == ["t"]
    record = queue.get("t")
    assert (record.state, record.attempts, record.lease) == (TaskState.PENDING, 1, None)
    assert record.history[-1].outcome == "lease_lost"
    assert "'slow' expired" in (record.history[-1].reason or "")


def test_expired_lease_on_the_last_attempt_fails_the_task(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """With no attempt left, an expired lease fails the task."""
    _queued(queue, "t", max_attempts=1)
    _claim(queue, lease_s=5)
    clock.advance(5)
    queue.reclaim_expired()
    record = queue.get("t")
    assert record.state is TaskState.FAILED
    assert record.reason is not None
    assert record.reason.startswith("lease_lost on attempt 1 of 1")


def _taken_over(queue: FolderQueue, clock: FakeClock) -> tuple[Claim, Claim]:
    _queued(queue, "t")
    old = _claim(queue, agent="old", lease_s=30)
    clock.advance(30)
    queue.reclaim_expired()
    clock.advance(10)  # the retry backoff
    new = _claim(queue, agent="new", lease_s=30)
    assert new.task.id == "t"
    return old, new


def test_old_holder_cannot_heartbeat_after_takeover(queue: FolderQueue, clock: FakeClock) -> None:
    """Fencing: a stale token's heartbeat raises LeaseLost and changes nothing."""
    old, new = _taken_over(queue, clock)
    with pytest.raises(LeaseLost) as info:
        queue.heartbeat("t", old.token, lease_s=600)
    assert info.value.token == old.token
    lease = queue.get("t").lease
    assert lease is not None
    assert (lease.agent, lease.token, lease.expires_at) == ("new", new.token, new.expires_at)


def test_old_holder_cannot_complete_after_takeover(queue: FolderQueue, clock: FakeClock) -> None:
    """Fencing: a stale token cannot mark the task done."""
    old, _ = _taken_over(queue, clock)
    with pytest.raises(LeaseLost):
        queue.complete("t", old.token)
    assert queue.get("t").state is TaskState.CLAIMED


def test_old_holder_cannot_fail_after_takeover(queue: FolderQueue, clock: FakeClock) -> None:
    """Fencing: a stale token cannot fail the new holder's attempt."""
    old, new = _taken_over(queue, clock)
    with pytest.raises(LeaseLost):
        queue.fail("t", old.token, reason="late")
    queue.complete("t", new.token)
    assert queue.get("t").state is TaskState.DONE


def test_holder_loses_the_lease_once_reclaimed(queue: FolderQueue, clock: FakeClock) -> None:
    """After its lease was reclaimed (even before anyone re-claims), completing raises."""
    _queued(queue, "t")
    claim = _claim(queue, lease_s=10)
    clock.advance(10)
    queue.reclaim_expired()
    with pytest.raises(LeaseLost, match="the task is pending"):
        queue.complete("t", claim.token)


def test_wrong_token_is_refused(queue: FolderQueue) -> None:
    """A token that never held the lease is refused."""
    _queued(queue, "t")
    claim = _claim(queue)
    with pytest.raises(LeaseLost):
        queue.complete("t", claim.token + 1)
    assert queue.get("t").state is TaskState.CLAIMED


def test_lease_actions_on_an_unknown_task_raise_unknown_task(queue: FolderQueue) -> None:
    """Completing a task the queue never saw raises UnknownTask, also for unsafe ids."""
    with pytest.raises(UnknownTask):
        queue.complete("nope", 1)
    with pytest.raises(UnknownTask):
        queue.heartbeat("../../etc/passwd", 1, lease_s=5)


def test_release_gives_the_task_back_without_using_an_attempt(queue: FolderQueue) -> None:
    """A released task is claimable at once, still on its first attempt."""
    _queued(queue, "t", max_attempts=1)
    claim = _claim(queue)
    queue.release("t", claim.token)
    again = _claim(queue)
    assert (again.task.id, again.attempt) == ("t", 1)
    assert again.token > claim.token
    assert queue.get("t").attempts == 0


def test_released_holder_loses_its_lease(queue: FolderQueue) -> None:
    """After release the old token can no longer complete."""
    _queued(queue, "t")
    claim = _claim(queue)
    queue.release("t", claim.token)
    with pytest.raises(LeaseLost):
        queue.complete("t", claim.token)


def test_lease_of_a_dead_owner_is_reclaimed_before_it_expires(queue: FolderQueue) -> None:
    """An owner process that no longer exists frees its claims at once."""
    _queued(queue, "t")
    here = Machine.current()
    dead = Owner(host=here.host, pid=2**22 + 12345, started=1, boot_id=here.boot_id,
                 pid_ns=here.pid_ns)
    assert dead.is_dead()
    queue.claim("a", lease_s=3600, owner=dead)
    assert queue.reclaim_expired() == ["t"]
    assert "died" in (queue.get("t").history[-1].reason or "")


def test_lease_of_a_live_owner_is_kept(queue: FolderQueue) -> None:
    """The current process as owner keeps its claim until the lease expires."""
    _queued(queue, "t")
    queue.claim("a", lease_s=60, owner=Owner.current())
    assert queue.reclaim_expired() == []


def test_lease_of_an_owner_on_another_machine_waits_for_expiry(queue: FolderQueue) -> None:
    """A pid on another machine (another boot id) cannot be checked: only expiry frees it."""
    _queued(queue, "t")
    here = Machine.current()
    elsewhere = Owner(host=here.host, pid=2**22 + 12345, started=1, boot_id="another-boot",
                      pid_ns=here.pid_ns)
    queue.claim("a", lease_s=60, owner=elsewhere)
    assert queue.reclaim_expired() == []


def test_lease_of_an_owner_in_another_pid_namespace_waits_for_expiry(
    queue: FolderQueue,
) -> None:
    """Same machine, same hostname, another PID namespace: its pid means nothing here."""
    _queued(queue, "t")
    here = Machine.current()
    container = Owner(host=here.host, pid=2**22 + 12345, started=1, boot_id=here.boot_id,
                      pid_ns=here.pid_ns + 1)
    queue.claim("a", lease_s=60, owner=container)
    assert queue.reclaim_expired() == []


# ---------------------------------------------------------------- user actions


def test_cancel_of_a_pending_task(queue: FolderQueue) -> None:
    """A cancelled task is never claimed."""
    _queued(queue, "t")
    assert queue.cancel("t").state is TaskState.CANCELLED
    assert _where(queue.root, "t") == ["cancelled"]
    assert queue.claim("a", lease_s=60) is None


def test_cancel_of_a_claimed_task_fences_out_its_holder(queue: FolderQueue) -> None:
    """The agent holding a cancelled task gets LeaseLost on its next heartbeat or complete."""
    _queued(queue, "t")
    claim = _claim(queue)
    queue.cancel("t")
    with pytest.raises(LeaseLost, match="cancelled"):
        queue.heartbeat("t", claim.token, lease_s=60)
    with pytest.raises(LeaseLost):
        queue.complete("t", claim.token)
    assert queue.get("t").state is TaskState.CANCELLED


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_user_actions_on_an_unknown_task_raise(queue: FolderQueue, action: str) -> None:
    """cancel/retry of an id the queue never saw raise UnknownTask."""
    with pytest.raises(UnknownTask):
        getattr(queue, action)("ghost")


def test_cancel_of_a_done_task_is_refused(queue: FolderQueue) -> None:
    """Only pending or claimed tasks can be cancelled."""
    _queued(queue, "t")
    _drain(queue)
    with pytest.raises(InvalidTransition):
        queue.cancel("t")
    assert queue.get("t").state is TaskState.DONE


def test_retry_sends_a_failed_task_back_with_fresh_attempts(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """A retried task is claimable at once and gets its full attempts again."""
    _queued(queue, "t", max_attempts=1)
    first = _claim(queue)
    queue.fail("t", first.token, reason="x")
    record = queue.retry("t")
    assert (record.state, record.attempts, record.reason) == (TaskState.PENDING, 0, None)
    again = _claim(queue)
    assert again.attempt == 1
    assert again.token > first.token


def test_retry_of_a_cancelled_task(queue: FolderQueue) -> None:
    """A cancelled task can be sent back to pending."""
    _queued(queue, "t")
    queue.cancel("t")
    queue.retry("t")
    assert _claim(queue).task.id == "t"


def test_retry_of_a_pending_task_is_refused(queue: FolderQueue) -> None:
    """Only failed or cancelled tasks can be retried."""
    _queued(queue, "t")
    with pytest.raises(InvalidTransition):
        queue.retry("t")


def test_add_writes_a_task_file_and_queues_it(queue: FolderQueue) -> None:
    """`add` leaves a parseable source file and a pending task, with no temp file behind."""
    task = queue.add(
        "write docs", task_id="docs", priority=Priority.HIGH, depends_on=("x",), tags=("d",)
    )
    record = queue.get("docs")
    assert record.state is TaskState.PENDING
    assert record.task == task
    assert parse_task_file(queue.root / record.source) == [task]
    assert sorted(p.name for p in queue.root.iterdir() if p.is_file()) == []


def test_add_without_an_id_makes_one_up(queue: FolderQueue) -> None:
    """An id is generated when none is given, and it is a valid one."""
    task = queue.add("anything")
    assert queue.get(task.id).task.prompt == "anything"


def test_add_refuses_a_known_id_and_writes_nothing(queue: FolderQueue) -> None:
    """Adding a task whose id is known raises and leaves no file anywhere."""
    _queued(queue, "t")
    before = sorted(p.relative_to(queue.root) for p in queue.root.rglob("*") if p.is_file())
    with pytest.raises(TaskFileError, match="already known"):
        queue.add("again", task_id="t")
    after = sorted(p.relative_to(queue.root) for p in queue.root.rglob("*") if p.is_file())
    assert after == before


def test_add_refuses_an_unsafe_id(queue: FolderQueue) -> None:
    """An id that would escape the folder raises before any file is written."""
    with pytest.raises(TaskFileError):
        queue.add("p", task_id="../escape")
    assert not (queue.root.parent / "escape.toml").exists()


def test_add_refuses_a_task_that_closes_a_cycle(queue: FolderQueue) -> None:
    """A cycle found at ingest makes `add` raise."""
    _queued(queue, "a", depends_on=["b"])
    with pytest.raises(TaskFileError, match="cycle"):
        queue.add("p", task_id="b", depends_on=("a",))
    with pytest.raises(UnknownTask):
        queue.get("b")


def test_add_is_not_blamed_for_another_rejected_file(queue: FolderQueue) -> None:
    """A malformed file in the inbox does not make an unrelated `add` raise."""
    drop(queue.root, "task-broken.toml", "prompt = 5\n")
    queue.add("fine", task_id="task")
    assert queue.get("task").state is TaskState.PENDING


def test_add_while_another_process_ingests_waits_and_queues_the_task(
    queue: FolderQueue,
) -> None:
    """`add` waits for an ingest running elsewhere, then queues its task."""
    lock = FileLock(queue.root / ".queue" / "locks" / "ingest.lock")
    lock.acquire()
    adder = threading.Thread(target=queue.add, args=("p",), kwargs={"task_id": "x"})
    try:
        adder.start()
        adder.join(timeout=0.2)
        assert adder.is_alive()  # still waiting for the lock
        with pytest.raises(UnknownTask):
            queue.get("x")
    finally:
        lock.release()
    adder.join(timeout=30)
    assert queue.get("x").state is TaskState.PENDING


def test_add_accepts_a_prompt_with_an_emoji(queue: FolderQueue) -> None:
    """Any Unicode prompt can be added."""
    queue.add("deploy 🚀", task_id="emoji")
    assert queue.get("emoji").task.prompt == "deploy 🚀"


def test_next_ready_at_is_none_for_an_empty_queue(queue: FolderQueue) -> None:
    """Nothing pending: nothing will become ready by waiting."""
    assert queue.next_ready_at() is None


def test_next_ready_at_is_not_in_the_future_for_a_ready_task(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """A claimable task is ready now."""
    _queued(queue, "t")
    ready_at = queue.next_ready_at()
    assert ready_at is not None
    assert ready_at <= clock()


def test_next_ready_at_is_the_end_of_the_earliest_backoff(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """A task in backoff is ready when its backoff ends."""
    _queued(queue, "t")
    queue.fail("t", _claim(queue).token, reason="x")
    assert queue.next_ready_at() == clock() + 10


def test_next_ready_at_is_none_while_everything_waits_on_dependencies(
    queue: FolderQueue,
) -> None:
    """Only waiting on another task: no time will make it ready."""
    _queued(queue, "child", depends_on=["parent"])
    _queued(queue, "parent")
    _claim(queue)
    assert queue.next_ready_at() is None


def test_counts_has_every_state(queue: FolderQueue, clock: FakeClock) -> None:
    """counts() gives the number of tasks in each state, rejected files included."""
    _queued(queue, "done1", "claimed1", "failed1", "cancelled1", "pending1")
    drop(queue.root, "bad.toml", "nope = 1\n")
    queue.ingest()
    queue.complete("done1", _claim(queue).token)
    _claim(queue)
    failing = _claim(queue)
    queue.fail("failed1", failing.token, reason="x", permanent=True)
    queue.cancel("cancelled1")
    assert queue.counts() == {
        TaskState.PENDING: 1,
        TaskState.CLAIMED: 1,
        TaskState.DONE: 1,
        TaskState.FAILED: 1,
        TaskState.CANCELLED: 1,
        TaskState.REJECTED: 1,
    }


def test_records_are_in_claim_order(queue: FolderQueue) -> None:
    """records() lists by priority, then arrival."""
    _queued(queue, "b")
    _queued(queue, "a", priority="low")
    _queued(queue, "c", priority="high")
    assert [r.task.id for r in queue.records()] == ["c", "b", "a"]


def test_get_of_an_unknown_or_unsafe_id_raises(queue: FolderQueue) -> None:
    """get() never looks outside the queue's folders."""
    (queue.root.parent / "outside.json").write_text("{}")
    for task_id in ("ghost", "../outside", "/etc/passwd"):
        with pytest.raises(UnknownTask):
            queue.get(task_id)


# ---------------------------------------------------------------- crash recovery
# Each test builds, by hand, the disk state a crash at one instruction leaves behind, then
# "restarts" (a fresh FolderQueue on the same folder) and checks the task ends up in exactly
# one right place, once.


def _restart(root: Path, clock: FakeClock) -> FolderQueue:
    return FolderQueue(root, clock=clock, boot_clock=clock, monotonic=clock,
                       retry_backoff_s=10.0)


def _crash_before_rename(queue: FolderQueue, task_id: str,
                         change: Callable[[], object]) -> None:
    """Make `change` happen as if its process died after appending the task's event but
    before renaming the log into its new state's folder."""
    [before] = _where(queue.root, task_id)
    change()
    [after] = _where(queue.root, task_id)
    os.rename(_record_file(queue.root, TaskState(after), task_id),
              _record_file(queue.root, TaskState(before), task_id))


def test_claimer_died_after_writing_the_claim(queue: FolderQueue, clock: FakeClock) -> None:
    """A claim whose log never left `pending/` is not claimed again; its lease runs out and
    the task comes back for its second attempt."""
    _queued(queue, "t")
    _crash_before_rename(queue, "t", lambda: _claim(queue))
    restarted = _restart(queue.root, clock)
    assert restarted.claim("a", lease_s=60) is None
    assert _where(queue.root, "t") == ["claimed"]
    clock.advance(61)
    assert restarted.reclaim_expired() == ["t"]
    clock.advance(10)
    claim = _claim(restarted)
    assert (claim.task.id, claim.attempt) == ("t", 2)
    restarted.complete("t", claim.token)
    assert _drain(restarted) == []
    assert _where(queue.root, "t") == ["done"]


def test_completer_died_after_writing_done(queue: FolderQueue, clock: FakeClock) -> None:
    """A completion whose log never left `claimed/` stays done and is never run again."""
    _queued(queue, "t")
    claim = _claim(queue)
    _crash_before_rename(queue, "t", lambda: queue.complete("t", claim.token))
    restarted = _restart(queue.root, clock)
    with pytest.raises(LeaseLost):
        restarted.heartbeat("t", claim.token, lease_s=60)
    assert _where(queue.root, "t") == ["done"]
    clock.advance(3600)
    assert restarted.claim("a", lease_s=60) is None
    with pytest.raises(LeaseLost):
        restarted.complete("t", claim.token)


def test_reclaim_finishes_a_cut_short_completion(queue: FolderQueue, clock: FakeClock) -> None:
    """The periodic reclaim moves a done task's log out of `claimed/` without running it."""
    _queued(queue, "t")
    claim = _claim(queue)
    _crash_before_rename(queue, "t", lambda: queue.complete("t", claim.token))
    clock.advance(3600)
    assert _restart(queue.root, clock).reclaim_expired() == []
    assert _where(queue.root, "t") == ["done"]


def test_failer_died_after_writing_pending(queue: FolderQueue, clock: FakeClock) -> None:
    """A failed attempt survives the crash: the task waits for its backoff, then attempt 2."""
    _queued(queue, "t")
    claim = _claim(queue)
    _crash_before_rename(queue, "t", lambda: queue.fail("t", claim.token, reason="red"))
    restarted = _restart(queue.root, clock)
    restarted.reclaim_expired()
    assert _where(queue.root, "t") == ["pending"]
    assert restarted.get("t").attempts == 1
    assert restarted.claim("a", lease_s=60) is None  # still in its backoff
    clock.advance(10)
    assert _claim(restarted).attempt == 2


def test_canceller_died_after_writing_cancelled_of_a_claimed_task(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """A cancellation whose log never left `claimed/` ends in cancelled, its holder fenced."""
    _queued(queue, "t")
    claim = _claim(queue)
    _crash_before_rename(queue, "t", lambda: queue.cancel("t"))
    restarted = _restart(queue.root, clock)
    restarted.reclaim_expired()
    assert _where(queue.root, "t") == ["cancelled"]
    with pytest.raises(LeaseLost):
        restarted.heartbeat("t", claim.token, lease_s=60)


def test_canceller_died_after_writing_cancelled_of_a_pending_task(
    queue: FolderQueue, clock: FakeClock
) -> None:
    """A cancellation whose log never left `pending/` is never claimed; it ends cancelled."""
    _queued(queue, "t")
    _crash_before_rename(queue, "t", lambda: queue.cancel("t"))
    restarted = _restart(queue.root, clock)
    assert restarted.get("t").state == TaskState.CANCELLED
    assert restarted.claim("a", lease_s=60) is None
    assert _where(queue.root, "t") == ["cancelled"]


def test_listings_show_the_state_the_log_says(queue: FolderQueue, clock: FakeClock) -> None:
    """Until a cut-short move is finished, listings show the task as its log says it is."""
    _queued(queue, "t")
    _crash_before_rename(queue, "t", lambda: _claim(queue))
    restarted = _restart(queue.root, clock)
    assert [(r.task.id, r.state) for r in restarted.records()] == [("t", TaskState.CLAIMED)]
    assert [r.task.id for r in restarted.records(TaskState.PENDING)] == []


def test_a_torn_last_line_is_skipped_and_terminated(queue: FolderQueue, clock: FakeClock) -> None:
    """A crash mid-append leaves half a line: it is ignored, and the next event is intact."""
    _queued(queue, "t")
    path = _record_file(queue.root, TaskState.PENDING, "t")
    with open(path, "ab") as log:
        log.write(b'{"event":"claimed","lea')
    restarted = _restart(queue.root, clock)
    assert restarted.get("t").state == TaskState.PENDING
    claim = _claim(restarted)
    restarted.complete("t", claim.token)
    assert restarted.get("t").state == TaskState.DONE
    assert [a.outcome for a in restarted.get("t").history] == ["succeeded"]


def test_ingest_died_after_staging_the_file(queue: FolderQueue, clock: FakeClock) -> None:
    """A file left in `.queue/incoming/` is accepted on the next pass, byte for byte."""
    original = b'[[tasks]]\nid = "a"\nprompt = "p"\n[[tasks]]\nid = "b"\nprompt = "q"\n'
    (queue.root / ".queue" / "incoming" / "batch.toml").write_bytes(original)
    restarted = _restart(queue.root, clock)
    assert _drain(restarted) == ["a", "b"]
    assert (queue.root / "sources" / "batch.toml").read_bytes() == original
    assert list((queue.root / ".queue" / "incoming").iterdir()) == []


def test_ingest_died_after_writing_some_records(queue: FolderQueue, clock: FakeClock) -> None:
    """A staged file whose first task already has a record adds only the missing ones."""
    original = b'[[tasks]]\nid = "a"\nprompt = "p"\n[[tasks]]\nid = "b"\nprompt = "q"\n'
    staged = queue.root / ".queue" / "incoming" / "batch.toml"
    drop(queue.root, "batch.toml", original)
    queue.ingest()
    # Roll back to "record a written, record b not yet, file still staged".
    os.rename(queue.root / "sources" / "batch.toml", staged)
    _record_file(queue.root, TaskState.PENDING, "b").unlink()
    restarted = _restart(queue.root, clock)
    assert restarted.ingest().accepted == ("b",)
    assert _drain(restarted) == ["a", "b"]
    assert sorted(p.name for p in (queue.root / "sources").iterdir()) == ["batch.toml"]


def test_leftover_temp_files_are_not_tasks(queue: FolderQueue, clock: FakeClock) -> None:
    """A temp file from a write cut short is ignored by claims and counts."""
    _queued(queue, "t")
    (queue.root / "pending" / ".x.json.999.1.tmp").write_text('{"half')
    restarted = _restart(queue.root, clock)
    assert restarted.counts()[TaskState.PENDING] == 1
    assert _drain(restarted) == ["t"]


def test_rejecter_died_between_error_file_and_move(queue: FolderQueue, clock: FakeClock) -> None:
    """An `.error` written for a file still in the inbox: the file is rejected once, listed
    once, byte for byte, with its own error file."""
    original = b"prompt = 5\n"
    drop(queue.root, "bad.toml", original)
    (queue.root / "rejected" / "bad.toml.error").write_text("bad.toml:1: (cut short)\n")
    restarted = _restart(queue.root, clock)
    restarted.ingest()
    [listed] = restarted.rejected()
    assert listed.path.read_bytes() == original
    assert "field 'prompt'" in listed.reason
    assert restarted.counts()[TaskState.REJECTED] == 1


def test_on_ingest_hears_every_pass_that_accepted_something(root: Path, clock: FakeClock) -> None:
    """`on_ingest` is called by an explicit ingest and by the claim that notices new files,
    never for a pass that accepted nothing."""
    heard: list[tuple[str, ...]] = []
    queue = FolderQueue(root, clock=clock, boot_clock=clock, monotonic=clock,
                        on_ingest=lambda result: heard.append(result.accepted))
    drop(root, "a.toml", _task())
    queue.ingest()
    queue.ingest()
    drop(root, "b.toml", _task())
    assert _claim(queue).task.id == "a"
    assert heard == [("a",), ("b",)]
