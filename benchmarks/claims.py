"""Claim throughput of the folder queue against the filesystem's limit and Huey.

    .venv/bin/python benchmarks/claims.py [--tasks 10000] [--procs 8] [--dir DIR]
        [--profile FILE]  (cProfile of queue worker 0)  [--only-queue]

In one run, on one disk (a fresh folder under --dir):

1. writes N task files and ingests them (timed and printed on its own, not part of claims/s);
2. the folder queue: P processes claim and complete no-op tasks through the public
   `FolderQueue` API until none is left; claims/s is N over the time from the start signal
   to the last process finding the queue empty; latency is that of `claim()` alone;
   duplicates are task ids claimed more than once (any > 0 is a bug);
3. bare `os.rename`: P processes claim copies of the same N files with one rename each
   (each starts at its own offset of the listing, as a good rename loop would): the
   filesystem's limit for a rename-based claim;
4. Huey with `SqliteHuey` (its defaults: WAL, SQLite's synchronous=FULL, so it fsyncs its
   commits while the folder queue never fsyncs): N no-op jobs enqueued
   first (not timed), then `huey_consumer -w P -k process`; jobs/s is N over the time from
   the first job leaving the queue to the queue being empty (polled every 2 ms).

5. the Redis queue (`RedisQueue`, on the local Redis at 127.0.0.1:6379; skipped without one):
   `--redis-tasks` tasks added through `add` (not timed), then P processes claim and complete
   them as in 2; its claims scan the pending tasks (O(pending), `MemoryQueue`'s rules), so it
   runs on fewer tasks than the folder queue.

6. scale (one process, so each figure is the cost of one call): claims/s and p99 claim
   latency with 100 and with 100,000 pending tasks, half of them high-priority tasks blocked
   on a dependency that stays claimed (the worst case for a claim that looked at them);
   and the cost of a heartbeat on a fresh lease against one after 10,000 heartbeats.
   `--short` runs the scale part alone, at 100 and 2,000 tasks and 1,000 heartbeats (the
   test suite runs it so the benchmark cannot rot).

The last line printed is one JSON object: claims_per_s, p99_claim_ms, duplicates,
rename_per_s, huey_per_s, claims_per_s_100k, p99_claim_ms_100k, claims_per_s_100,
p99_claim_ms_100, scale_claims_ratio, heartbeat_first_ms, heartbeat_late_ms,
heartbeat_ratio, redis_claims_per_s, redis_duplicates (None without Redis) (plus a few more
keys for the record; with --short only the scale keys).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from coordinator.queue import FolderQueue

SPAWN = multiprocessing.get_context("spawn")


def _queue_worker(root: str, worker: int, profile: str | None, start: Any, out: str) -> None:
    if profile and worker == 0:
        import cProfile

        cProfile.runctx(
            "_queue_worker(root, worker, None, start, out)", globals(), locals(), profile
        )
        return
    queue = FolderQueue(root)
    ids: list[str] = []
    latencies: list[float] = []
    start.wait()
    while True:
        t0 = time.perf_counter()
        claim = queue.claim(f"w{worker}", lease_s=300)
        t1 = time.perf_counter()
        if claim is None:
            break
        latencies.append(t1 - t0)
        queue.complete(claim.task.id, claim.token)
        ids.append(claim.task.id)
    Path(out).write_text(json.dumps({"ids": ids, "lat": latencies, "end": time.monotonic()}))


def _redis_worker(prefix: str, worker: int, start: Any, out: str) -> None:
    from coordinator.redis_queue import RedisQueue

    queue = RedisQueue(prefix=prefix)
    ids: list[str] = []
    start.wait()
    while (claim := queue.claim(f"w{worker}", lease_s=300)) is not None:
        queue.complete(claim.task.id, claim.token)
        ids.append(claim.task.id)
    Path(out).write_text(json.dumps({"ids": ids, "end": time.monotonic()}))


def bench_redis(base: Path, n: int, procs: int) -> dict[str, Any] | None:
    """The Redis queue as the folder queue is measured, or None without a Redis to use."""
    try:
        import redis

        client = redis.Redis(socket_timeout=1)
        client.ping()
        from coordinator.redis_queue import RedisQueue
    except Exception:
        return None
    prefix = f"bench:claims:{os.getpid()}:{time.time_ns()}:"
    try:
        queue = RedisQueue(prefix=prefix)
        for i in range(n):
            queue.add(f"no-op task {i}", task_id=f"task-{i:05d}")
        outs = base / "redis-out"
        outs.mkdir()
        wall, results = _run_workers(
            _redis_worker, lambda w: (prefix, w, str(outs / f"{w}.json")), procs
        )
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    claims = Counter(task_id for r in results for task_id in r["ids"])
    return {
        "claims_per_s": sum(claims.values()) / wall,
        "duplicates": sum(c - 1 for c in claims.values() if c > 1),
        "missing": n - len(claims),
    }


def _rename_worker(pending: str, claimed: str, worker: int, procs: int, start: Any,
                   out: str) -> None:
    start.wait()
    names = sorted(os.listdir(pending))
    k = len(names) * worker // procs
    won = []
    for name in names[k:] + names[:k]:
        try:
            os.rename(os.path.join(pending, name), os.path.join(claimed, name))
        except FileNotFoundError:
            continue
        won.append(name)
    Path(out).write_text(json.dumps({"ids": won, "end": time.monotonic()}))


def _run_workers(target: Any, args_of: Any, procs: int) -> tuple[float, list[dict[str, Any]]]:
    """Start P workers, release them together; return (seconds to the last one done, outs)."""
    start = SPAWN.Barrier(procs + 1)  # everyone imported and at the start line
    outs = [f"{args_of(n)[-1]}" for n in range(procs)]
    workers = [SPAWN.Process(target=target, args=(*args_of(n)[:-1], start, outs[n]))
               for n in range(procs)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.monotonic()
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise SystemExit(f"a worker exited with {w.exitcode}")
    results = [json.loads(Path(o).read_text()) for o in outs]
    return max(r["end"] for r in results) - t0, results


def _write_task_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"task-{i:05d}.toml"
        tmp = folder / f".{name}.tmp"
        tmp.write_text(f'prompt = "no-op task {i}"\n')
        os.rename(tmp, folder / name)


def bench_queue(base: Path, n: int, procs: int, profile: str | None) -> dict[str, Any]:
    root = base / "queue"
    _write_task_files(root, n)
    t0 = time.perf_counter()
    accepted = FolderQueue(root).ingest().accepted
    ingest_s = time.perf_counter() - t0
    assert len(accepted) == n, f"ingested {len(accepted)} of {n}"
    outs = base / "queue-out"
    outs.mkdir()
    wall, results = _run_workers(
        _queue_worker, lambda w: (str(root), w, profile, str(outs / f"{w}.json")), procs
    )
    claims = Counter(task_id for r in results for task_id in r["ids"])
    latencies = sorted(x for r in results for x in r["lat"])
    return {
        "ingest_s": ingest_s,
        "wall_s": wall,
        "claims": sum(claims.values()),
        "claims_per_s": sum(claims.values()) / wall,
        "p50_claim_ms": statistics.median(latencies) * 1000,
        "p99_claim_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "duplicates": sum(c - 1 for c in claims.values() if c > 1),
        "missing": n - len(claims),
        "per_worker": sorted(len(r["ids"]) for r in results),
    }


def bench_rename(base: Path, n: int, procs: int) -> dict[str, Any]:
    pending, claimed = base / "rename" / "pending", base / "rename" / "claimed"
    claimed.mkdir(parents=True)
    shutil.copytree(base / "queue" / "sources", pending)  # the same task files, byte for byte
    assert len(os.listdir(pending)) == n
    outs = base / "rename-out"
    outs.mkdir()
    wall, results = _run_workers(
        _rename_worker,
        lambda w: (str(pending), str(claimed), w, procs, str(outs / f"{w}.json")),
        procs,
    )
    won = Counter(name for r in results for name in r["ids"])
    return {
        "wall_s": wall,
        "rename_per_s": sum(won.values()) / wall,
        "duplicates": sum(c - 1 for c in won.values() if c > 1),
        "missing": n - len(won),
    }


_HUEY_APP = """
from huey import SqliteHuey

huey = SqliteHuey("bench", filename={db!r})


@huey.task()
def noop():
    pass
"""


def bench_huey(base: Path, n: int, procs: int) -> dict[str, Any]:
    app_dir = base / "huey"
    app_dir.mkdir()
    (app_dir / "huey_bench_app.py").write_text(_HUEY_APP.format(db=str(app_dir / "huey.db")))
    sys.path.insert(0, str(app_dir))
    import huey_bench_app  # type: ignore[import-not-found]

    app = huey_bench_app.huey
    t0 = time.perf_counter()
    for _ in range(n):
        huey_bench_app.noop()
    enqueue_s = time.perf_counter() - t0
    assert app.pending_count() == n
    env = {**os.environ, "PYTHONPATH": str(app_dir)}
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "huey_bench_app.huey",
         "-w", str(procs), "-k", "process", "-q", "-C"],
        cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        began = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            left = app.pending_count()
            now = time.monotonic()
            if began is None and left < n:
                began = now
            if left == 0:
                break
            time.sleep(0.002)
        else:
            raise SystemExit("huey did not finish in 10 minutes")
        assert began is not None
        wall = now - began
    finally:
        consumer.send_signal(signal.SIGINT)
        try:
            consumer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()
    return {"enqueue_s": enqueue_s, "wall_s": wall, "huey_per_s": n / wall}


def _scale_queue(root: Path, n: int) -> FolderQueue:
    """n pending tasks: half ready, half high priority and waiting on `gate`, which an agent
    holds (so they stay blocked)."""
    root.mkdir(parents=True)
    half = n // 2
    parts = ['[[tasks]]\nid = "gate"\nprompt = "p"\npriority = "low"\n']
    parts += [f'[[tasks]]\nid = "r{i}"\nprompt = "p"\n' for i in range(half)]
    parts += [f'[[tasks]]\nid = "b{i}"\nprompt = "p"\npriority = "high"\n'
              f'depends_on = ["gate"]\n' for i in range(n - half)]
    (root / ".all.tmp").write_text("".join(parts))
    os.rename(root / ".all.tmp", root / "all.toml")
    queue = FolderQueue(root)
    queue.ingest()
    gate = queue.claim("gatekeeper", lease_s=3600)
    assert gate is not None and gate.task.id == "gate", gate
    return queue


def _claims(queue: FolderQueue, k: int) -> tuple[float, float]:
    latencies = []
    t0 = time.perf_counter()
    for _ in range(k):
        c0 = time.perf_counter()
        claim = queue.claim("scale", lease_s=300)
        latencies.append(time.perf_counter() - c0)
        assert claim is not None and claim.task.id.startswith("r"), claim
        queue.complete(claim.task.id, claim.token)
    wall = time.perf_counter() - t0
    latencies.sort()
    return k / wall, latencies[int(0.99 * (len(latencies) - 1))] * 1000


def bench_scale(base: Path, small: int, large: int, beats: int) -> dict[str, Any]:
    k = min(1000, small // 2 - 10)
    out: dict[str, Any] = {}
    for n in (small, large):
        t0 = time.perf_counter()
        queue = _scale_queue(base / f"scale-{n}", n)
        setup = time.perf_counter() - t0
        queue.claim("warm-up", lease_s=300)  # the first claim lists pending/ once
        rate, p99 = _claims(queue, k)
        out[n] = {"claims_per_s": rate, "p99_claim_ms": p99, "setup_s": setup}
    queue = FolderQueue(base / f"scale-{small}")
    claim = queue.claim("beater", lease_s=300)
    assert claim is not None

    def beat_ms(count: int) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            queue.heartbeat(claim.task.id, claim.token)
        return (time.perf_counter() - t0) / count * 1000

    first = beat_ms(100)
    beat_ms(beats - 200)
    late = beat_ms(100)
    return {
        "claims_per_s_small": out[small]["claims_per_s"],
        "p99_claim_ms_small": out[small]["p99_claim_ms"],
        "claims_per_s_large": out[large]["claims_per_s"],
        "p99_claim_ms_large": out[large]["p99_claim_ms"],
        "setup_s_large": out[large]["setup_s"],
        "claims_measured": k,
        "heartbeat_first_ms": first,
        "heartbeat_late_ms": late,
        "heartbeats": beats,
    }


def _scale_summary(sc: dict[str, Any], small: int, large: int) -> dict[str, Any]:
    ratio = sc["claims_per_s_small"] / sc["claims_per_s_large"]
    print(f"scale: {sc['claims_measured']} claim+complete with {small} pending: "
          f"{sc['claims_per_s_small']:.0f}/s, p99 {sc['p99_claim_ms_small']:.2f} ms; with "
          f"{large} pending (half blocked): {sc['claims_per_s_large']:.0f}/s, p99 "
          f"{sc['p99_claim_ms_large']:.2f} ms; ratio {ratio:.2f} (setup of {large}: "
          f"{sc['setup_s_large']:.1f} s, not timed)")
    print(f"heartbeat: {sc['heartbeat_first_ms']:.3f} ms on a fresh lease, "
          f"{sc['heartbeat_late_ms']:.3f} ms after {sc['heartbeats']} heartbeats; ratio "
          f"{sc['heartbeat_late_ms'] / sc['heartbeat_first_ms']:.2f}")
    suffix = "100k" if large == 100_000 else str(large)
    return {
        f"claims_per_s_{suffix}": round(sc["claims_per_s_large"], 1),
        f"p99_claim_ms_{suffix}": round(sc["p99_claim_ms_large"], 3),
        f"claims_per_s_{small}": round(sc["claims_per_s_small"], 1),
        f"p99_claim_ms_{small}": round(sc["p99_claim_ms_small"], 3),
        "scale_claims_ratio": round(ratio, 3),
        "heartbeat_first_ms": round(sc["heartbeat_first_ms"], 4),
        "heartbeat_late_ms": round(sc["heartbeat_late_ms"], 4),
        "heartbeat_ratio": round(sc["heartbeat_late_ms"] / sc["heartbeat_first_ms"], 3),
        "heartbeats": sc["heartbeats"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--dir", default=None, help="where to make the scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--profile", default=None,
                        help="write a cProfile of queue worker 0 to this file")
    parser.add_argument("--only-queue", action="store_true", help="skip rename and huey")
    parser.add_argument("--redis-tasks", type=int, default=2_000,
                        help="tasks for the Redis queue (0: skip it)")
    parser.add_argument("--short", action="store_true",
                        help="only the scale run, small (100 vs 2,000 tasks, 1,000 heartbeats)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="claims-bench-", dir=args.dir))
    n, procs = args.tasks, args.procs
    if args.short:
        try:
            scale = _scale_summary(bench_scale(base, 100, 2000, 1000), 100, 2000)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(json.dumps(scale))
        return
    print(f"{n} tasks, {procs} processes, {os.cpu_count()} CPUs, scratch folder {base}")
    try:
        q = bench_queue(base, n, procs, args.profile)
        print(f"ingest: {n} files in {q['ingest_s']:.2f} s ({n / q['ingest_s']:.0f} files/s)"
              " (not part of claims/s)")
        print(f"folder queue: {q['claims']} claim+complete in {q['wall_s']:.2f} s = "
              f"{q['claims_per_s']:.0f}/s; claim latency p50 {q['p50_claim_ms']:.2f} ms, "
              f"p99 {q['p99_claim_ms']:.2f} ms; duplicates {q['duplicates']}, "
              f"missing {q['missing']}; per process {q['per_worker']}")
        if args.only_queue:
            return
        r = bench_rename(base, n, procs)
        print(f"bare os.rename: {n} claims in {r['wall_s']:.2f} s = {r['rename_per_s']:.0f}/s; "
              f"duplicates {r['duplicates']}, missing {r['missing']}")
        h = bench_huey(base, n, procs)
        print(f"huey (SqliteHuey, -w {procs} -k process): {n} no-op jobs in {h['wall_s']:.2f} s"
              f" = {h['huey_per_s']:.0f}/s (enqueueing took {h['enqueue_s']:.2f} s, not timed)")
        print(f"ratios: folder queue / rename limit = {q['claims_per_s'] / r['rename_per_s']:.3f};"
              f" folder queue / huey = {q['claims_per_s'] / h['huey_per_s']:.2f}")
        rq = bench_redis(base, args.redis_tasks, procs) if args.redis_tasks else None
        if rq is None:
            print("redis queue: skipped (no Redis on 127.0.0.1:6379, or --redis-tasks 0)")
        else:
            print(f"redis queue ({args.redis_tasks} tasks): {rq['claims_per_s']:.0f} "
                  f"claim+complete/s; duplicates {rq['duplicates']}, missing {rq['missing']}; "
                  f"/ folder queue = {rq['claims_per_s'] / q['claims_per_s']:.2f}")
        scale = _scale_summary(bench_scale(base, 100, 100_000, 10_000), 100, 100_000)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({
        "claims_per_s": round(q["claims_per_s"], 1),
        "p99_claim_ms": round(q["p99_claim_ms"], 3),
        "duplicates": q["duplicates"],
        "rename_per_s": round(r["rename_per_s"], 1),
        "huey_per_s": round(h["huey_per_s"], 1),
        "redis_claims_per_s": None if rq is None else round(rq["claims_per_s"], 1),
        "redis_duplicates": None if rq is None else rq["duplicates"],
        "p50_claim_ms": round(q["p50_claim_ms"], 3),
        "missing": q["missing"],
        "ingest_s": round(q["ingest_s"], 3),
        "tasks": n,
        "procs": procs,
        **scale,
    }))


if __name__ == "__main__":
    main()
