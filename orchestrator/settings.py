"""Server settings: what to serve (provider, model, keys) and how (host, port, token, limits).

Sources, first match wins: flags (a mapping keyed by `ServerSettings` field name) > the
environment > an `orchestrator.env` file > the defaults on `ServerSettings`.

    settings = load_settings({"provider": "echo", "port": 0})
    pipeline = build_pipeline(settings)      # orchestrator.assembly, the composition root

The environment and the env file use the names in `ENV_NAMES`: `PROVIDER`, `MODEL`,
`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `LLAMA_CPP_URL`, `HOST`, `PORT`, `API_KEY`, `MAX_SPEND`, …
The upstream base URLs are `ANTHROPIC_UPSTREAM_URL` / `OPENAI_UPSTREAM_URL`, not the SDKs'
`ANTHROPIC_BASE_URL` / `OPENAI_BASE_URL`: those point agents *at this server*, and a shell that
has them set must not make the server forward to itself.

The env file is `KEY=VALUE` lines (blank lines and `#` comments allowed; one pair of quotes
around a value is removed on reading; no multi-line values); `write_env_file` writes it
atomically with mode 0600, `read_env_file` reads it back. API keys are held as `Secret`, whose
repr and str are masked.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from orchestrator.errors import SettingsError
from orchestrator.providers.registry import PROVIDER_SPECS

__all__ = [
    "DEFAULT_ENV_FILE",
    "DEFAULT_MAX_BODY_BYTES",
    "ENV_NAMES",
    "PROVIDERS",
    "Provider",
    "Secret",
    "ServerSettings",
    "default_model",
    "is_loopback",
    "load_settings",
    "read_env_file",
    "write_env_file",
]

Provider = Literal["anthropic", "openai", "llamacpp", "echo"]  # the registry's names, for typing
PROVIDERS: Final[tuple[str, ...]] = tuple(PROVIDER_SPECS)

DEFAULT_ENV_FILE: Final = Path("orchestrator.env")
# Anthropic's own request limit for the Messages API; long agent conversations get close.
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024

ENV_NAMES: Final[Mapping[str, str]] = {
    "provider": "PROVIDER",
    "model": "MODEL",
    "fallback": "FALLBACK",
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
    "anthropic_base_url": "ANTHROPIC_UPSTREAM_URL",
    "openai_base_url": "OPENAI_UPSTREAM_URL",
    "llama_cpp_url": "LLAMA_CPP_URL",
    "echo_faults": "ECHO_FAULTS",
    "host": "HOST",
    "allowed_hosts": "ALLOWED_HOSTS",
    "port": "PORT",
    "api_key": "API_KEY",
    "admin_api_key": "ADMIN_API_KEY",
    "max_spend_usd": "MAX_SPEND",
    "prices_file": "PRICES_FILE",
    "max_body_bytes": "MAX_BODY_BYTES",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
    "log_prompts": "LOG_PROMPTS",
    "semantic_dedup": "SEMANTIC_DEDUP",
    "semantic_dedup_max_wait_ms": "SEMANTIC_DEDUP_MAX_WAIT_MS",
    "semantic_dedup_path": "SEMANTIC_DEDUP_PATH",
    "learned_routing": "LEARNED_ROUTING",
    "prompt_optimizer": "PROMPT_OPTIMIZER",
    "router_save_interval_s": "ROUTER_SAVE_INTERVAL_S",
    "router_save_every": "ROUTER_SAVE_EVERY",
}

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Secret:
    """A string that never prints: `repr`/`str` show `'********'`; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_SECRET_FIELDS = ("anthropic_api_key", "openai_api_key", "api_key", "admin_api_key")
_URL_FIELDS = ("anthropic_base_url", "openai_base_url", "llama_cpp_url")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Everything the server needs; validated on construction (`SettingsError` names the
    setting). Secrets given as `str` are wrapped in `Secret`.

    `model` None means the provider's default. `port` 0 asks the OS for a free port.
    `max_spend_usd` is the global budget; `prices_file` a TOML price table merged over the
    shipped one. `api_key` is the bearer token clients must send; without one the server
    refuses to bind a non-loopback `host`. `admin_api_key` is the token that may also change
    the live configuration (`PATCH /v1/config`, MCP `configure_pipeline`); unset, `api_key`
    serves as both (`admin_token`).
    """

    provider: Provider
    model: str | None = None
    fallback: tuple[Provider, ...] = ()  # tried in order when the provider fails or is open
    anthropic_api_key: Secret | None = None
    openai_api_key: Secret | None = None
    anthropic_base_url: str | None = None
    openai_base_url: str | None = None
    llama_cpp_url: str | None = None
    # The echo provider's injected failures (`orchestrator.providers.faults`), e.g. "20s:0.3".
    echo_faults: str | None = None
    host: str = "127.0.0.1"
    # Host names (besides IP literals and localhost) clients use to reach the server; `*` any.
    allowed_hosts: tuple[str, ...] = ()
    port: int = 8080
    api_key: Secret | None = None
    admin_api_key: Secret | None = None
    max_spend_usd: float | None = None
    prices_file: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Log each request's prompt and answer (masked, truncated) on `orchestrator.prompts`.
    log_prompts: bool = False
    # The intelligence layer: semantic dedup of near-identical prompts (loads on first use),
    # and the learned router choosing among the providers (with a fallback configured).
    semantic_dedup: bool = True
    # The longest a request's semantic lookup may wait for the embedder (its thread busy with
    # earlier prompts) before the request goes upstream as a miss. 20 ms: one MiniLM embedding
    # alone is ~9 ms on a CPU, so an idle or nearly idle embedder always takes the lookup, while
    # a backlog is never allowed to add more than a small fraction of an upstream call's own
    # latency (hundreds of ms to seconds) to every request it does not save.
    semantic_dedup_max_wait_ms: float = 20.0
    # The file the semantic dedup's answered entries (scopes and TTLs with them) are kept in:
    # saved while serving (as often as the router's state) and at shutdown, loaded at start.
    # None (the default): in memory only, lost at a restart.
    semantic_dedup_path: str | None = None
    learned_routing: bool = True
    # The prompt optimizer for requests that opt in (metadata `optimize_prompt`); off: ignored.
    prompt_optimizer: bool = True
    # With an agent memory (`--db`): the learned router's state is saved while serving, every
    # this many seconds that learned something, or after this many updates, and at close.
    router_save_interval_s: float = 60.0
    router_save_every: int = 1000

    def __post_init__(self) -> None:
        for name in _SECRET_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Secret(value) if value else None)
            elif value is not None and not isinstance(value, Secret):
                raise SettingsError(f"{ENV_NAMES[name]} must be a string", names=(ENV_NAMES[name],))
        if self.provider not in PROVIDERS:
            raise SettingsError(
                f"PROVIDER must be one of {', '.join(PROVIDERS)}; got {self.provider!r}",
                names=("PROVIDER",),
            )
        if isinstance(self.fallback, str):
            object.__setattr__(self, "fallback", _provider_list(self.fallback))
        if isinstance(self.allowed_hosts, str):
            object.__setattr__(self, "allowed_hosts", _provider_list(self.allowed_hosts))
        chain = (self.provider, *self.fallback)
        bad = [p for p in self.fallback if p not in PROVIDERS]
        if bad or len(set(chain)) != len(chain):
            raise SettingsError(
                f"FALLBACK must list other providers ({', '.join(PROVIDERS)}), each once and "
                f"not PROVIDER itself; got {','.join(self.fallback)!r}",
                names=("FALLBACK",),
            )
        if self.echo_faults is not None:
            from orchestrator.providers.faults import FaultSchedule

            try:
                FaultSchedule.parse(self.echo_faults)
            except ValueError as exc:
                raise SettingsError(f"ECHO_FAULTS: {exc}", names=("ECHO_FAULTS",)) from None
        for name in _URL_FIELDS:
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise SettingsError(
                    f"{ENV_NAMES[name]} must be an http(s) URL, got {url!r}",
                    names=(ENV_NAMES[name],),
                )
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not (0 <= self.port <= 65535)
        ):
            raise SettingsError(f"PORT must be 0..65535, got {self.port!r}", names=("PORT",))
        if self.max_spend_usd is not None and not (
            math.isfinite(self.max_spend_usd) and self.max_spend_usd > 0
        ):
            raise SettingsError(
                f"MAX_SPEND must be a number > 0, got {self.max_spend_usd!r}", names=("MAX_SPEND",)
            )
        if self.max_body_bytes < 1:
            raise SettingsError(
                f"MAX_BODY_BYTES must be >= 1, got {self.max_body_bytes!r}",
                names=("MAX_BODY_BYTES",),
            )
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"LOG_LEVEL unknown: {self.log_level!r}", names=("LOG_LEVEL",))
        if self.log_format not in ("text", "json"):
            raise SettingsError(
                f"LOG_FORMAT must be text or json, got {self.log_format!r}", names=("LOG_FORMAT",)
            )
        if (
            isinstance(self.semantic_dedup_max_wait_ms, bool)
            or not isinstance(self.semantic_dedup_max_wait_ms, int | float)
            or not (
                math.isfinite(self.semantic_dedup_max_wait_ms)
                and self.semantic_dedup_max_wait_ms >= 0
            )
        ):
            raise SettingsError(
                "SEMANTIC_DEDUP_MAX_WAIT_MS must be a number >= 0, "
                f"got {self.semantic_dedup_max_wait_ms!r}",
                names=("SEMANTIC_DEDUP_MAX_WAIT_MS",),
            )
        if (
            isinstance(self.router_save_interval_s, bool)
            or not isinstance(self.router_save_interval_s, int | float)
            or not (math.isfinite(self.router_save_interval_s) and self.router_save_interval_s > 0)
        ):
            raise SettingsError(
                f"ROUTER_SAVE_INTERVAL_S must be a number > 0, got {self.router_save_interval_s!r}",
                names=("ROUTER_SAVE_INTERVAL_S",),
            )
        if (
            isinstance(self.router_save_every, bool)
            or not isinstance(self.router_save_every, int)
            or self.router_save_every < 1
        ):
            raise SettingsError(
                f"ROUTER_SAVE_EVERY must be an integer >= 1, got {self.router_save_every!r}",
                names=("ROUTER_SAVE_EVERY",),
            )
        self._check_required()
        if self.max_spend_usd is not None:
            _check_priced(self)
        if not self.host:
            raise SettingsError("HOST must not be empty", names=("HOST",))
        if self.api_key is None and not is_loopback(self.host):
            raise SettingsError(
                f"refusing to listen on non-loopback host {self.host!r} without a token: "
                "set API_KEY (clients then send 'Authorization: Bearer <API_KEY>'), "
                "or bind 127.0.0.1",
                names=("HOST", "API_KEY"),
            )

    @property
    def admin_token(self) -> Secret | None:
        """The token that may change the live configuration: `admin_api_key`, else `api_key`
        (None: a server without tokens, where every caller may)."""
        return self.admin_api_key if self.admin_api_key is not None else self.api_key

    def _check_required(self) -> None:
        for provider in (self.provider, *self.fallback):
            needed = PROVIDER_SPECS[provider].required(self)
            missing = tuple(ENV_NAMES[n] for n in needed if getattr(self, n) is None)
            if missing:
                raise SettingsError(
                    f"provider {provider!r} needs {' and '.join(missing)}: set it in the "
                    f"environment, in {DEFAULT_ENV_FILE}, or run the setup wizard",
                    names=missing,
                )

    def to_env(self) -> dict[str, str]:
        """The settings that differ from the defaults, as env-file entries (secrets revealed:
        this is what `write_env_file` stores)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (f.default is not dataclasses.MISSING and value == f.default):
                continue
            if isinstance(value, Secret):
                out[ENV_NAMES[f.name]] = value.reveal()
            elif isinstance(value, tuple):
                out[ENV_NAMES[f.name]] = ",".join(value)
            else:
                out[ENV_NAMES[f.name]] = str(value)
        return out


def default_model(provider: Provider) -> str:
    """The model a provider uses when none is set (imports that provider's module)."""
    return PROVIDER_SPECS[provider].default_model()


def switch(raw: str) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (any case)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


switch.__name__ = "switch (on/off, true/false, 1/0)"

_CONVERTERS: Mapping[str, Any] = {
    "port": int,
    "max_spend_usd": float,
    "max_body_bytes": int,
    "semantic_dedup": switch,
    "semantic_dedup_max_wait_ms": float,
    "learned_routing": switch,
    "prompt_optimizer": switch,
    "router_save_interval_s": float,
    "router_save_every": int,
    "log_prompts": switch,
}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = DEFAULT_ENV_FILE,
) -> ServerSettings:
    """Settings from `flags` > `environ` (default `os.environ`) > `env_file` > defaults.

    `flags` is keyed by `ServerSettings` field name; None values count as not given.
    Raises `SettingsError` naming what is missing or malformed (and where it came from).
    """
    environ = os.environ if environ is None else environ
    from_file = read_env_file(env_file) if env_file is not None else {}
    unknown = sorted(set(flags or ()) - set(ENV_NAMES))
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}", names=tuple(unknown))
    values: dict[str, Any] = {}
    for name, env_name in ENV_NAMES.items():
        flag = (flags or {}).get(name)
        if flag is not None:
            values[name] = flag
            continue
        for source, where in ((environ, "the environment"), (from_file, str(env_file))):
            raw = source.get(env_name)
            if raw is None or raw == "":
                continue
            values[name] = _convert(name, env_name, raw, where)
            break
    if "provider" not in values:
        raise SettingsError(
            "no provider set: pass --provider, set PROVIDER "
            f"({', '.join(PROVIDERS)}), or run the setup wizard",
            names=("PROVIDER",),
        )
    if "log_level" in values:
        values["log_level"] = str(values["log_level"]).upper()
    return ServerSettings(**values)


def _convert(name: str, env_name: str, raw: str, where: str) -> Any:
    convert = _CONVERTERS.get(name)
    if convert is None:
        return raw
    try:
        return convert(raw)
    except ValueError:
        raise SettingsError(
            f"{env_name} in {where} must be a {convert.__name__}, got {raw!r}", names=(env_name,)
        ) from None


def read_env_file(path: Path) -> dict[str, str]:
    """The `KEY=VALUE` entries of `path` ({} if it does not exist).

    Raises `SettingsError` naming the file and line of a malformed line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise SettingsError(
                f"{path}:{number}: expected KEY=VALUE, got {stripped[:40]!r}", names=(key,)
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]  # KEY="value" as hand-written files often have it
        entries[key] = value
    return entries


def write_env_file(path: Path, entries: Mapping[str, str]) -> None:
    """Write `entries` as `KEY=VALUE` lines to `path`, atomically, readable only by the owner
    (mode 0600 from creation, so a key is never briefly world-readable).

    Raises ValueError for a key that is not an identifier or a value with a newline.
    """
    for key, value in entries.items():
        if not _KEY.match(key):
            raise ValueError(f"env key must be an identifier, got {key!r}")
        if "\n" in value or "\r" in value or value != value.strip():
            raise ValueError(f"env value for {key} must be one line without outer spaces")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            raise ValueError(f"env value for {key} must not be wrapped in quotes")
    path = Path(path)
    body = "".join(f"{key}={value}\n" for key, value in entries.items())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("# prompt-orchestrator settings (KEY=VALUE); keep private\n")
            handle.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_priced(settings: ServerSettings) -> None:
    """A budget needs prices: refuse to start one over a model that has none (it would spend
    without limit, silently). The echo provider is free whatever its model."""
    from orchestrator.cost import PriceTable

    path = Path(settings.prices_file) if settings.prices_file is not None else None
    try:
        prices = PriceTable.load(path)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"PRICES_FILE: {exc}", names=("PRICES_FILE",)) from None
    if settings.provider == "echo":
        return
    model = settings.model or default_model(settings.provider)
    if prices.price(model) is None:
        raise SettingsError(
            f"MAX_SPEND needs a price for model {model!r}, and the price table has none: "
            f"give it in a TOML file with --prices FILE or PRICES_FILE (merged over the "
            f'shipped table): [models."{model}"] input_per_mtok_usd = …, '
            "output_per_mtok_usd = …",
            names=("MAX_SPEND", "PRICES_FILE", "MODEL"),
        )


def _provider_list(text: str) -> tuple[Any, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())
