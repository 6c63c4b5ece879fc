"""The folder queue across real processes: races, and claims left by a SIGKILLed process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from _workers import (
    claim_and_hang,
    claim_forever,
    claim_until_empty,
    claim_with_chaos,
    drop,
    drop_many,
)
from fakeclock import FakeClock

from coordinator.errors import LeaseLost
from coordinator.lease import boot_clock
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


def _queue_with_one_task(
    tmp_path: Path, clock: FakeClock, boot: FakeClock | None = None
) -> FolderQueue:
    root = tmp_path / "tasks"
    queue = FolderQueue(root, clock=clock, boot_clock=boot or FakeClock(start=boot_clock()),
                        retry_backoff_s=0)
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
    clock = FakeClock(start=time.time())  # the child's lease runs on the real clocks
    boot = FakeClock(start=boot_clock())
    queue = _queue_with_one_task(tmp_path, clock, boot)
    child, task_id, _ = _claim_in_child(queue.root, with_owner=False)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(timeout=10)
    boot.now = boot_clock()  # the real boot clock, now that the child has claimed
    assert queue.reclaim_expired() == []
    boot.advance(61)  # the child's lease was 60 s from its claim, on this machine's boot clock
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


def test_racing_completes_fails_and_releases_keep_every_task_exactly_once(
    tmp_path: Path,
) -> None:
    """Under random complete/fail/release by 6 processes, each task is completed exactly
    once, and every claim of a task carries a new, larger fencing token."""
    root, logs = tmp_path / "tasks", tmp_path / "logs"
    logs.mkdir()
    queue = FolderQueue(root)
    ids = [f"c{i:03d}" for i in range(150)]
    text = "".join(f'[[tasks]]\nid = "{i}"\nprompt = "p"\nmax_attempts = 100\n' for i in ids)
    drop(root, "many.toml", text)
    assert len(queue.ingest().accepted) == 150
    start = SPAWN.Event()
    workers = [
        SPAWN.Process(target=claim_with_chaos, args=(str(root), str(logs), n, start))
        for n in range(6)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    actions = [line.split() for log in logs.iterdir() for line in log.read_text().splitlines()]
    completed = Counter(task_id for action, task_id, _ in actions if action == "complete")
    assert completed == Counter(ids)
    tokens: dict[str, list[int]] = {}
    for _, task_id, token in actions:
        tokens.setdefault(task_id, []).append(int(token))
    assert all(len(set(t)) == len(t) for t in tokens.values())  # no token handed out twice
    for record in queue.records():
        assert record.state is TaskState.DONE
        assert record.token == max(tokens[record.task.id])
        assert len(record.history) == len(tokens[record.task.id])


def test_files_dropped_while_processes_claim_are_each_claimed_once(tmp_path: Path) -> None:
    """A dropper process adds files while 4 processes claim: none lost, none claimed twice."""
    root, logs = tmp_path / "tasks", tmp_path / "logs"
    logs.mkdir()
    queue = FolderQueue(root)
    for i in range(100):
        drop(root, f"early-{i:03d}.toml", 'prompt = "p"\n')
    queue.ingest()
    start = SPAWN.Event()
    dropper = SPAWN.Process(target=drop_many, args=(str(root), 100, start))
    workers = [
        SPAWN.Process(target=claim_until_empty, args=(str(root), str(logs), n, start))
        for n in range(4)
    ]
    for process in (dropper, *workers):
        process.start()
    start.set()
    for process in (dropper, *workers):
        process.join(timeout=60)
        assert process.exitcode == 0
    claim_until_empty(str(root), str(logs), 99, start)  # whatever arrived after they left
    claims = Counter(
        line.split()[0] for log in logs.iterdir() for line in log.read_text().splitlines()
    )
    expected = {f"early-{i:03d}" for i in range(100)} | {f"late-{i:03d}" for i in range(100)}
    assert set(claims) == expected
    assert max(claims.values()) == 1


def test_threads_sharing_one_queue_claim_each_task_once(tmp_path: Path) -> None:
    """8 threads over one FolderQueue object: every task claimed exactly once."""
    root = tmp_path / "tasks"
    queue = FolderQueue(root)
    text = "".join(f'[[tasks]]\nid = "t{i:03d}"\nprompt = "p"\n' for i in range(200))
    drop(root, "many.toml", text)
    queue.ingest()
    won: list[str] = []
    go = threading.Event()

    def agent(n: int) -> None:
        go.wait()
        while (claim := queue.claim(f"thread-{n}", lease_s=60)) is not None:
            won.append(claim.task.id)  # list.append is atomic under the GIL
            queue.complete(claim.task.id, claim.token)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won) == [f"t{i:03d}" for i in range(200)]
    assert queue.counts()[TaskState.DONE] == 200


def test_sigkill_at_any_point_loses_nothing_and_completes_nothing_twice(tmp_path: Path) -> None:
    """A claimer SIGKILLed again and again mid-work: afterwards every task is done once, in
    exactly one folder."""
    root = tmp_path / "tasks"
    queue = FolderQueue(root, retry_backoff_s=0)
    text = "".join(
        f'[[tasks]]\nid = "k{i:03d}"\nprompt = "p"\nmax_attempts = 50\n' for i in range(300)
    )
    drop(root, "many.toml", text)
    queue.ingest()
    for round_ in range(1, 6):
        child = SPAWN.Process(target=claim_forever, args=(str(root),))
        child.start()
        while queue.counts()[TaskState.DONE] < 40 * round_ and child.is_alive():
            time.sleep(0.001)  # waiting for progress to kill into, not for time to pass
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(timeout=10)
    claim_forever(str(root))  # the dead owners' claims come back at once
    records = queue.records()
    assert len(records) == 300
    for record in records:
        assert record.state is TaskState.DONE
        assert [a.outcome for a in record.history].count("succeeded") == 1
        folders = [s for s in TaskState if (root / s.value / f"{record.task.id}.jsonl").exists()]
        assert folders == [TaskState.DONE]
