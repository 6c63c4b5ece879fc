"""The validation gate on a scratch git repository: worktrees, fail-closed checks, safe merges."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gitrepo import git, make_repo
from processes import ends_within

from memory_db import ModificationOutcome
from self_tune import GateCommand, GateError, GateSettings, ValidationGate


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project")


def check(command: str, name: str = "check", timeout_s: float = 30.0) -> GateCommand:
    return GateCommand(name=name, command=command, timeout_s=timeout_s)


def gate_with(repo: Path, *commands: GateCommand, **settings) -> ValidationGate:
    return ValidationGate(repo, settings=GateSettings(commands=commands, **settings),
                          env=dict(os.environ))


def head(repo: Path, ref: str = "main") -> str:
    return git(repo, "rev-parse", ref)


def test_prepare_makes_a_branch_and_a_worktree_outside_the_checkout(repo: Path) -> None:
    """An attempt gets its own branch from the target and a worktree the user's tools never see."""
    gate = gate_with(repo, check("true"))
    worktree = gate.prepare("fix-latency", 1)
    assert worktree.branch == "self-improve/fix-latency-1"
    assert worktree.base_commit == head(repo)
    assert (worktree.path / "calc.py").read_text() == (repo / "calc.py").read_text()
    assert ".git" in worktree.path.parts
    assert git(worktree.path, "symbolic-ref", "--short", "HEAD") == worktree.branch


def test_an_attempt_that_changed_nothing_is_rejected(repo: Path) -> None:
    """No change is `Rejected`, never a pass."""
    gate = gate_with(repo, check("true"))
    result = gate.validate(gate.prepare("t", 1))
    assert result.outcome is ModificationOutcome.REJECTED
    assert "no change" in result.reason
    assert not result.passed


def test_passing_checks_commit_the_agents_leftovers(repo: Path) -> None:
    """What the agent left uncommitted is committed on its branch, and the files are listed."""
    gate = gate_with(repo, check("true", "first"), check("test -f notes.md", "second"))
    worktree = gate.prepare("t", 1)
    (worktree.path / "notes.md").write_text("hello\n")
    result = gate.validate(worktree, description="add notes")
    assert result.passed and result.outcome is ModificationOutcome.IN_PROGRESS
    assert result.files_changed == ("notes.md",)
    assert [v.name for v in result.verdicts] == ["first", "second"]
    assert result.commit == head(repo, worktree.branch) != worktree.base_commit
    assert "add notes" in git(repo, "log", "-1", "--format=%B", worktree.branch)


def test_a_failing_command_fails_the_gate_and_names_itself(repo: Path) -> None:
    """A non-zero exit is `ValidationFailed`, with the command and its exit code."""
    gate = gate_with(repo, check("exit 3", "lint"), check("true", "never-run"))
    worktree = gate.prepare("t", 1)
    (worktree.path / "calc.py").write_text("broken\n")
    result = gate.validate(worktree)
    assert result.outcome is ModificationOutcome.VALIDATION_FAILED
    assert result.reason == "lint: exit 3"
    assert [v.name for v in result.verdicts] == ["lint"]


def test_a_command_that_runs_too_long_fails_and_leaves_nothing_running(
    repo: Path, tmp_path: Path
) -> None:
    """A timeout fails closed and kills the command's whole process group."""
    marker = tmp_path / "pid"
    command = f"sleep 60 & echo $! > {marker}; wait"
    gate = gate_with(repo, check(command, "slow", timeout_s=0.5))
    worktree = gate.prepare("t", 1)
    (worktree.path / "x.txt").write_text("x")
    result = gate.validate(worktree)
    assert result.outcome is ModificationOutcome.VALIDATION_FAILED
    assert "timed out" in result.reason
    assert ends_within(int(marker.read_text()))



def test_real_pytest_and_ruff_fail_a_change_that_breaks_ruff(repo: Path) -> None:
    """The default-style checks (pytest, ruff) in the worktree catch a lint error."""
    # Generous timeouts: this test is about verdicts, and a loaded machine starts Python slowly.
    gate = gate_with(
        repo,
        check(f"{sys.executable} -m pytest -q -p no:cacheprovider", "pytest", timeout_s=600),
        check(f"{sys.executable} -m ruff check --no-cache .", "ruff", timeout_s=600),
    )
    worktree = gate.prepare("t", 1)
    (worktree.path / "calc.py").write_text("import os\n\n\ndef add(a, b):\n    return a + b\n")
    result = gate.validate(worktree)
    assert [(v.name, v.passed) for v in result.verdicts] == [("pytest", True), ("ruff", False)]
    assert result.outcome is ModificationOutcome.VALIDATION_FAILED


def bench_settings(script: Path, **extra) -> dict:
    return {"bench": check(f"{sys.executable} {script}", "bench"), **extra}


def test_a_bench_regression_beyond_the_margin_fails_the_gate(repo: Path, tmp_path: Path) -> None:
    """The bench runs on both branches; a metric moving the wrong way past the margin fails."""
    script = tmp_path / "bench.py"
    script.write_text("import json, pathlib\n"
                      "slow = pathlib.Path('slow.flag').exists()\n"
                      "print('warming up')\n"
                      "print(json.dumps({'p99_ms': 20.0 if slow else 10.0, 'rps': 5}))\n")
    gate = gate_with(repo, check("true"),
                     **bench_settings(script, bench_lower_is_better=("p99_ms",)))
    worktree = gate.prepare("t", 1)
    (worktree.path / "slow.flag").write_text("")
    result = gate.validate(worktree)
    assert result.outcome is ModificationOutcome.VALIDATION_FAILED
    assert "p99_ms regressed 10 → 20" in result.reason
    assert result.metric_deltas == {"p99_ms": 10.0, "rps": 0.0}


def test_a_bench_improvement_passes_with_its_deltas(repo: Path, tmp_path: Path) -> None:
    """An improvement passes, and the deltas (branch minus target) are kept."""
    script = tmp_path / "bench.py"
    script.write_text("import json, pathlib\n"
                      "fast = pathlib.Path('fast.flag').exists()\n"
                      "print(json.dumps({'p99_ms': 7.5 if fast else 10.0}))\n")
    gate = gate_with(repo, check("true"),
                     **bench_settings(script, bench_lower_is_better=("p99_ms",)))
    worktree = gate.prepare("t", 1)
    (worktree.path / "fast.flag").write_text("")
    result = gate.validate(worktree)
    assert result.passed
    assert result.metric_deltas == {"p99_ms": -2.5}


def test_a_bench_without_a_json_last_line_fails_closed(repo: Path, tmp_path: Path) -> None:
    """A bench whose last line is not a JSON object cannot vouch for anything."""
    script = tmp_path / "bench.py"
    script.write_text("print('done in 3 s')\n")
    gate = gate_with(repo, check("true"), **bench_settings(script))
    worktree = gate.prepare("t", 1)
    (worktree.path / "y.txt").write_text("y")
    result = gate.validate(worktree)
    assert result.outcome is ModificationOutcome.VALIDATION_FAILED
    assert "not JSON" in result.reason


def passed_branch(gate: ValidationGate, name: str, files: dict[str, str]) -> str:
    worktree = gate.prepare(name, 1)
    for file, text in files.items():
        (worktree.path / file).write_text(text)
    assert gate.validate(worktree).passed
    gate.release(worktree)
    return worktree.branch


def test_merge_fast_forwards_a_clean_checkout(repo: Path) -> None:
    """A passed branch lands on the target, and the user's checkout shows it, clean."""
    gate = gate_with(repo, check("true"))
    branch = passed_branch(gate, "t", {"calc.py": "def add(a, b):\n    return b + a\n"})
    result = gate.merge(branch)
    assert result.merged and result.commit == head(repo)
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"
    assert git(repo, "status", "--porcelain") == ""


def test_merge_waits_while_the_checkout_has_local_changes(repo: Path) -> None:
    """Local uncommitted work in the user's checkout is never touched; the merge says why."""
    gate = gate_with(repo, check("true"))
    branch = passed_branch(gate, "t", {"new.py": "X = 1\n"})
    before = head(repo)
    (repo / "calc.py").write_text("# my work in progress\n")
    result = gate.merge(branch)
    assert not result.merged and "local changes" in result.reason
    assert head(repo) == before
    assert (repo / "calc.py").read_text() == "# my work in progress\n"
    assert not (repo / "new.py").exists()


def test_a_merge_conflict_merges_nothing(repo: Path) -> None:
    """A conflict leaves the target branch and the checkout exactly as they were."""
    gate = gate_with(repo, check("true"))
    branch = passed_branch(gate, "t", {"calc.py": "def add(a, b):\n    return a - b\n"})
    (repo / "calc.py").write_text("def add(a, b):\n    return a * b\n")
    git(repo, "commit", "--quiet", "-am", "someone else changed it")
    before = head(repo)
    result = gate.merge(branch)
    assert not result.merged and "conflict in calc.py" in result.reason
    assert head(repo) == before
    assert git(repo, "status", "--porcelain") == ""


def test_merge_into_a_branch_checked_out_nowhere_moves_only_its_ref(repo: Path) -> None:
    """With the target checked out nowhere, the merge moves the branch and touches no files."""
    git(repo, "branch", "release")
    gate = ValidationGate(repo, target_branch="release",
                          settings=GateSettings(commands=(check("true"),)), env=dict(os.environ))
    branch = passed_branch(gate, "t", {"new.py": "X = 1\n"})
    result = gate.merge(branch)
    assert result.merged and head(repo, "release") == result.commit
    assert git(repo, "show", "release:new.py") == "X = 1"
    assert not (repo / "new.py").exists()


def test_release_removes_the_worktree_and_keeps_the_branch(repo: Path) -> None:
    """A finished attempt leaves no worktree behind, but its branch stays for the record."""
    gate = gate_with(repo, check("true"))
    worktree = gate.prepare("t", 2)
    gate.release(worktree)
    assert not worktree.path.exists()
    assert head(repo, worktree.branch) == worktree.base_commit
    assert str(worktree.path) not in git(repo, "worktree", "list")


def prepare_then_die(repo: Path, task_id: str, scope: str = "default") -> Path:
    """A worktree prepared by a process that then dies without releasing it."""
    code = ("import os, sys; from self_tune import ValidationGate; "
            "w = ValidationGate(sys.argv[1], scope=sys.argv[3]).prepare(sys.argv[2], 1); "
            "print(w.path, flush=True); os._exit(0)")
    done = subprocess.run([sys.executable, "-c", code, str(repo), task_id, scope],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_recover_removes_worktrees_a_dead_process_left(repo: Path) -> None:
    """Worktrees of a crashed run are cleaned up at start-up."""
    left = prepare_then_die(repo, "crashed")
    assert left.is_dir()
    removed = ValidationGate(repo).recover()
    assert removed == ["crashed-1"]
    assert not left.exists() and not left.with_name(left.name + ".lock").exists()
    assert git(repo, "worktree", "list").count("\n") == 0


def test_recover_leaves_another_scopes_worktrees_alone(repo: Path) -> None:
    """Two loops on one repository: one's start-up recovery removes only its own worktrees."""
    live = ValidationGate(repo, scope="folder-a").prepare("t", 1)
    prepare_then_die(repo, "crashed", scope="folder-b")
    assert ValidationGate(repo, scope="folder-b").recover() == ["crashed-1"]
    assert live.path.is_dir()
    assert str(live.path) in git(repo, "worktree", "list")


def test_recover_leaves_a_live_processs_worktree_of_the_same_scope_alone(repo: Path) -> None:
    """Two coordinators on one task folder gate at once: one's start-up recovery removes only
    what a dead process left, never the other's live attempt."""
    live = ValidationGate(repo).prepare("live", 1)  # held, as by another process
    prepare_then_die(repo, "crashed")
    assert ValidationGate(repo).recover() == ["crashed-1"]
    assert live.path.is_dir() and str(live.path) in git(repo, "worktree", "list")
    with pytest.raises(GateError, match="held by another live process"):
        ValidationGate(repo).prepare("live", 1)


def test_a_branch_another_worktree_has_is_never_taken(repo: Path) -> None:
    """The same task id in two scopes: the second attempt gets a branch of its own, and the
    first keeps its branch checked out."""
    first = ValidationGate(repo, scope="folder-a").prepare("t", 1)
    second = ValidationGate(repo, scope="folder-b").prepare("t", 1)
    assert first.branch == "self-improve/t-1"
    assert second.branch == "self-improve/t-1-folder-b"
    assert git(first.path, "rev-parse", "--abbrev-ref", "HEAD") == "self-improve/t-1"
    assert first.path != second.path


def test_a_bad_scope_is_refused_naming_it(repo: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        ValidationGate(repo, scope="../escape")


def test_preparing_an_attempt_again_starts_from_the_target(repo: Path) -> None:
    """A rerun of the same attempt gets a fresh branch; the old one is moved aside, not reused."""
    gate = gate_with(repo, check("true"))
    first = gate.prepare("t", 1)
    (first.path / "a.txt").write_text("a")
    gate.validate(first)
    again = gate.prepare("t", 1)
    assert head(repo, again.branch) == head(repo)
    assert any("stale" in line for line in git(repo, "branch", "--list").splitlines())


def test_discard_deletes_only_self_improve_branches(repo: Path) -> None:
    """`discard` removes a waiting branch and refuses any other."""
    gate = gate_with(repo, check("true"))
    branch = passed_branch(gate, "t", {"z.txt": "z"})
    gate.discard(branch)
    assert branch not in git(repo, "branch", "--list")
    with pytest.raises(GateError):
        gate.discard("main")


def test_a_folder_outside_git_is_a_clear_error(tmp_path: Path) -> None:
    """The gate names the path that is not a repository."""
    with pytest.raises(GateError, match="not inside a git repository"):
        ValidationGate(tmp_path)


def test_gate_command_validates_its_fields() -> None:
    """Bad gate settings fail at construction, naming the field."""
    with pytest.raises(ValueError, match="timeout_s"):
        GateCommand(name="x", command="true", timeout_s=0)
    with pytest.raises(ValueError, match="commands"):
        GateSettings(commands=())
