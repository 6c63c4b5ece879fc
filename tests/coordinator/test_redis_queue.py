"""`RedisQueue` across real processes and queue objects, on the local Redis: exactly one claimer
per task, a crashed claimer's task back, a process that lost the queue's lock committing
nothing. (The behaviour every `TaskQueue` shares is in test_queue_conformance.py.)"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
from _workers import redis_claim_and_die, redis_claim_until_empty, redis_fleet_until_empty
from fakeclock import FakeClock
from redis_queues import REDIS_URL, fresh_prefix, redis_queue

from coordinator.agents import resolve_profile
from coordinator.errors import LeaseLost, LockTimeout
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.self_improve import LeaderLease, LoopLockHeld, LoopTakeover
from coordinator.task import TaskState

SPAWN = multiprocessing.get_context("spawn")


def test_eight_processes_claim_500_tasks_each_exactly_once(tmp_path: Path) -> None:
    """8 racing processes, each with its own connection, claim and complete every task once."""
    prefix = fresh_prefix()
    with redis_queue(prefix) as queue:
        ids = [f"t{i:03d}" for i in range(500)]
        for task_id in ids:
            queue.add("p", task_id=task_id)
        start = SPAWN.Event()
        workers = [
            SPAWN.Process(
                target=redis_claim_until_empty, args=(REDIS_URL, prefix, str(tmp_path), n, start)
            )
            for n in range(8)
        ]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(timeout=120)
            assert worker.exitcode == 0
        claims = [
            line.split()[0]
            for log in tmp_path.glob("worker-*.log")
            for line in log.read_text().splitlines()
        ]
        assert {i: n for i, n in Counter(claims).items() if n > 1} == {}
        assert sorted(claims) == ids
        counts = queue.counts()
        assert counts[TaskState.DONE] == 500 and counts[TaskState.PENDING] == 0
        assert all(len(r.history) == 1 and r.token == 1 for r in queue.records())
        assert len(list(tmp_path.glob("worker-*.log"))) > 1  # the processes really raced


def test_a_crashed_claimers_task_comes_back_at_once(tmp_path: Path) -> None:
    """A process that claimed a task and died (its owner is on this machine, and gone) loses
    it at the next reclaim, without waiting for the lease; its token is fenced off."""
    prefix = fresh_prefix()
    with redis_queue(prefix, retry_backoff_s=0) as queue:
        queue.add("p", task_id="t")
        receiver, sender = SPAWN.Pipe(duplex=False)
        child = SPAWN.Process(target=redis_claim_and_die, args=(REDIS_URL, prefix, 600, sender))
        child.start()
        assert receiver.poll(60), "the child never claimed"
        task_id, token = receiver.recv()
        child.join(timeout=30)
        assert queue.reclaim_expired() == [task_id]
        record = queue.get(task_id)
        assert (record.state, record.attempts) == (TaskState.PENDING, 1)
        with pytest.raises(LeaseLost):
            queue.complete(task_id, token)
        again = queue.claim("b", lease_s=60)
        assert again is not None and again.token == token + 1


def test_a_lease_without_an_owner_comes_back_when_it_expires(clock: FakeClock) -> None:
    """Claimed elsewhere with no owner to check, a task is waited for until its lease ends."""
    prefix = fresh_prefix()
    with redis_queue(prefix, clock=clock) as one, redis_queue(prefix, clock=clock) as other:
        one.add("p", task_id="t")
        claim = one.claim("a", lease_s=60)
        assert claim is not None
        clock.advance(59)
        assert other.reclaim_expired() == []
        clock.advance(2)
        assert other.reclaim_expired() == ["t"]
        with pytest.raises(LeaseLost):
            one.heartbeat("t", claim.token)


def test_queue_objects_see_each_others_changes() -> None:
    """Two queues on one prefix (two processes, say) share the tasks: what one adds, claims,
    cancels or clears, the other sees at its next operation."""
    prefix = fresh_prefix()
    with redis_queue(prefix) as one, redis_queue(prefix) as other:
        one.add("p", task_id="a")
        one.add("p", task_id="b", depends_on=("a",))
        assert other.get("b").waiting_for == ("a",)
        claim = other.claim("x", lease_s=60)
        assert claim is not None and claim.task.id == "a"
        assert one.claim("y", lease_s=60) is None  # b waits for a, which other holds
        other.complete("a", claim.token)
        claim = one.claim("y", lease_s=60)
        assert claim is not None and claim.task.id == "b"
        one.complete("b", claim.token)
        assert other.clear(TaskState.DONE) == ["a", "b"]
        assert one.records() == [] and one.get("a").state == TaskState.DONE


def test_threads_sharing_one_queue_claim_each_task_once() -> None:
    """Four threads on one `RedisQueue` object: every task once."""
    with redis_queue() as queue:
        for i in range(100):
            queue.add("p", task_id=f"t{i:03d}")
        won: list[str] = []

        def work() -> None:
            while (claim := queue.claim("w", lease_s=60)) is not None:
                won.append(claim.task.id)
                queue.complete(claim.task.id, claim.token)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(won) == [f"t{i:03d}" for i in range(100)]


def test_an_operation_that_lost_the_lock_commits_nothing() -> None:
    """A process whose lease on the queue's lock ran out mid-operation (it stalled) and whose
    lock another process took: its change is refused, it raises LockTimeout, and the task is
    as the other process left it."""
    import redis

    prefix = fresh_prefix()
    client = redis.Redis.from_url(REDIS_URL)
    with redis_queue(prefix) as stalled, redis_queue(prefix) as other:
        stalled.add("p", task_id="t")
        original_sync = stalled._sync

        def stall_then_lose_the_lock() -> None:
            original_sync()
            client.set(prefix + "lock", b"someone else's")  # what a stall past the lease allows

        stalled._sync = stall_then_lose_the_lock  # type: ignore[method-assign]
        with pytest.raises(LockTimeout):
            stalled.claim("a", lease_s=60)
        client.delete(prefix + "lock")
        record = other.get("t")
        assert (record.state, record.token) == (TaskState.PENDING, 0)
        stalled._sync = original_sync  # type: ignore[method-assign]
        claim = stalled.claim("a", lease_s=60)  # read again from Redis, not its own guess
        assert claim is not None and claim.token == 1
    client.close()


def test_the_queues_lock_is_waited_for_then_refused() -> None:
    """Held by a process that crashed mid-operation, the lock stops others only until its
    lease runs out; held for longer than `lock_timeout_s`, an operation says so."""
    import redis

    prefix = fresh_prefix()
    client = redis.Redis.from_url(REDIS_URL)
    waited = FakeClock()
    with redis_queue(prefix, lock_timeout_s=5, monotonic=waited, sleep=waited.advance) as queue:
        queue.add("p", task_id="t")
        client.set(prefix + "lock", b"a crashed holder", px=60_000)
        with pytest.raises(LockTimeout, match="the queue"):
            queue.get("t")
        assert 5 <= waited.now - FakeClock().now < 5.1  # it waited its timeout, no longer
        client.pexpire(prefix + "lock", 1)  # the holder's lease ends
        while client.exists(prefix + "lock"):
            pass  # a millisecond, on Redis's own clock
        assert queue.get("t").state == TaskState.PENDING
    client.close()


def test_fleets_in_two_processes_work_one_redis_queue_to_the_end(tmp_path: Path) -> None:
    """Two fleets (this process and a spawned one, as on two machines), each with two agents
    running a real command, share one queue: all four agents hold a task at once, every task
    is done once, and each attempt's output is in the log of the fleet that ran it."""
    prefix = fresh_prefix()
    go = tmp_path / "go"
    command = f"cat; while [ ! -e {go} ]; do sleep 0.01; done"
    with redis_queue(prefix, logs_dir=tmp_path / "here") as queue:
        for i in range(12):
            queue.add(f"job {i}", task_id=f"job-{i:02d}")
        other = SPAWN.Process(
            target=redis_fleet_until_empty,
            args=(REDIS_URL, prefix, str(tmp_path / "there"), command),
        )
        other.start()
        fleet = Fleet(
            queue,
            resolve_profile(command, {}),
            settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
            tunables=lambda: FleetTunables(agents=2, lease_s=60),
        )
        results = []
        here = threading.Thread(target=lambda: results.append(fleet.run(until_empty=True)))
        here.start()
        while queue.count(TaskState.CLAIMED) < 4:  # both fleets' agents are at work
            assert other.is_alive() and here.is_alive()
        go.touch()
        here.join(timeout=120)
        other.join(timeout=120)
        assert other.exitcode == 0
        assert results[0].counts[TaskState.DONE] == 12
        records = queue.records()
        assert all(r.state == TaskState.DONE and len(r.history) == 1 for r in records)
        ran_in = set()
        for record in records:
            log = Path(record.history[0].log_path or "")
            assert log.read_text().startswith(record.task.prompt)
            ran_in.add(log.parents[1].name)
        assert ran_in == {"here", "there"}


def test_task_files_dropped_into_an_inbox_join_the_queue(tmp_path: Path) -> None:
    """A good file's tasks are created and it moves to sources/; a bad one moves to
    rejected/ with the reason naming its line and field; a file whose tasks are already
    there (its ingest committed, then a crash kept it in place) just moves on."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    two_tasks = '[[tasks]]\nid = "a"\nprompt = "p"\n'
    two_tasks += '[[tasks]]\nid = "b"\nprompt = "q"\ndepends_on = ["a"]\n'
    (inbox / "good.toml").write_text(two_tasks)
    (inbox / "bad.toml").write_text('prompt = "p"\npriority = "urgent-ish"\n')
    (inbox / ".partial.toml").write_text('prompt = "not yet"\n')
    accepted: list[tuple[str, ...]] = []
    with redis_queue(inbox=inbox, on_ingest=lambda r: accepted.append(r.accepted)) as queue:
        result = queue.ingest()
        assert result.accepted == ("a", "b") and accepted == [("a", "b")]
        [rejected] = result.rejected
        assert rejected.name == "bad.toml"
        assert rejected.reason.startswith("bad.toml:2: field 'priority'")
        assert (inbox / "sources" / "good.toml").exists()
        assert (inbox / "rejected" / "bad.toml.error").exists()
        assert (inbox / ".partial.toml").exists()  # still being written: left alone
        assert queue.get("b").source == "sources/good.toml"
        assert queue.counts()[TaskState.REJECTED] == 1
        (inbox / "again.toml").write_text('id = "a"\nprompt = "p"\n')  # as if never moved
        assert queue.ingest().accepted == ()
        assert (inbox / "sources" / "again.toml").exists()
        (inbox / "clash.toml").write_text('id = "a"\nprompt = "something else"\n')
        [clash] = queue.ingest().rejected
        assert "already known" in clash.reason
        (inbox / "late.toml").write_text('prompt = "dropped while fleets run"\n')
        claim = queue.claim("w", lease_s=60)  # a claim looks at the inbox first
        assert claim is not None and claim.task.id == "a"
        assert queue.get("late").state == TaskState.PENDING


def test_an_id_only_a_rejected_file_defined_fails_its_dependents_on_every_machine(
    tmp_path: Path,
) -> None:
    """a waits for b; b's file, dropped into one machine's inbox, is rejected: a claim on
    another machine fails a, naming b, as a folder queue does."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with redis_queue(inbox=inbox) as here, redis_queue(here.prefix) as there:
        here.add("p", task_id="a", depends_on=("b",))
        (inbox / "b.toml").write_text('prompt = "p"\npriority = "urgent-ish"\n')
        assert [r.name for r in here.ingest().rejected] == ["b.toml"]
        assert there.claim("w", lease_s=60) is None
        record = there.get("a")
        assert (record.state, record.reason) == (TaskState.FAILED, "dependency 'b' rejected")
        here.add("p", task_id="c", depends_on=("d",))  # d: rejected, then defined after all
        (inbox / "d.toml").write_text('prompt = "p"\npriority = "urgent-ish"\n')
        here.ingest()
        (inbox / "d.toml").write_text('prompt = "p"\n')
        assert here.ingest().accepted == ("d",)
        claim = there.claim("w", lease_s=60)
        assert claim is not None and claim.task.id == "d"
        assert there.get("c").state is TaskState.PENDING  # it waits for d, as it should


def test_one_self_improvement_loop_leads_a_shared_queue() -> None:
    """The loop's lease on a queue: one holder, named to the next; a holder whose lease
    another process took learns it lost it (and its release leaves the new lease alone)."""
    with redis_queue() as queue:
        key = queue.prefix + "self-improve"
        first = LeaderLease(queue.client, key)
        first.acquire()
        assert 0 < queue.client.pttl(key) <= 30_000  # it runs out unless renewed
        with pytest.raises(LoopLockHeld, match=f"for this queue runs in pid {os.getpid()} on"):
            LeaderLease(queue.client, key).acquire()
        assert first.renew()
        queue.client.set(key, "pid 1 on elsewhere")  # it ran out; another process took it
        assert not first.renew()
        lost: list[str] = []
        told = threading.Event()
        first.keep_renewing(lambda why: (lost.append(why), told.set()), every_s=0.001)
        assert told.wait(timeout=30)
        assert lost == ["another process holds it now"]
        first.release()
        assert queue.client.get(key) == b"pid 1 on elsewhere"
        queue.client.delete(key)
        with LeaderLease(queue.client, key):  # free again: the next one gets it
            assert queue.client.get(key) is not None
        assert queue.client.get(key) is None  # its holder deleted it


def test_a_coordinator_without_the_queues_loop_takes_the_lease_when_it_is_free() -> None:
    with redis_queue() as queue:
        key = queue.prefix + "self-improve"
        holder = LeaderLease(queue.client, key)
        holder.acquire()
        refused = threading.Semaphore(0)

        class Counted(LeaderLease):
            def acquire(self) -> None:
                try:
                    super().acquire()
                except LoopLockHeld:
                    refused.release()
                    raise

        mine = Counted(queue.client, key)
        acquired = threading.Event()
        takeover = LoopTakeover(mine, every_s=0.001, on_acquired=acquired.set)
        takeover.start()
        for _ in range(3):  # held: it asks again and again, and does not lead
            assert refused.acquire(timeout=30)
        assert not acquired.is_set()
        holder.release()
        assert acquired.wait(timeout=30)
        assert mine.renew()  # the lease is this one's now
        takeover.stop()
        assert queue.client.get(key) is None  # and let go when it stopped
