"""Static findings: real ruff and vulture over a scratch repository, as batched meta-tasks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gitrepo import make_repo

from coordinator.self_improve import SelfImprovement, SelfImproveSettings
from coordinator.task import parse_task_file
from self_tune.metatasks import FindingKind
from self_tune.static import scan

MESSY = {
    "app.py": "import os\n\n\ndef used():\n    return 1\n\n\ndef never_called_anywhere():\n"
              "    return 2\n",
    "test_app.py": "from app import used\n\n\ndef test_used():\n    assert used() == 1\n",
}


def test_ruff_and_vulture_findings_per_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", MESSY)
    result = scan(repo)
    assert result.problems == {}
    [lint] = result.findings["ruff"]
    assert lint.kind is FindingKind.STATIC and lint.metric == "static.ruff"
    assert lint.modules == ("app.py",) and "F401" in lint.detail and "app.py:1" in lint.detail
    [dead] = result.findings["vulture"]
    assert dead.modules == ("app.py",) and "never_called_anywhere" in dead.detail


def test_a_clean_repository_has_no_findings(tmp_path: Path) -> None:
    result = scan(make_repo(tmp_path / "repo"))
    assert result.findings == {"ruff": (), "vulture": ()}


def test_a_tool_that_cannot_run_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    def missing(command, cwd):  # type: ignore[no-untyped-def]
        raise FileNotFoundError(2, "No such file or directory", command[0])

    def garbage(command, cwd):  # type: ignore[no-untyped-def]
        return subprocess.CompletedProcess(command, 1, stdout="{not json", stderr="")

    assert set(scan(tmp_path, run=missing).problems) == {"ruff", "vulture"}
    assert "could not be read" in scan(tmp_path, run=garbage).problems["ruff"]


def loop_on(repo: Path, tasks: Path, **settings: object) -> SelfImprovement:
    return SelfImprovement(SelfImproveSettings(repo=repo, **settings),  # type: ignore[arg-type]
                           tasks_dir=tasks, open_task_ids=tuple, sources=(), config=None,
                           memory=None, gate_env=None)


def test_a_scans_findings_become_one_gated_task(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", MESSY)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    proposal = loop_on(repo, tasks).scan()
    assert proposal.written is not None
    [task] = parse_task_file(proposal.written)
    assert task.gate and task.created_by == "self-improve" and "static" in task.tags
    assert "F401" in task.prompt and "never_called_anywhere" in task.prompt
    assert list(tasks.glob("*.toml")) == [proposal.written]


def test_a_dry_run_scans_but_writes_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", MESSY)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    proposal = loop_on(repo, tasks, dry_run=True).scan()
    assert proposal.written is None and proposal.reason.startswith("dry run")
    assert list(tasks.glob("*.toml")) == []
