"""The folder queue across real processes: races, and claims left by a SIGKILLed process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from _workers import FakeClock, claim_and_hang, claim_until_empty, drop

from coordinator.errors import LeaseLost
from coordinator.queue import FolderQueue
from coordinator.task import TaskState

SPAWN = multiprocessing.get_context("spawn")


def test_eight_processes_claim_500_tasks_each_exactly_once(tmp_path: Path) -> None:
    """8 racing processes claim and complete every task once: no duplicate, none left."""
    root, logs = tmp_path / "tasks", tmp_path / "logs"
    logs.mkdir()
    queue = FolderQueue(root)
    ids = [f"t{i:03d}" for i in range(500)]
    for task_id in ids:
        drop(root, f"{task_id}.toml", 'prompt = "p"\n')
    assert len(queue.ingest().accepted) == 500
    start = SPAWN.Event()
    workers = [
        SPAWN.Process(target=claim_until_empty, args=(str(root), str(logs), n, start))
        for n in range(8)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    claims = [
        line.split()[0]
        for log in logs.iterdir()
        for line in log.read_text().splitlines()
    ]
    duplicates = {task_id: n for task_id, n in Counter(claims).items() if n > 1}
    assert duplicates == {}
    assert sorted(claims) == ids
    assert queue.counts()[TaskState.DONE] == 500
    assert queue.counts()[TaskState.PENDING] == queue.counts()[TaskState.CLAIMED] == 0
    assert all(len(r.history) == 1 and r.token == 1 for r in queue.records())
    assert len({log.name for log in logs.iterdir()}) > 1  # the processes really raced


def _claim_in_child(root: Path, *, with_owner: bool) -> tuple[multiprocessing.Process, str, int]:
    receiver, sender = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=claim_and_hang, args=(str(root), with_owner, sender))
    child.start()
    assert receiver.poll(30), "the child never claimed"
    task_id, token = receiver.recv()
    return child, task_id, token


def _queue_with_one_task(tmp_path: Path, clock: FakeClock) -> FolderQueue:
    root = tmp_path / "tasks"
    queue = FolderQueue(root, clock=clock, retry_backoff_s=0)
    drop(root, "t.toml", 'prompt = "p"\n')
    queue.ingest()
    return queue


def test_claim_of_a_sigkilled_owner_is_reclaimed_at_once(tmp_path: Path) -> None:
    """A claim whose owner process was SIGKILLed is taken back without waiting for its lease."""
    queue = _queue_with_one_task(tmp_path, FakeClock(start=time.time()))
    child, task_id, token = _claim_in_child(queue.root, with_owner=True)
    assert queue.reclaim_expired() == []  # alive: its claim is respected
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(timeout=10)
    assert queue.reclaim_expired() == [task_id]
    record = queue.get(task_id)
    assert (record.state, record.attempts) == (TaskState.PENDING, 1)
    with pytest.raises(LeaseLost):
        queue.complete(task_id, token)


def test_claim_without_owner_comes_back_only_after_its_lease(tmp_path: Path) -> None:
    """Without an owner to check, a dead claimer's task waits out its lease."""
    clock = FakeClock(start=time.time())  # the child's lease runs on the real clock
    queue = _queue_with_one_task(tmp_path, clock)
    child, task_id, _ = _claim_in_child(queue.root, with_owner=False)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(timeout=10)
    assert queue.reclaim_expired() == []
    clock.advance(61)  # the child's lease was 60 s of real time from its claim
    assert queue.reclaim_expired() == [task_id]
    assert queue.claim("next", lease_s=60) is not None


def test_claim_of_a_killed_but_unreaped_owner_is_reclaimed_at_once(tmp_path: Path) -> None:
    """A SIGKILLed owner whose parent has not reaped it yet (a zombie) is dead all the same."""
    queue = _queue_with_one_task(tmp_path, FakeClock(start=time.time()))
    child, task_id, _ = _claim_in_child(queue.root, with_owner=True)
    try:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        for _ in range(1000):  # wait (without reaping) until the kernel has made it a zombie
            if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.001)
        assert queue.reclaim_expired() == [task_id]
    finally:
        child.join(timeout=10)
