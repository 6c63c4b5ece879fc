"""The validation gate: a change from the fleet lands only after its checks pass in a worktree.

The life of a gated attempt:

    prepare(task_id, attempt)  a new branch `self-improve/<task>-<attempt>` made from the target
                               branch, checked out in its own worktree (under the repository's
                               git directory, so the user's pytest and ruff never see it, in
                               the gate's `scope`)
    ... the agent works in `worktree.path`, exits 0, and the task's acceptance commands pass ...
    validate(worktree)         commits whatever the agent left, refuses an attempt that changed
                               nothing, runs every gate command (and the bench command on the
                               target and on the new branch) with a timeout each
    merge(branch)              merges into the target branch; `--merge review` waits for a
                               person to call it (`coordinator gate merge`), or `discard`
    release(worktree)          removes the worktree; the branch is kept

Fail closed: anything but every command exiting 0 in time — a non-zero exit, a crash, a
timeout, a command that could not start, a bench regression beyond the margin, a bench whose
last line is not a JSON object — is `ValidationFailed`, and nothing is merged. The merge itself
happens in a scratch worktree; the user's checkout is only ever fast-forwarded, and never while
it has local changes (the merge then waits and says why).

Several loops may gate work on one repository (one per task folder): each gate has a `scope`
(`coordinator --self-improve` names it after its task folder) and keeps its worktrees in a
folder of their own, so `recover()` at one loop's start-up removes only what that loop's
crashed predecessor left, never another loop's live worktrees. A branch name another worktree
has checked out is never taken or moved aside; the attempt's branch gets the scope as a suffix.
Within a scope, several processes may gate at once (coordinators sharing a task folder): each
holds an exclusive `flock` on `<worktree>.lock` while its worktree lives, and `recover()`
removes only worktrees whose lock it can take — their holder is gone, however it died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from memory_db import ModificationOutcome
from self_tune.errors import GateError

__all__ = [
    "BRANCH_PREFIX",
    "DEFAULT_GATE_COMMANDS",
    "GateCommand",
    "GateResult",
    "GateSettings",
    "MergeResult",
    "ValidationGate",
    "Verdict",
    "Worktree",
]

BRANCH_PREFIX = "self-improve/"
_SCOPE = re.compile(r"[A-Za-z0-9._-]+")
_OUTPUT_TAIL_CHARS = 4000
# Commits the gate makes on the agent's behalf carry this identity, so they work on a machine
# with no git identity configured and are easy to tell apart in `git log`.
_GATE_IDENTITY = {
    "GIT_AUTHOR_NAME": "prompt-orchestrator gate",
    "GIT_AUTHOR_EMAIL": "self-improve@localhost",
    "GIT_COMMITTER_NAME": "prompt-orchestrator gate",
    "GIT_COMMITTER_EMAIL": "self-improve@localhost",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class GateCommand:
    """One check the gate runs in the worktree: a shell command and how long it may take."""

    name: str
    command: str
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not self.command.strip():
            raise ValueError(f"command must be a non-empty string, got {self.command!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {self.timeout_s!r}")


DEFAULT_GATE_COMMANDS = (
    GateCommand(name="pytest", command="pytest -q", timeout_s=1800.0),
    GateCommand(name="ruff", command="ruff check .", timeout_s=300.0),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GateSettings:
    """What the gate checks (`[gate]` in coordinator.toml).

    `bench`, when set, runs on the target branch and on the new branch; its last line of output
    is one JSON object of numbers. Every number's delta is recorded; a metric named in
    `bench_lower_is_better` / `bench_higher_is_better` that moves the wrong way by more than
    `bench_margin` (a fraction of the target branch's value) fails the gate.
    """

    commands: tuple[GateCommand, ...] = DEFAULT_GATE_COMMANDS
    bench: GateCommand | None = None
    bench_margin: float = 0.05
    bench_lower_is_better: tuple[str, ...] = ()
    bench_higher_is_better: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.commands:
            raise ValueError("commands must name at least one gate command, got none")
        if not (math.isfinite(self.bench_margin) and self.bench_margin >= 0):
            raise ValueError(
                f"bench_margin must be a finite number >= 0, got {self.bench_margin!r}")
        both = set(self.bench_lower_is_better) & set(self.bench_higher_is_better)
        if both:
            raise ValueError(f"bench metrics cannot be both lower- and higher-is-better: {both}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What one gate command did: passed only if it exited 0 within its timeout."""

    name: str
    command: str
    passed: bool
    exit_code: int | None
    duration_s: float
    reason: str
    output_tail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "command": self.command,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Worktree:
    """A gated attempt's checkout: its own branch, made from `base_commit` of the target."""

    task_id: str
    attempt: int
    path: Path
    branch: str
    base_commit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GateResult:
    """The gate's decision on one attempt, with the evidence for it."""

    outcome: ModificationOutcome
    reason: str
    branch: str
    base_commit: str
    commit: str | None = None
    files_changed: tuple[str, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    metric_deltas: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when the change may be merged."""
        return self.outcome in (ModificationOutcome.IN_PROGRESS, ModificationOutcome.DEPLOYED)


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeResult:
    """Whether a branch reached the target branch, as which commit, and if not, why."""

    merged: bool
    reason: str
    commit: str | None = None


class ValidationGate:
    """Worktrees, checks and merges for gated attempts on one git repository.

    `repo` is any path inside the repository; `target_branch` defaults to the branch checked
    out there. `env` is the environment gate commands run with (the agent allow-list; never the
    orchestrator's provider keys); None means a minimal one (PATH, HOME, locale). `scope` names
    whose worktrees these are (see the module docstring): letters, digits, `.`, `_`, `-`.
    Raises `GateError` when `repo` is not a git repository or the target branch does not exist;
    `ValueError` for a bad `scope`.
    """

    def __init__(
        self,
        repo: Path | str,
        *,
        target_branch: str | None = None,
        settings: GateSettings | None = None,
        env: Mapping[str, str] | None = None,
        scope: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _SCOPE.fullmatch(scope) or scope.startswith("."):
            raise ValueError(f"scope must be letters, digits, '.', '_' or '-', got {scope!r}")
        self.scope = scope
        self._settings = settings or GateSettings()
        self._env = dict(env) if env is not None else _minimal_env()
        self._clock = clock
        top = _git(Path(repo), "rev-parse", "--show-toplevel", check=False)
        if top.returncode != 0:
            raise GateError(f"{repo} is not inside a git repository: {top.stderr.strip()}")
        self._root = Path(top.stdout.strip())
        common = _git(self._root, "rev-parse", "--git-common-dir").stdout.strip()
        self._git_dir = (self._root / common).resolve()
        if target_branch is None:
            head = _git(self._root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
            if head.returncode != 0:
                raise GateError(f"{self._root} has a detached HEAD: name a target branch")
            target_branch = head.stdout.strip()
        if _git(self._root, "rev-parse", "--verify", "--quiet", f"refs/heads/{target_branch}",
                check=False).returncode != 0:
            raise GateError(f"target branch {target_branch!r} does not exist in {self._root}")
        self._target = target_branch
        self._worktrees = self._git_dir / "self-improve" / "worktrees" / scope
        self._worktrees.mkdir(parents=True, exist_ok=True)
        # One merge at a time, across threads (the fleet's agents) and processes.
        self._merge_lock = threading.Lock()
        self._merge_file_lock = FileLock(str(self._git_dir / "self-improve" / "merge.lock"))
        self._held: dict[Path, int] = {}  # live worktree → the fd of its held lock
        self._held_lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The repository's top-level folder (the user's checkout)."""
        return self._root

    @property
    def target_branch(self) -> str:
        return self._target

    @property
    def settings(self) -> GateSettings:
        return self._settings

    # -- worktrees ------------------------------------------------------------------------

    def prepare(self, task_id: str, attempt: int) -> Worktree:
        """Make the attempt's branch from the target branch and check it out in a worktree.

        A branch left by an earlier run with the same name is moved aside (renamed with a
        suffix), never reused: each attempt starts from the target branch as it is now.
        """
        branch = f"{BRANCH_PREFIX}{task_id}-{attempt}"
        path = self._worktrees / f"{task_id}-{attempt}"
        if not self._hold(path):
            raise GateError(f"the worktree of {task_id} attempt {attempt} is held by another "
                            "live process")
        if path.exists():  # a crashed earlier run of this very attempt
            self._remove_worktree(path)
        if self._checkout_of(branch) is not None:
            # Another loop's live attempt (or someone's checkout) has it: renaming it would
            # move that worktree onto another name and hand its branch to this attempt.
            branch = f"{branch}-{self.scope}"
        if _ref_exists(self._root, f"refs/heads/{branch}"):
            _git(self._root, "branch", "-m", branch, f"{branch}-stale-{int(time.time())}")
        base = _git(self._root, "rev-parse", f"refs/heads/{self._target}").stdout.strip()
        try:
            _git(self._root, "worktree", "add", "--quiet", "-b", branch, str(path), base)
        except BaseException:
            self._let_go(path)
            raise
        return Worktree(task_id=task_id, attempt=attempt, path=path, branch=branch,
                        base_commit=base)

    def release(self, worktree: Worktree) -> None:
        """Remove the attempt's worktree (its branch stays)."""
        self._remove_worktree(worktree.path)
        self._let_go(worktree.path)

    def recover(self) -> list[str]:
        """Remove every worktree of this gate's scope that no live process holds (left by a
        process that died); return their names. Other scopes' worktrees, and live ones of
        this scope (another coordinator on the same folder), are left alone.

        Call it at a coordinator's start-up: the queue hands an interrupted attempt out
        again, and it starts from a fresh worktree.
        """
        removed = []
        for path in sorted(p for p in self._worktrees.iterdir() if p.suffix != ".lock"):
            if not self._hold(path):
                continue  # a live attempt of another process
            self._remove_worktree(path)
            self._let_go(path)
            removed.append(path.name)
        for lock in self._worktrees.glob("*.lock"):  # of worktrees already gone
            path = lock.with_suffix("")
            if not path.exists() and self._hold(path):
                self._let_go(path)
        _git(self._root, "worktree", "prune")
        return removed

    def _hold(self, path: Path) -> bool:
        """Take the lock that says `path`'s worktree is alive; False if a live process (this
        one included, through another gate object) holds it."""
        with self._held_lock:
            if path in self._held:  # this gate's own: a rerun of the same attempt
                return True
        fd = os.open(_lock_of(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        with self._held_lock:
            self._held[path] = fd
        return True

    def _let_go(self, path: Path) -> None:
        with self._held_lock:
            fd = self._held.pop(path, None)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_lock_of(path))  # before letting go: a new holder makes a new file
            os.close(fd)

    def _remove_worktree(self, path: Path) -> None:
        _git(self._root, "worktree", "remove", "--force", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
        _git(self._root, "worktree", "prune")

    # -- validation -----------------------------------------------------------------------

    def validate(self, worktree: Worktree, *, description: str = "") -> GateResult:
        """Commit what the agent left, then run the gate; never raises for a failing check."""
        base = {"branch": worktree.branch, "base_commit": worktree.base_commit}
        try:
            commit = self._commit_leftovers(worktree, description)
            files = tuple(
                line for line in _git(
                    worktree.path, "diff", "--name-only", f"{worktree.base_commit}..{commit}"
                ).stdout.splitlines() if line
            )
        except (GateError, OSError) as exc:
            return GateResult(outcome=ModificationOutcome.VALIDATION_FAILED,
                              reason=f"could not commit the agent's work: {exc}", **base)
        if not files:
            return GateResult(outcome=ModificationOutcome.REJECTED, commit=commit,
                              reason="no change: the agent left the branch as it found it", **base)
        found = {"commit": commit, "files_changed": files}
        verdicts: list[Verdict] = []
        for command in self._settings.commands:
            verdict = self._run(command, worktree.path)
            verdicts.append(verdict)
            if not verdict.passed:
                return GateResult(outcome=ModificationOutcome.VALIDATION_FAILED,
                                  reason=f"{command.name}: {verdict.reason}",
                                  verdicts=tuple(verdicts), **found, **base)
        deltas: dict[str, float] = {}
        if self._settings.bench is not None:
            bench = self._bench(worktree)
            verdicts.extend(bench.verdicts)
            deltas = dict(bench.deltas)
            if bench.failure:
                return GateResult(outcome=ModificationOutcome.VALIDATION_FAILED,
                                  reason=bench.failure, verdicts=tuple(verdicts),
                                  metric_deltas=deltas, **found, **base)
        return GateResult(outcome=ModificationOutcome.IN_PROGRESS,
                          reason="every gate command passed", verdicts=tuple(verdicts),
                          metric_deltas=deltas, **found, **base)

    def _commit_leftovers(self, worktree: Worktree, description: str) -> str:
        path = worktree.path
        if _git(path, "status", "--porcelain").stdout.strip():
            _git(path, "add", "--all")
            message = f"self-improve: {worktree.task_id} (attempt {worktree.attempt})"
            if description:
                message += f"\n\n{description}"
            _git(path, "commit", "--quiet", "--no-verify", "-m", message, env=_GATE_IDENTITY)
        return _git(path, "rev-parse", "HEAD").stdout.strip()

    def _run(self, command: GateCommand, cwd: Path) -> Verdict:
        started = self._clock()
        try:
            proc = subprocess.Popen(
                command.command, shell=True, cwd=cwd, env=self._env, text=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                # A group of its own, to kill what it leaves behind; not a session of its
                # own: a coordinator kills its adopted children outside its session
                # (coordinator.reaper), and this one is not adopted.
                process_group=0,
            )
        except OSError as exc:
            return Verdict(name=command.name, command=command.command, passed=False,
                           exit_code=None, duration_s=self._clock() - started,
                           reason=f"could not start: {exc}")
        try:
            output, _ = proc.communicate(timeout=command.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            output, _ = proc.communicate()
            return Verdict(name=command.name, command=command.command, passed=False,
                           exit_code=None, duration_s=self._clock() - started,
                           reason=f"timed out after {command.timeout_s:g} s",
                           output_tail=output[-_OUTPUT_TAIL_CHARS:])
        finally:
            _kill_group(proc.pid)  # whatever the command left running in the background
        code = proc.returncode
        reason = "exit 0" if code == 0 else (
            f"killed by signal {-code}" if code < 0 else f"exit {code}")
        return Verdict(name=command.name, command=command.command, passed=code == 0,
                       exit_code=code, duration_s=self._clock() - started, reason=reason,
                       output_tail=output[-_OUTPUT_TAIL_CHARS:])

    def _bench(self, worktree: Worktree) -> _BenchOutcome:
        bench = self._settings.bench
        assert bench is not None
        with self._scratch_worktree(worktree.base_commit) as scratch:
            before_cmd = GateCommand(name=f"{bench.name} (target)", command=bench.command,
                                     timeout_s=bench.timeout_s)
            before = self._run(before_cmd, scratch)
        after_cmd = GateCommand(name=f"{bench.name} (branch)", command=bench.command,
                                timeout_s=bench.timeout_s)
        after = self._run(after_cmd, worktree.path)
        verdicts = (before, after)
        for verdict in verdicts:
            if not verdict.passed:
                return _BenchOutcome(verdicts, {}, f"{verdict.name}: {verdict.reason}")
        try:
            old, new = _last_json_line(before.output_tail), _last_json_line(after.output_tail)
        except ValueError as exc:
            return _BenchOutcome(verdicts, {}, f"{bench.name}: {exc}")
        deltas = {name: new[name] - old[name] for name in sorted(old.keys() & new.keys())}
        return _BenchOutcome(verdicts, deltas, self._regression(bench.name, old, new))

    def _regression(self, bench: str, old: Mapping[str, float], new: Mapping[str, float]) -> str:
        """Why the bench fails the change ("" if it does not)."""
        margin = self._settings.bench_margin
        checked = [(name, 1.0) for name in self._settings.bench_lower_is_better]
        checked += [(name, -1.0) for name in self._settings.bench_higher_is_better]
        for name, sign in checked:
            if name not in old or name not in new:
                return f"{bench}: no value for {name} on both branches"
            if sign * (new[name] - old[name]) > abs(old[name]) * margin:
                return f"{bench}: {name} regressed {old[name]:g} → {new[name]:g}"
        return ""

    # -- merging --------------------------------------------------------------------------

    def merge(self, branch: str) -> MergeResult:
        """Merge `branch` into the target branch, or say why not; never raises for a refusal.

        The merge commit is made in a scratch worktree. Then the target branch moves to it:
        by a fast-forward of the checkout that has it checked out (refused while that
        checkout has local changes: the merge waits), or, checked out nowhere, by a
        compare-and-swap of the branch ref. A conflict merges nothing.
        """
        if not _ref_exists(self._root, f"refs/heads/{branch}"):
            return MergeResult(merged=False, reason=f"no branch {branch!r}")
        with self._merge_lock, self._merge_file_lock:
            checkout = self._checkout_of(self._target)
            if checkout is not None and _has_local_changes(checkout):
                return MergeResult(merged=False, reason=(
                    f"{self._target} is checked out at {checkout} with local changes; the merge "
                    "waits: commit or stash them, then merge again"))
            target_ref = f"refs/heads/{self._target}"
            old = _git(self._root, "rev-parse", target_ref).stdout.strip()
            with self._scratch_worktree(old) as scratch:
                merged = _git(scratch, "merge", "--no-ff", "--no-edit", "-m",
                              f"Merge {branch} (self-improve gate passed)", branch,
                              env=_GATE_IDENTITY, check=False)
                if merged.returncode != 0:
                    conflicts = _git(scratch, "diff", "--name-only", "--diff-filter=U",
                                     check=False).stdout.split()
                    _git(scratch, "merge", "--abort", check=False)
                    detail = (f"conflict in {', '.join(conflicts)}" if conflicts
                              else (merged.stdout + merged.stderr).strip()[-300:])
                    return MergeResult(merged=False,
                                       reason=f"merge of {branch} failed, nothing merged: {detail}")
                new = _git(scratch, "rev-parse", "HEAD").stdout.strip()
            if checkout is not None:
                moved = _git(checkout, "merge", "--ff-only", "--quiet", new, check=False)
                if moved.returncode != 0:
                    return MergeResult(merged=False, reason=(
                        f"could not fast-forward {self._target} at {checkout}, nothing merged: "
                        f"{moved.stderr.strip()[-300:]}"))
            else:
                moved = _git(self._root, "update-ref", target_ref, new, old, check=False)
                if moved.returncode != 0:
                    return MergeResult(merged=False, reason=(
                        f"{self._target} moved during the merge, nothing merged; merge again"))
            return MergeResult(merged=True, commit=new,
                               reason=f"merged {branch} into {self._target}")

    def discard(self, branch: str) -> None:
        """Delete a branch that was waiting for review. Raises `GateError` if it is not ours."""
        if not branch.startswith(BRANCH_PREFIX):
            raise GateError(f"{branch!r} is not a self-improve branch")
        _git(self._root, "branch", "-D", branch)

    def _checkout_of(self, branch: str) -> Path | None:
        listing = _git(self._root, "worktree", "list", "--porcelain").stdout
        path: Path | None = None
        for line in listing.splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line == f"branch refs/heads/{branch}":
                return path
        return None

    @contextlib.contextmanager
    def _scratch_worktree(self, commit: str) -> Iterator[Path]:
        path = self._worktrees / f".scratch-{os.getpid()}-{threading.get_ident()}"
        if path.exists():
            self._remove_worktree(path)
        _git(self._root, "worktree", "add", "--quiet", "--detach", str(path), commit)
        try:
            yield path
        finally:
            self._remove_worktree(path)


@dataclass(frozen=True, slots=True)
class _BenchOutcome:
    verdicts: tuple[Verdict, ...]
    deltas: Mapping[str, float]
    failure: str


def _git(
    cwd: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one git command in `cwd` through GitPython; raise `GateError` if `check` and it fails."""
    import git  # GitPython: imported here, so importing the package does not cost its start-up

    try:
        status, out, err = git.Git(str(cwd)).execute(
            ["git", *args], with_extended_output=True, with_exceptions=False,
            strip_newline_in_stdout=False, env=None if env is None else dict(env),
        )
    except (OSError, git.GitCommandNotFound) as exc:
        raise GateError(f"could not run git in {cwd}: {exc}") from exc
    if check and status != 0:
        raise GateError(f"git {' '.join(args)} failed in {cwd}: {err.strip()}")
    return subprocess.CompletedProcess(["git", *args], status, out, err)


def _ref_exists(root: Path, ref: str) -> bool:
    return _git(root, "rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0


def _has_local_changes(checkout: Path) -> bool:
    return bool(_git(checkout, "status", "--porcelain", "--untracked-files=no").stdout.strip())


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _last_json_line(output: str) -> dict[str, float]:
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise ValueError("printed nothing; its last line must be one JSON object")
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"last line is not JSON ({exc.msg}): {lines[-1][:200]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"last line is not a JSON object: {lines[-1][:200]!r}")
    return {key: float(value) for key, value in data.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def _minimal_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "VIRTUAL_ENV")
    return {name: os.environ[name] for name in keep if name in os.environ}


def _lock_of(worktree: Path) -> Path:
    """The file whose flock says `worktree` is alive."""
    return worktree.with_name(worktree.name + ".lock")
