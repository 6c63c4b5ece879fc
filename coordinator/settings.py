"""Settings: flags, then environment, then `coordinator.toml`, then defaults.

`coordinator.toml` (in the current directory, or `--config PATH` / `COORDINATOR_CONFIG`):

    tasks = "tasks"          # the queue folder (with `queue`: the inbox for task files)
    queue = "redis://queue-host:6379/0#my-project"   # tasks in Redis, shared by machines
    agents = 4               # agent loops for `coordinator run`
    agent = "claude"         # default profile name, or a command
    lease_s = 60
    grace_s = 10
    db = "postgresql://user@host/fleet"   # agent memory (default: SQLite in .coordinator/)
    pass_env = ["GITHUB_TOKEN"]           # extra variables agents may see (see agents.py)
    orchestrator = "start"   # route agents' LLM traffic through an orchestrator (or a URL)

    [self_improve]           # `coordinator --self-improve` (see coordinator/self_improve.py)
    merge = "review"
    [gate]                   # what a gated change must pass
    commands = [{ name = "pytest", command = "pytest -q" }]

    [profiles.reviewer]      # a named agent profile; tasks pick it with agent = "reviewer"
    command = "claude --print --model opus"   # the prompt arrives on stdin
    env = { REVIEW = "1" }
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.agents import AgentProfile, check_env_names
from coordinator.errors import ConfigError
from coordinator.fleet import FleetSettings, FleetTunables

if TYPE_CHECKING:
    from coordinator.self_improve import SelfImproveSettings

__all__ = ["CONFIG_FILE", "Settings", "load_settings"]

CONFIG_FILE = "coordinator.toml"

# The fleet's defaults live with the fleet; the CLI's settings start from them.
_TUNABLES = FleetTunables()
_FLEET = FleetSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the CLI needs, resolved once.

    `db` None means agent memory's own default (`memory_db.DEFAULT_URL`: SQLite under
    `.coordinator/`). `pass_env` names variables of the coordinator's environment that
    agents may see on top of the allow-list (`coordinator.agents`).
    """

    tasks: Path = Path("tasks")
    agents: int = _TUNABLES.agents
    agent: str = "echo"
    lease_s: float = _TUNABLES.lease_s
    grace_s: float = _FLEET.grace_s
    poll_s: float = _FLEET.poll_s
    retry_backoff_s: float = 5.0
    db: str | None = None
    workdir: Path = field(default_factory=Path.cwd)
    orchestrator: str | None = None  # "start", or the URL of a running orchestrator
    queue: str | None = None  # a Redis URL (`#name` picks the queue): tasks in Redis
    pass_env: tuple[str, ...] = ()
    profiles: Mapping[str, AgentProfile] = field(default_factory=dict)
    # `[self_improve]` and `[gate]`, kept as read; `self_improve_settings()` parses them
    self_improve_tables: tuple[Mapping[str, Any], Mapping[str, Any], Path] | None = None

    def self_improve_settings(self) -> SelfImproveSettings:
        """The loop's settings from the config file (defaults where it says nothing)."""
        from coordinator.self_improve import SelfImproveSettings, parse_settings

        if self.self_improve_tables is None:
            return SelfImproveSettings()
        return parse_settings(*self.self_improve_tables)


# setting -> (environment variable, type)
_SOURCES: dict[str, tuple[str, type]] = {
    "tasks": ("COORDINATOR_TASKS", Path),
    "agents": ("COORDINATOR_AGENTS", int),
    "agent": ("COORDINATOR_AGENT", str),
    "lease_s": ("COORDINATOR_LEASE_S", float),
    "grace_s": ("COORDINATOR_GRACE_S", float),
    "poll_s": ("COORDINATOR_POLL_S", float),
    "retry_backoff_s": ("COORDINATOR_RETRY_BACKOFF_S", float),
    "db": ("COORDINATOR_DB_URL", str),
    "workdir": ("COORDINATOR_WORKDIR", Path),
    "orchestrator": ("COORDINATOR_ORCHESTRATOR", str),
    "queue": ("COORDINATOR_QUEUE", str),
    "pass_env": ("COORDINATOR_PASS_ENV", tuple),
}


def load_settings(
    flags: Mapping[str, Any],
    *,
    environ: Mapping[str, str] = os.environ,
    config_path: Path | None = None,
) -> Settings:
    """Resolve settings; `flags` holds only the flags the user actually gave.

    Raises `ConfigError` naming the flag, variable or file key that is malformed.
    """
    path = config_path or (Path(environ["COORDINATOR_CONFIG"]) if "COORDINATOR_CONFIG" in
                           environ else Path(CONFIG_FILE))
    file_values = _read_config_file(path, required=config_path is not None)
    values: dict[str, Any] = {}
    for name, (env_name, kind) in _SOURCES.items():
        if flags.get(name) is not None:
            values[name] = _coerce(flags[name], kind, f"flag --{name.replace('_', '-')}")
        elif env_name in environ:
            values[name] = _coerce(environ[env_name], kind, f"environment variable {env_name}")
        elif name in file_values:
            values[name] = _coerce(file_values[name], kind, f"{path}: key {name!r}")
    values["profiles"] = _profiles(file_values.get("profiles", {}), path)
    tables = ("profiles", "self_improve", "gate")
    if "self_improve" in file_values or "gate" in file_values:
        values["self_improve_tables"] = (file_values.get("self_improve", {}),
                                         file_values.get("gate", {}), path)
    unknown = set(file_values) - set(_SOURCES) - set(tables)
    if unknown:
        known = ", ".join([*_SOURCES, *tables])
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {known}")
    settings = Settings(**values)
    try:
        check_env_names(settings.pass_env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if settings.self_improve_tables is not None:  # a bad [self_improve] or [gate] fails now
        settings.self_improve_settings()
    for item in fields(Settings):
        value = getattr(settings, item.name)
        if item.name in ("agents",) and value < 1:
            raise ConfigError(f"agents must be >= 1, got {value}")
        if item.name in ("lease_s", "poll_s") and value <= 0:
            raise ConfigError(f"{item.name} must be > 0, got {value}")
    return settings


def _read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such config file") from None
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from exc


def _coerce(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected {kind.__name__}, got a boolean")
    if kind is tuple:  # a list of names: a TOML array, repeated flags, or "A,B" in a variable
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected a list of names, got {value!r}")
        return tuple(i.strip() for i in items if i.strip())
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None


def _profiles(table: Any, path: Path) -> dict[str, AgentProfile]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [profiles] must be a table of tables")
    profiles = {}
    for name, spec in table.items():
        where = f"{path}: [profiles.{name}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
            raise ConfigError(f"{where}: needs command = \"...\"")
        extra = set(spec) - {"command", "env", "description"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        env = spec.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f"{where}: env must be a table of strings")
        try:
            profiles[name] = AgentProfile(
                name=name, command=spec["command"], env=env,
                description=str(spec.get("description", "")),
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return profiles
