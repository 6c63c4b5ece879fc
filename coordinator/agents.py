"""Agent profiles: how to start an agent process for a task, and what it may see.

A profile is a shell command template. `{prompt}` and `{task_id}` in it are replaced by the
shell-quoted prompt and task id, in one pass (a prompt that says `{task_id}` keeps saying
it); the prompt also arrives on stdin and in a file.

An agent never gets the coordinator's whole environment — that holds the orchestrator's
provider keys, `COORDINATOR_DB_URL` passwords, cloud and GitHub credentials. It gets the
`ALLOWED_ENV` basics, the names the user passes on purpose (`--pass-env NAME`), and what
its profile's `env` sets (`agent_environment`); the fleet adds the `COORDINATOR_*` contract.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
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
        """The shell command for one task, with placeholders substituted and quoted (in one
        pass: nothing inside a substituted value is substituted again)."""
        values = {"prompt": prompt, "task_id": task_id}
        return _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), self.command)


_PLACEHOLDER = re.compile(r"\{(prompt|task_id)\}")


# Codex through an orchestrator: a model provider of its own (the built-in `openai` one
# cannot send extra headers) at OPENAI_BASE_URL, authenticated with CODEX_API_KEY, on the
# Responses API's WebSocket mode as with OpenAI, sending the headers that name the agent
# (ORCHESTRATOR_AGENT, which `coordinator.traffic.agent_headers` sets) and its task
# (COORDINATOR_TASK_ID); Codex leaves out a header whose variable is unset.
_CODEX_VIA_ORCHESTRATOR = (
    "-c model_provider=orchestrator "
    '-c "model_providers.orchestrator={name=\\"orchestrator\\", '
    'base_url=\\"$OPENAI_BASE_URL\\", env_key=\\"CODEX_API_KEY\\", '
    'wire_api=\\"responses\\", supports_websockets=true, env_http_headers={'
    'x-orchestrator-agent=\\"ORCHESTRATOR_AGENT\\", '
    'x-orchestrator-task=\\"COORDINATOR_TASK_ID\\"}}"'
)

BUILTIN_PROFILES: dict[str, AgentProfile] = {
    "echo": AgentProfile(
        name="echo",
        command="cat",
        description="offline: writes the prompt back (demos and tests)",
    ),
    "claude": AgentProfile(
        name="claude",
        # The prompt on stdin only: as an argument, one starting with "-" would be an option.
        command="claude --print --output-format text",
        description="Claude Code in print mode, the prompt on stdin; override `command` in "
        "coordinator.toml to add flags such as --model or --allowedTools",
    ),
    # Codex ignores OPENAI_BASE_URL: its base URL comes from its config (`-c`); the prompt is
    # read from stdin (`-`), where Codex would otherwise append stdin to an argument prompt.
    "codex": AgentProfile(
        name="codex",
        command="codex exec --skip-git-repo-check --sandbox workspace-write "
        f"${{OPENAI_BASE_URL:+{_CODEX_VIA_ORCHESTRATOR}}} -",
        description="Codex in exec mode, through OPENAI_BASE_URL when it is set (naming its "
        "agent and task to the orchestrator); override `command` in coordinator.toml to add "
        "flags such as --model",
    ),
}


def resolve_profile(spec: str, profiles: Mapping[str, AgentProfile]) -> AgentProfile:
    """A profile by name (configured first, then built-in); anything else is a command."""
    if spec in profiles:
        return profiles[spec]
    if spec in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[spec]
    return AgentProfile(name="command", command=spec, description="a command given on the CLI")


ALLOWED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "TERM",
    "LANG",
    "LANGUAGE",
)
"""What every agent gets of the coordinator's environment (and every `LC_*` locale name)."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env_names(names: Iterable[str]) -> tuple[str, ...]:
    """`names` as a tuple; raises `ValueError` naming the first that is not a variable name."""
    names = tuple(names)
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"pass_env: {name!r} is not an environment variable name")
    return names


def agent_environment(
    environ: Mapping[str, str], *, pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """The part of `environ` an agent may see: `ALLOWED_ENV`, `LC_*`, and `pass_env`."""
    passed = set(ALLOWED_ENV) | set(pass_env)
    return {
        name: value for name, value in environ.items() if name in passed or name.startswith("LC_")
    }
