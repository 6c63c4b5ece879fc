"""Runs one agent command so that it dies with the coordinator that started it.

    python -I supervisor.py PARENT_PID COMMAND

The fleet starts this script (stdlib only, so it starts fast) as the leader of a new process
group, with the agent's stdin, stdout, stderr and environment. It asks the kernel for
SIGTERM when its parent thread dies (`PR_SET_PDEATHSIG`), and on SIGTERM kills its whole
process group: if the coordinator is SIGKILLed, its agents do not run on unwatched and
finish work that the restarted coordinator would run again. It exits as the command did
(the same code, or the same signal).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, command = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is not None:  # Linux; elsewhere a restarted coordinator kills orphans instead
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request above took effect
        os.killpg(0, signal.SIGKILL)
    code = subprocess.call(command, shell=True)
    if code < 0:  # killed by a signal: die of the same one, so the fleet can tell
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
