"""`make demo`: the self-improvement loop end to end, offline, in well under a minute.

What it sets up, in `.demo/` (recreated every run):

- `project/`, a scratch git repository: a tiny service whose `client.py` gives up after one
  attempt, with its tests — the repository the fleet improves;
- `agent.sh`, a scripted demo agent: it raises the client's retry budget, as an agent asked
  to make the service ride out upstream errors might;
- `coordinator.toml`: the gate runs the project's pytest and ruff, and its `bench.py` (the
  share of requests answered against a failing upstream) on both branches; changes merge
  at once.

Then it runs `coordinator --self-improve --merge auto` with the echo provider and the fault
schedule `ECHO_FAULTS=60:0.4` (after 60 healthy calls, 40% of upstream calls fail), sends
the traffic itself, and waits for the loop to go round: anomaly → meta-task → the agent in
a worktree → gate → merge → memory. Finally it prints what happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(".demo")
DEADLINE_S = 90.0
PY = sys.executable

SERVICE = {
    "client.py": '"""Calls the upstream; gives up after MAX_ATTEMPTS."""\n\nMAX_ATTEMPTS = 1\n',
    "test_client.py": (
        "from client import MAX_ATTEMPTS\n\n\n"
        "def test_the_client_tries_at_least_once():\n    assert MAX_ATTEMPTS >= 1\n"),
    "bench.py": (
        '"""The share of 10,000 requests the client gets answered when the upstream fails\n'
        '40% of calls (the gate runs it on both branches and records the delta)."""\n\n'
        "import json\nimport random\n\nfrom client import MAX_ATTEMPTS\n\n"
        "rng = random.Random(7)\n"
        "answered = sum(any(rng.random() >= 0.4 for _ in range(MAX_ATTEMPTS))\n"
        "               for _ in range(10_000))\n"
        'print(json.dumps({"answered_share": answered / 10_000}))\n'),
}

AGENT = """#!/bin/sh
# The scripted demo agent: it reads its task (COORDINATOR_PROMPT) and makes one change,
# in the worktree the coordinator gave it as its working directory.
echo "task $COORDINATOR_TASK_ID: $(printf '%s' "$COORDINATOR_PROMPT" | head -n 1)"
sed -i 's/^MAX_ATTEMPTS = 1$/MAX_ATTEMPTS = 3  # ride out transient upstream errors/' client.py
git diff --stat
"""


def git(*args: str) -> str:
    identity = {"GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@localhost",
                "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@localhost"}
    return subprocess.run(["git", *args], cwd=ROOT / "project", check=True, text=True,
                          capture_output=True, env={**os.environ, **identity}).stdout.strip()


def set_up() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    (ROOT / "project").mkdir(parents=True)
    (ROOT / "tasks").mkdir()
    git("init", "--quiet", "--initial-branch=main")
    for name, text in SERVICE.items():
        (ROOT / "project" / name).write_text(text)
    git("add", "--all")
    git("commit", "--quiet", "-m", "a service that gives up after one attempt")
    agent = ROOT / "agent.sh"
    agent.write_text(AGENT)
    agent.chmod(0o755)
    (ROOT / "coordinator.toml").write_text(f"""\
tasks = "tasks"
db = "sqlite:///{(ROOT / 'memory.db').resolve()}"

[self_improve]
repo = "project"
merge = "auto"
telemetry_interval_s = 0.5

[gate]
commands = [
  {{ name = "pytest", command = "{PY} -m pytest -q -p no:cacheprovider", timeout_s = 300 }},
  {{ name = "ruff", command = "{PY} -m ruff check --no-cache .", timeout_s = 300 }},
]
bench = {{ command = "{PY} bench.py", timeout_s = 120 }}
bench_higher_is_better = ["answered_share"]
""")


def main() -> int:
    set_up()
    env = {**os.environ, "PROVIDER": "echo", "PORT": "0", "ECHO_FAULTS": "60:0.4",
           "LOG_LEVEL": "WARNING"}
    coordinator = subprocess.Popen(
        [PY, "-m", "coordinator.cli", "--self-improve", "--agent",
         str((ROOT / "agent.sh").resolve())],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(coordinator.stderr or ()), daemon=True)
    reader.start()
    stop = threading.Event()
    try:
        url = _wait("the orchestrator", lambda: next(
            (ln.split()[3] for ln in lines if ln.startswith("orchestrator: serving on")), None),
            coordinator)
        print(f"demo: the coordinator runs the fleet, the loop and an orchestrator at {url}")
        print("demo: sending traffic; after 60 calls the upstream fails 40% of them")
        threading.Thread(target=_traffic, args=(url, stop), daemon=True).start()
        _wait("a merged change", _deployed, coordinator)
    finally:
        stop.set()
        if coordinator.poll() is None:
            coordinator.send_signal(signal.SIGINT)
        coordinator.wait(timeout=60)
        reader.join(timeout=5)
    _report(lines)
    return 0


def _traffic(url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        n = 0
        while not stop.is_set():
            client.post("/v1/prompt", json={"input": f"demo request {n}"})
            n += 1


def _deployed() -> bool:
    done = subprocess.run([PY, "-m", "coordinator.cli", "memory", "query", "modifications",
                           "--outcome", "Deployed", "--json"], cwd=ROOT, capture_output=True,
                          text=True)
    # a gated change (the tuner's own changes are Deployed modifications too, without a branch)
    return done.returncode == 0 and any(row.get("branch")
                                        for row in json.loads(done.stdout or "[]"))


def _wait(what: str, check, process: subprocess.Popen[str]):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"demo: gave up waiting for {what}")


def _report(lines: list[str]) -> None:
    def section(title: str) -> None:
        print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))

    def run(*args: str, cwd: Path = ROOT) -> None:
        print(subprocess.run(args, cwd=cwd, capture_output=True, text=True).stdout.rstrip())

    section("what the loop saw (coordinator status)")
    run(PY, "-m", "coordinator.cli", "status")
    section("the meta-task it wrote")
    for path in sorted((ROOT / "tasks" / "sources").glob("si-*.toml"))[:1]:
        print(f"{path}:\n{path.read_text().rstrip()}")
    section("what the agent did (its log)")
    for log in sorted((ROOT / "tasks" / "logs").glob("si-*/attempt-1.log"))[:1]:
        print(log.read_text().rstrip())
    section("agent memory: modifications")
    run(PY, "-m", "coordinator.cli", "memory", "query", "modifications")
    section("the project's git log")
    run("git", "log", "--oneline", "--stat", "-3", cwd=ROOT / "project")


if __name__ == "__main__":
    sys.exit(main())
