"""The REPL in a real pseudo-terminal: every way out leaves the terminal as it found it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pty = pytest.importorskip("pty")

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "› ".encode()


def _read_until(fd: int, marker: bytes, *, within_s: float) -> bytes:
    """What the child wrote, until `marker` appears, the child closes, or `within_s` passes."""
    seen = b""
    deadline = time.monotonic() + within_s
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            seen += data
    return seen


def _run_repl_then(leave: str, tmp_path: Path) -> tuple[list, list, list]:
    """Start `orchestrator --no-web` in a pty, wait for its prompt, leave by `leave`; return
    the terminal attributes before start, at the prompt and after exit."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the REPL on the pty
        os.chdir(tmp_path)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PROVIDER="echo")
        code = "import sys; from orchestrator.cli import main; sys.exit(main())"
        os.execve(sys.executable, [sys.executable, "-c", code, "--no-web"], env)
    try:
        before = termios.tcgetattr(fd)
        assert PROMPT in _read_until(fd, PROMPT, within_s=30)
        # readline switches the terminal to raw mode while it waits; give it the moment.
        at_prompt = before
        deadline = time.monotonic() + 5
        while at_prompt == before and time.monotonic() < deadline:
            select.select([], [], [], 0.05)
            at_prompt = termios.tcgetattr(fd)
        if leave == "ctrl-c":
            os.write(fd, b"\x03")
        elif leave == "ctrl-d":
            os.write(fd, b"\x04")
        else:
            os.kill(pid, signal.SIGTERM)
        _read_until(fd, b"\0never", within_s=15)
        _, status = os.waitpid(pid, 0)
        after = termios.tcgetattr(fd)
    finally:
        with_child_gone(pid)
        os.close(fd)
    assert os.WIFEXITED(status), f"killed by a signal: {status}"
    return before, at_prompt, after


def with_child_gone(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


@pytest.mark.parametrize("leave", ["ctrl-c", "ctrl-d", "sigterm"])
def test_the_terminal_is_restored_on_every_way_out(leave: str, tmp_path: Path) -> None:
    """Ctrl-C, Ctrl-D and SIGTERM at the prompt leave echo and canonical mode as they were."""
    before, at_prompt, after = _run_repl_then(leave, tmp_path)
    assert not at_prompt[3] & termios.ECHO  # readline had the terminal raw at the prompt
    assert after == before
    assert after[3] & termios.ECHO and after[3] & termios.ICANON


def test_prompts_piped_in_are_answered_without_a_terminal(tmp_path: Path) -> None:
    """Standing on a pipe, not a terminal, the REPL answers each line and leaves at the end of
    input (there is no terminal to save or restore). It leaves while the semantic dedup is
    still loading (the first prompt started it): the load is waited for, not broken off by the
    interpreter's shutdown and logged as failed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PROVIDER="echo")
    code = "import sys; from orchestrator.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, "--no-web"],
        input="piped question\n/stale\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "piped question" in done.stdout
    assert "termios" not in done.stderr
    assert "Traceback" not in done.stderr and "could not load" not in done.stderr, done.stderr
