"""Runs one agent command so that nothing it starts outlives its attempt.

    python -I supervisor.py PARENT_PID COMMAND

The fleet starts this script (stdlib only, so it starts fast) through `Supervised`, as the
leader of a new process group, with the agent's stdin, stdout, stderr and environment. It
makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so everything the command
starts stays its descendant: an orphan — a background job whose shell exited, a grandchild
that called `setsid` and left the group — is reparented here, not to init. When the command
exits it kills and reaps all of them, then exits as the command did (the same code, or the
same signal). On SIGTERM — from the fleet stopping the attempt, or from the kernel when the
coordinator dies (`PR_SET_PDEATHSIG`), so agents never run on unwatched — it does the same
and dies of SIGTERM.

`Supervised` is the fleet's side: it never reaps the supervisor before it has killed the
supervisor's process group, so the group id (the supervisor's pid) cannot have been reused
by an unrelated process when it is signalled. A supervisor that was itself killed (SIGKILL,
the OOM killer) cannot kill what left its group, so the fleet's process is a child
subreaper too (`coordinator.reaper`): the dead supervisor's orphans are reparented to it,
and `close()` kills and reaps them, even those that cleared their environment and left
their session; it also kills every process that still carries the attempt's
`COORDINATOR_*` marks (`coordinator.orphans`), for a fleet that could not be a subreaper.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

__all__ = ["Supervised"]

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_STOP_WAIT_S = 5.0  # how long a stopped supervisor may take to kill its descendants


# ---------------------------------------------------------------------- the fleet's side


class Supervised:
    """One command running under the supervisor, in a process group of its own.

    Starting raises `OSError` when the process cannot be started (e.g. `E2BIG`: an
    argument or the environment over the kernel's limits). Always `close()` it: that kills
    whatever is left, whatever the outcome.
    """

    def __init__(
        self, command: str, *, cwd: Path, env: dict[str, str], stdin: IO[bytes] | int,
        stdout: IO[bytes] | int,
    ) -> None:
        from coordinator import reaper  # the fleet's side only: not at start-up

        reaper.adopt_orphans()  # so a killed supervisor's orphans come to us, not to init
        self._proc = reaper.own(lambda: subprocess.Popen(
            [sys.executable, "-I", __file__, str(os.getpid()), command], cwd=cwd, env=env,
            stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
        ))
        self.pid = self._proc.pid  # also its process group's and its session's id
        self._born = reaper.birth_ticks(self.pid)  # its descendants are born no earlier
        self._env = env
        self._exit_code: int | None = None
        try:  # readable once the supervisor has exited, without reaping it
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
            self._pidfd = None

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the supervisor to exit; True if it has. It is left
        unreaped, so its process group id stays ours until `close()`."""
        if self._exit_code is not None:
            return True
        if self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], max(0.0, timeout_s))
            return bool(ready)
        deadline = time.monotonic() + timeout_s
        while True:
            if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def close(self) -> int:
        """End it: SIGTERM the supervisor if it still runs (it kills its descendants, those
        outside the group too) and wait for it a little, SIGKILL its whole process group,
        then reap it. Returns its exit code (negative: the signal that killed it)."""
        if self._exit_code is not None:
            return self._exit_code
        if not self.wait(0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            self.wait(_STOP_WAIT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # still unreaped: the id cannot be reused
        self._exit_code = self._proc.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
        from coordinator import reaper

        reaper.disown(self.pid)
        # Killed by a signal (SIGKILL, or one it passed on from the command after cleaning
        # up): what it had not killed yet was reparented to us. Nothing to find otherwise.
        if self._exit_code < 0 and self._born is not None:
            reaper.reclaim(born_since=self._born)
        self._kill_marked()  # for a fleet that is not a subreaper (not Linux, old kernel)
        return self._exit_code

    def _kill_marked(self) -> None:
        from coordinator.orphans import kill_orphan  # the fleet's side only: not at start-up

        task_id = self._env.get("COORDINATOR_TASK_ID")
        attempt = self._env.get("COORDINATOR_ATTEMPT")
        task_file = self._env.get("COORDINATOR_TASK_FILE")
        if task_id and attempt and attempt.isdigit() and task_file:
            kill_orphan(task_id, attempt=int(attempt), task_file=task_file)


# ---------------------------------------------------------------------- the supervisor


def _children() -> list[int]:
    """Our direct children, zombies included (a child's pid is ours until we reap it)."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == me:
            found.append(int(entry.name))
    return found


def _kill_descendants() -> None:
    """SIGKILL and reap every descendant, level by level: as a subreaper we inherit the
    children of each process we kill, and find them in the next round."""
    while True:
        for pid in _children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _on_sigterm(*_: object) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    _kill_descendants()
    os._exit(128 + signal.SIGTERM)


def main() -> None:
    parent, command = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, _on_sigterm)
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is not None:  # Linux; elsewhere a restarted coordinator kills orphans instead
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(128 + signal.SIGTERM)
    try:
        code = subprocess.call(command, shell=True)
    except OSError as exc:  # e.g. no /bin/sh: say so in the attempt's log
        print(f"supervisor: could not start the command: {exc}", file=sys.stderr)
        code = 127
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # we are ending anyway
    _kill_descendants()
    if code < 0:  # killed by a signal: die of the same one, so the fleet can tell
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
