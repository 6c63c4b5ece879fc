"""Agent profiles: how to start an agent process for a task.

A profile is a shell command template. `{prompt}` and `{task_id}` in it are replaced by the
shell-quoted prompt and task id; the prompt also arrives on stdin and in the environment.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentProfile:
    """A named way to run an agent."""

    name: str
    command: str
    env: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError(f"agent profile {self.name!r}: command must not be empty")

    def render(self, *, prompt: str, task_id: str) -> str:
        """The shell command for one task, with placeholders substituted and quoted."""
        return self.command.replace("{prompt}", shlex.quote(prompt)).replace(
            "{task_id}", shlex.quote(task_id)
        )


BUILTIN_PROFILES: dict[str, AgentProfile] = {
    "echo": AgentProfile(
        name="echo",
        command="cat",
        description="offline: writes the prompt back (demos and tests)",
    ),
    "claude": AgentProfile(
        name="claude",
        command="claude --print --output-format text {prompt}",
        description="Claude Code in print mode; override `command` in coordinator.toml "
        "to add flags such as --model or --allowedTools",
    ),
}


def resolve_profile(spec: str, profiles: Mapping[str, AgentProfile]) -> AgentProfile:
    """A profile by name (configured first, then built-in); anything else is a command."""
    if spec in profiles:
        return profiles[spec]
    if spec in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[spec]
    return AgentProfile(name="command", command=spec, description="a command given on the CLI")
