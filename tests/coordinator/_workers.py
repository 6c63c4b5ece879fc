"""Helpers shared by the coordinator tests and the worker processes they spawn.

The worker functions are top-level so that the `spawn` start method can import them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from coordinator.lease import Owner
from coordinator.queue import FolderQueue


def drop(folder: Path, name: str, text: str | bytes) -> Path:
    """Drop a task file into the inbox the documented way: write elsewhere, then rename."""
    data = text.encode() if isinstance(text, str) else text
    tmp = folder / f".{name}.partial"
    tmp.write_bytes(data)
    target = folder / name
    os.rename(tmp, target)
    return target


def claim_until_empty(root: str, log_dir: str, worker: int, start: object) -> None:
    """Claim and complete tasks until none is ready, appending each won id to a log."""
    _claim_until_empty(FolderQueue(root), log_dir, worker, start)


def _claim_until_empty(queue: Any, log_dir: str, worker: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    with open(Path(log_dir) / f"worker-{worker}.log", "a") as log:
        while True:
            claim = queue.claim(f"w{worker}", lease_s=60)
            if claim is None:
                return
            log.write(f"{claim.task.id} {claim.token}\n")
            log.flush()
            queue.complete(claim.task.id, claim.token)


def claim_and_hang(root: str, with_owner: bool, ready: object) -> None:
    """Claim one task, report its id and token, then wait to be killed."""
    queue = FolderQueue(root)
    owner = Owner.current() if with_owner else None
    claim = queue.claim("doomed", lease_s=60, owner=owner)
    assert claim is not None
    ready.send((claim.task.id, claim.token))  # type: ignore[attr-defined]
    while True:
        time.sleep(60)


def claim_with_chaos(root: str, log_dir: str, worker: int, start: object) -> None:
    """Claim until empty; complete, fail or release each claim at random (seeded per worker).

    Logs one line per action that the queue accepted: `<action> <id> <token>`.
    """
    import random

    rng = random.Random(worker)
    queue = FolderQueue(root, retry_backoff_s=0)
    start.wait()  # type: ignore[attr-defined]
    with open(Path(log_dir) / f"worker-{worker}.log", "a") as log:
        while True:
            claim = queue.claim(f"w{worker}", lease_s=60)
            if claim is None:
                return
            roll = rng.random()
            if roll < 0.6:
                queue.complete(claim.task.id, claim.token)
                action = "complete"
            elif roll < 0.8:
                queue.fail(claim.task.id, claim.token, reason="chaos")
                action = "fail"
            else:
                queue.release(claim.task.id, claim.token)
                action = "release"
            log.write(f"{action} {claim.task.id} {claim.token}\n")
            log.flush()


def drop_many(root: str, count: int, start: object) -> None:
    """Drop `count` task files one by one while the claimers run."""
    start.wait()  # type: ignore[attr-defined]
    for i in range(count):
        drop(Path(root), f"late-{i:03d}.toml", 'prompt = "p"\n')


def claim_forever(root: str) -> None:
    """Claim and complete as the owner process until killed (or nothing is left)."""
    queue = FolderQueue(root, retry_backoff_s=0)
    owner = Owner.current()
    while (claim := queue.claim("mortal", lease_s=600, owner=owner)) is not None:
        queue.complete(claim.task.id, claim.token)


def claim_on_a_full_disk(root: str, room: int, conn: object) -> None:
    """Claim with the file size limit `room` bytes past the task's log (a disk filling up
    mid-write); send back the error's text, or "claimed"."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of dying
    queue = FolderQueue(root)
    size = os.path.getsize(Path(root) / "pending" / "t.jsonl")
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + room, resource.RLIM_INFINITY))
    try:
        claim = queue.claim("full", lease_s=60)
        conn.send("claimed" if claim else "none")  # type: ignore[attr-defined]
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def redis_claim_until_empty(
    url: str, prefix: str, log_dir: str, worker: int, start: object
) -> None:
    """`claim_until_empty` on a `RedisQueue`."""
    from coordinator.redis_queue import RedisQueue

    _claim_until_empty(RedisQueue(url, prefix=prefix), log_dir, worker, start)


def redis_claim_and_die(url: str, prefix: str, lease_s: float, ready: object) -> None:
    """Claim one task on a `RedisQueue` (with this process as its owner), report it, and die
    without a word, as a crashed agent does."""
    from coordinator.redis_queue import RedisQueue

    queue = RedisQueue(url, prefix=prefix)
    claim = queue.claim("doomed", lease_s=lease_s, owner=Owner.current())
    assert claim is not None
    ready.send((claim.task.id, claim.token))  # type: ignore[attr-defined]
    os._exit(1)


def redis_fleet_until_empty(url: str, prefix: str, logs_dir: str, command: str) -> None:
    """A fleet of two agents running `command` on a `RedisQueue`, until no task is left."""
    from coordinator.agents import resolve_profile
    from coordinator.fleet import Fleet, FleetSettings, FleetTunables
    from coordinator.redis_queue import RedisQueue

    queue = RedisQueue(url, prefix=prefix, logs_dir=logs_dir)
    Fleet(
        queue,
        resolve_profile(command, {}),
        settings=FleetSettings(poll_s=0.05, workdir=Path(logs_dir).parent),
        tunables=lambda: FleetTunables(agents=2, lease_s=60),
    ).run(until_empty=True)
