"""Static findings: what `ruff` and `vulture` find in the target repository, as meta-task
findings (kind `static`), one per tool and file.

    ruff check --output-format json .      lint errors, with their rule codes
    vulture . --min-confidence 60          dead code (unused functions, imports, variables)

Each tool runs in the repository with a timeout; one that is missing, times out, or prints
what cannot be read gives no findings and says why in `StaticScan.problems` — a broken tool
must not stop the loop. The loop batches one scan's findings into one capped task.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from self_tune.metatasks import Finding, FindingKind

__all__ = ["StaticScan", "scan"]

TIMEOUT_S = 120.0
_VULTURE_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<message>.+)$")

Runner = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]


def _run(command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


@dataclass(frozen=True, slots=True)
class StaticScan:
    """The findings per tool (`ruff`, `vulture`), and why a tool gave none if it failed."""

    findings: Mapping[str, tuple[Finding, ...]] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)


def scan(repo: Path, *, run: Runner = _run) -> StaticScan:
    """Run both tools over `repo`; never raises for a tool's failure."""
    findings: dict[str, tuple[Finding, ...]] = {}
    problems: dict[str, str] = {}
    tools = {
        "ruff": ([sys.executable, "-m", "ruff", "check", "--output-format", "json",
                  "--no-cache", "."], _ruff),
        "vulture": ([sys.executable, "-m", "vulture", ".", "--min-confidence", "60",
                     "--ignore-names", "test_*,setUp*,tearDown*"],  # pytest calls these
                    _vulture),
    }
    for tool, (command, parse) in tools.items():
        try:
            done = run(command, repo)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems[tool] = f"{tool} could not run: {exc}"
            continue
        if "No module named" in done.stderr:
            problems[tool] = f"{tool} is not installed"
            continue
        try:
            findings[tool] = parse(done.stdout, repo)
        except (ValueError, KeyError, TypeError) as exc:
            problems[tool] = f"{tool} printed what could not be read: {exc}"
    return StaticScan(findings=findings, problems=problems)


def _ruff(output: str, repo: Path) -> tuple[Finding, ...]:
    by_file: dict[str, list[str]] = defaultdict(list)
    for item in json.loads(output or "[]"):
        path = _relative(item["filename"], repo)
        row = (item.get("location") or {}).get("row", "?")
        by_file[path].append(f"{path}:{row} {item['code']} {item['message']}")
    return tuple(_finding("static.ruff", path, items) for path, items in sorted(by_file.items()))


def _vulture(output: str, repo: Path) -> tuple[Finding, ...]:
    by_file: dict[str, list[str]] = defaultdict(list)
    for line in output.splitlines():
        match = _VULTURE_LINE.match(line.strip())
        if match is None:
            continue
        path = _relative(match["file"], repo)
        by_file[path].append(f"{path}:{match['line']} {match['message']}")
    return tuple(_finding("static.vulture", path, items)
                 for path, items in sorted(by_file.items()))


def _finding(metric: str, path: str, items: list[str]) -> Finding:
    tool = metric.split(".", 1)[1]
    shown = "; ".join(items[:5]) + (f"; … {len(items) - 5} more" if len(items) > 5 else "")
    return Finding(kind=FindingKind.STATIC, metric=metric, observed=float(len(items)),
                   detail=f"{tool}: {shown}", suspects=(path,))


def _relative(filename: str, repo: Path) -> str:
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(repo.resolve())) if path.is_absolute() else str(
            path).removeprefix("./")
    except ValueError:
        return str(path)
