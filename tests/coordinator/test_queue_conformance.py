"""One conformance suite for every `TaskQueue`: `FolderQueue`, `MemoryQueue` and `RedisQueue`
(against the local Redis on 127.0.0.1:6379; skipped, saying so, without one). Each test states
behaviour any implementation must have."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeclock import FakeClock
from redis_queues import redis_queue

from coordinator.errors import InvalidTransition, LeaseLost, TaskFileError, UnknownTask
from coordinator.memory_queue import MemoryQueue
from coordinator.queue import FolderQueue, TaskQueue
from coordinator.task import Priority, TaskState


@pytest.fixture(params=["folder", "memory", "redis"])
def tq(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[TaskQueue]:
    """Each implementation, on a fake clock, with a 10 s backoff base."""
    if request.param == "folder":
        yield FolderQueue(tmp_path / "tasks", clock=clock, boot_clock=clock, monotonic=clock,
                          retry_backoff_s=10.0)
    elif request.param == "memory":
        yield MemoryQueue(clock=clock, retry_backoff_s=10.0, logs_dir=tmp_path / "logs")
    else:
        with redis_queue(clock=clock, retry_backoff_s=10.0, logs_dir=tmp_path / "logs") as q:
            yield q


def test_it_is_a_task_queue(tq: TaskQueue) -> None:
    """The implementation satisfies the protocol."""
    assert isinstance(tq, TaskQueue)


def test_priority_then_arrival_order(tq: TaskQueue) -> None:
    """Higher priority first; equal priority in arrival order."""
    tq.add("p", task_id="n1")
    tq.add("p", task_id="low", priority=Priority.LOW)
    tq.add("p", task_id="c", priority=Priority.CRITICAL)
    tq.add("p", task_id="n2")
    order = []
    while (claim := tq.claim("a", lease_s=60)) is not None:
        order.append(claim.task.id)
        tq.complete(claim.task.id, claim.token)
    assert order == ["c", "n1", "n2", "low"]


def test_a_stale_token_is_fenced(tq: TaskQueue, clock: FakeClock) -> None:
    """After a lease expires and the task is claimed again, the old token is refused."""
    tq.add("p", task_id="t")
    first = tq.claim("a", lease_s=60)
    assert first is not None
    clock.advance(61)
    assert tq.reclaim_expired() == ["t"]
    clock.advance(10)
    second = tq.claim("b", lease_s=60)
    assert second is not None and second.token > first.token
    with pytest.raises(LeaseLost):
        tq.complete("t", first.token)


def test_a_failure_backs_off_then_fails_for_good(tq: TaskQueue, clock: FakeClock) -> None:
    """A failed attempt waits its backoff; the last one fails the task with the reason."""
    tq.add("p", task_id="t", max_attempts=2)
    claim = tq.claim("a", lease_s=60)
    assert claim is not None
    assert tq.fail("t", claim.token, reason="red") is TaskState.PENDING
    assert tq.claim("a", lease_s=60) is None
    assert tq.next_ready_at() == clock() + 10
    clock.advance(10)
    claim = tq.claim("a", lease_s=60)
    assert claim is not None and claim.attempt == 2
    assert tq.fail("t", claim.token, reason="still red") is TaskState.FAILED
    assert tq.get("t").reason == "failed on attempt 2 of 2: still red"


def test_dependencies_wait_and_failures_propagate(tq: TaskQueue) -> None:
    """A dependent waits for its dependency; a cancelled dependency fails it."""
    tq.add("p", task_id="child", depends_on=("parent",))
    assert tq.get("child").unknown_dependencies == ("parent",)
    tq.add("p", task_id="parent")
    assert tq.get("child").waiting_for == ("parent",)
    tq.cancel("parent")
    assert tq.claim("a", lease_s=60) is None
    assert tq.get("child").reason == "dependency 'parent' cancelled"


def test_priority_is_inherited_by_what_is_waited_for(tq: TaskQueue) -> None:
    """A low task a critical one waits for is claimed before a normal one."""
    tq.add("p", task_id="n")
    tq.add("p", task_id="low", priority=Priority.LOW)
    tq.add("p", task_id="c", priority=Priority.CRITICAL, depends_on=("low",))
    claim = tq.claim("a", lease_s=60)
    assert claim is not None and claim.task.id == "low"


def test_bad_adds_are_refused(tq: TaskQueue) -> None:
    """An empty prompt, a known id and a cycle are refused."""
    tq.add("p", task_id="a", depends_on=("b",))
    with pytest.raises(TaskFileError):
        tq.add("", task_id="empty")
    with pytest.raises(TaskFileError, match="already known"):
        tq.add("p", task_id="a")
    with pytest.raises(TaskFileError, match="cycle"):
        tq.add("p", task_id="b", depends_on=("a",))
    with pytest.raises(UnknownTask):
        tq.get("b")


def test_user_actions_follow_the_states(tq: TaskQueue) -> None:
    """Retry only failed/cancelled; cancel only pending/claimed; release keeps attempts."""
    tq.add("p", task_id="t")
    with pytest.raises(InvalidTransition):
        tq.retry("t")
    claim = tq.claim("a", lease_s=60)
    assert claim is not None
    tq.release("t", claim.token)
    assert tq.get("t").attempts == 0
    tq.cancel("t")
    assert tq.retry("t").state is TaskState.PENDING
    assert tq.counts()[TaskState.PENDING] == 1


def test_heartbeat_renews_for_the_claimed_length(tq: TaskQueue, clock: FakeClock) -> None:
    """A heartbeat without a length renews for the length of the claim."""
    tq.add("p", task_id="t")
    claim = tq.claim("a", lease_s=120)
    assert claim is not None
    clock.advance(100)
    assert tq.heartbeat("t", claim.token) == clock() + 120
    clock.advance(100)
    assert tq.reclaim_expired() == []
