"""`orchestrator doctor`: check the setup and say what to fix.

    checks = run_checks({"provider": None}, env_file=Path("orchestrator.env"))
    for check in checks:
        print(check.line())              # "ok    provider  anthropic: key accepted by …"

Each `Check` is `ok`, `warn` or `fail` with one line a person can act on: the env file's
mode, the settings themselves, each configured provider (upstream reachable, key accepted,
with one cheap call that spends no tokens: `GET /v1/models`, or llama.cpp's `GET /health`),
the models' prices (a budget cannot limit an unpriced model), and the web API's port.

No key is ever printed, not even masked: a check says only whether one is set, never shows an
upstream's answer body (it may echo the key), and every message is scrubbed of the configured
secrets before it is returned, in any case.
"""

from __future__ import annotations

import enum
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from orchestrator.errors import SettingsError

if TYPE_CHECKING:
    from orchestrator.settings import ServerSettings

__all__ = ["Check", "Status", "port_free", "run_checks"]

DEFAULT_TIMEOUT_S = 5.0
_KEY_SETTING = {"anthropic": "anthropic_api_key", "openai": "openai_api_key"}
_URL_SETTING = {
    "anthropic": "anthropic_base_url",
    "openai": "openai_base_url",
    "llamacpp": "llama_cpp_url",
}


class Status(enum.StrEnum):
    """How a check came out: `fail` makes `orchestrator doctor` exit 1."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One finding: what was checked (`name`), how it came out, and what to do about it."""

    name: str
    status: Status
    message: str

    def line(self) -> str:
        """The finding as one line of text: status, name, message."""
        return f"{self.status:<5} {self.name:<9} {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "message": self.message}


def port_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now (as uvicorn binds it, with SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError:
        return False
    return True


def run_checks(
    flags: Mapping[str, Any] | None = None,
    *,
    env_file: Path,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Check]:
    """Every check, in order: env file, settings, providers, prices, port.

    `flags` and `environ` are as for `orchestrator.settings.load_settings` (the settings
    `serve` would use). Settings that do not load end the list with their `fail`. Each
    network call waits at most `timeout_s` seconds.
    """
    from orchestrator.settings import load_settings

    checks = [_check_env_file(env_file)]
    try:
        settings = load_settings(flags, environ=environ, env_file=env_file)
    except SettingsError as exc:
        if checks[0].status is not Status.FAIL:  # a malformed file is already reported
            checks.append(Check(name="settings", status=Status.FAIL, message=str(exc)))
        return _scrubbed(checks, _raw_secrets(environ, env_file))
    checks.append(_check_settings(settings))
    for provider in (settings.provider, *settings.fallback):
        checks.append(_check_provider(settings, provider, timeout_s=timeout_s))
    checks.extend(_check_prices(settings))
    checks.append(_check_port(settings, timeout_s=timeout_s))
    secrets = [
        s.reveal()
        for s in (settings.anthropic_api_key, settings.openai_api_key, settings.api_key,
                  settings.admin_api_key)
        if s is not None
    ]
    return _scrubbed(checks, secrets)


# -- the env file ----------------------------------------------------------------------------


def _check_env_file(path: Path) -> Check:
    from orchestrator.settings import read_env_file

    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return Check(
            name="env file",
            status=Status.OK,
            message=f"none at {path}: settings come from flags and the environment "
            "(`orchestrator` asks for them and saves one)",
        )
    except OSError as exc:
        return Check(name="env file", status=Status.FAIL, message=f"{path}: {exc.strerror}")
    try:
        entries = read_env_file(path)
    except SettingsError as exc:
        # The message quotes the bad line, which may hold a key: name the line only.
        where = str(exc).partition(": expected")[0]
        return Check(
            name="env file",
            status=Status.FAIL,
            message=f"{where} is not KEY=VALUE (the line is not shown: it may hold a key); "
            "fix or remove it",
        )
    keys = sorted(name for name in entries if name.endswith("_KEY") and entries[name])
    holds = f"; holds {', '.join(keys)}" if keys else ""
    if mode & 0o077:
        return Check(
            name="env file",
            status=Status.WARN,
            message=f"{path} is readable by others (mode {mode:04o}){holds}: chmod 600 {path}",
        )
    return Check(name="env file", status=Status.OK, message=f"{path} (mode {mode:04o}){holds}")


# -- settings --------------------------------------------------------------------------------


def _check_settings(settings: ServerSettings) -> Check:
    chain = ", ".join((settings.provider, *settings.fallback))
    keys = [
        name
        for field, name in (
            ("anthropic_api_key", "ANTHROPIC_API_KEY"),
            ("openai_api_key", "OPENAI_API_KEY"),
            ("api_key", "API_KEY"),
            ("admin_api_key", "ADMIN_API_KEY"),
        )
        if getattr(settings, field) is not None
    ]
    budget = f"; MAX_SPEND ${settings.max_spend_usd:g}" if settings.max_spend_usd else ""
    return Check(
        name="settings",
        status=Status.OK,
        message=f"provider {chain}; set: {', '.join(keys) or 'no keys'}{budget}",
    )


# -- providers -------------------------------------------------------------------------------


def _shown(url: str) -> str:
    """`url` without any user:password part, to print."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _probe(settings: ServerSettings, provider: str) -> tuple[str, dict[str, str]]:
    """The URL of `provider`'s cheap call (no tokens spent) and its headers."""
    from orchestrator.providers._http import ANTHROPIC_API_URL, HOP_HEADERS, OPENAI_API_URL

    headers = dict(HOP_HEADERS)
    if provider == "anthropic":
        from orchestrator.providers.anthropic import API_VERSION

        assert settings.anthropic_api_key is not None
        root = (settings.anthropic_base_url or ANTHROPIC_API_URL).rstrip("/")
        headers |= {"x-api-key": settings.anthropic_api_key.reveal(),
                    "anthropic-version": API_VERSION}
        return f"{root}/v1/models", headers
    if provider == "openai":
        root = (settings.openai_base_url or OPENAI_API_URL).rstrip("/")
        if settings.openai_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.openai_api_key.reveal()}"
        return f"{root}/models", headers
    assert settings.llama_cpp_url is not None
    return f"{settings.llama_cpp_url.rstrip('/')}/health", headers


def _check_provider(settings: ServerSettings, provider: str, *, timeout_s: float) -> Check:
    import httpx

    from orchestrator.settings import ENV_NAMES

    if provider == "echo":
        return Check(name="provider", status=Status.OK, message="echo: offline, nothing to check")
    url, headers = _probe(settings, provider)
    where = _shown(url)
    url_env = ENV_NAMES[_URL_SETTING[provider]]
    key_field = _KEY_SETTING.get(provider)
    key_env = ENV_NAMES[key_field] if key_field else None
    has_key = key_field is not None and getattr(settings, key_field) is not None

    def found(status: Status, message: str) -> Check:
        return Check(name="provider", status=status, message=f"{provider}: {message}")

    try:
        with httpx.Client(timeout=timeout_s) as client:
            code = client.get(url, headers=headers).status_code
    except httpx.TimeoutException:
        return found(
            Status.FAIL,
            f"upstream unreachable at {where} (no answer within {timeout_s:g} s): "
            f"check {url_env} and the network",
        )
    except httpx.HTTPError as exc:
        reason = type(exc).__name__ if not str(exc) else str(exc)
        return found(
            Status.FAIL,
            f"upstream unreachable at {where} ({reason}): check {url_env} and the network",
        )
    if 200 <= code < 300:
        if provider == "llamacpp":
            return found(Status.OK, f"{where} answers (HTTP {code})")
        accepted = f"key accepted by {where}" if has_key else f"{where} answers without a key"
        return found(Status.OK, accepted)
    if code in (401, 403):
        fix = f"check {key_env}" if has_key else f"set {key_env}"
        return found(Status.FAIL, f"key refused by provider (HTTP {code} from {where}): {fix}")
    if code == 429:
        return found(Status.WARN, f"{where} is rate-limiting this key (HTTP 429); try later")
    if provider == "llamacpp" and code == 503:
        return found(Status.WARN, f"{where} is up but still loading its model (HTTP 503)")
    if code == 404:
        return found(
            Status.WARN,
            f"{where} is not there (HTTP 404), so the key was not checked: "
            f"is {url_env} the API's root URL?",
        )
    return found(Status.WARN, f"{where} answered HTTP {code}; the key could not be checked")


# -- prices ----------------------------------------------------------------------------------


def _check_prices(settings: ServerSettings) -> list[Check]:
    from orchestrator.cost import PriceTable
    from orchestrator.settings import default_model

    path = Path(settings.prices_file) if settings.prices_file is not None else None
    try:
        table = PriceTable.load(path)
    except (OSError, ValueError) as exc:
        return [Check(name="prices", status=Status.FAIL, message=f"PRICES_FILE: {exc}")]
    checks = []
    for provider in (settings.provider, *settings.fallback):
        # As the pipeline assembles it: the configured model is the primary's only.
        model = (settings.model if provider == settings.provider else None) or default_model(
            provider  # type: ignore[arg-type]
        )
        price = table.price(model)
        if price is not None:
            checks.append(
                Check(
                    name="prices",
                    status=Status.OK,
                    message=f"{model} ({provider}) costs ${price.input_per_mtok_usd:g} in, "
                    f"${price.output_per_mtok_usd:g} out per million tokens",
                )
            )
            continue
        budget = settings.max_spend_usd is not None
        checks.append(
            Check(
                name="prices",
                status=Status.FAIL if budget else Status.WARN,
                message=f"{model} ({provider}) has no price, so its cost counts as $0 and "
                f"{'MAX_SPEND cannot' if budget else 'a budget (MAX_SPEND) could not'} limit "
                f'it: give [models."{model}"] input_per_mtok_usd and output_per_mtok_usd in a '
                "TOML file with --prices FILE or PRICES_FILE",
            )
        )
    return checks


# -- the port --------------------------------------------------------------------------------


def _serves_orchestrator(host: str, port: int, *, timeout_s: float) -> bool:
    """Whether what listens on `host:port` answers `/health` as an orchestrator does."""
    import httpx

    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    authority = f"[{host}]" if ":" in host else host
    try:
        response = httpx.get(
            f"http://{authority}:{port}/health", timeout=timeout_s, trust_env=False
        )
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return False
    return (
        response.status_code in (200, 503)
        and isinstance(body, dict)
        and body.get("status") in ("ok", "degraded")
    )


def _check_port(settings: ServerSettings, *, timeout_s: float) -> Check:
    host, port = settings.host, settings.port
    if port == 0:
        return Check(name="port", status=Status.OK, message="PORT 0: the OS picks a free port")
    if port_free(host, port):
        return Check(name="port", status=Status.OK, message=f"{host}:{port} is free")
    # An orchestrator answers /health at once; a program that accepts and never answers
    # should not hold the doctor for the whole network timeout.
    if _serves_orchestrator(host, port, timeout_s=min(timeout_s, 2.0)):
        return Check(
            name="port",
            status=Status.OK,
            message=f"{host}:{port} is served by an orchestrator already (its /health "
            "answers); another one needs another --port",
        )
    return Check(
        name="port",
        status=Status.FAIL,
        message=f"{host}:{port} is taken by another program: stop it, or choose another "
        "port with --port or PORT",
    )


# -- secrets ---------------------------------------------------------------------------------


def _raw_secrets(environ: Mapping[str, str] | None, env_file: Path) -> list[str]:
    """The secrets as configured, for scrubbing when the settings did not load."""
    from orchestrator.settings import read_env_file

    environ = os.environ if environ is None else environ
    names = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "API_KEY", "ADMIN_API_KEY")
    try:
        from_file = read_env_file(env_file)
    except (SettingsError, OSError):
        from_file = {}
    return [v for source in (environ, from_file) for n in names if (v := source.get(n))]


def _scrubbed(checks: list[Check], secrets: list[str]) -> list[Check]:
    """`checks` with every secret (in any case) replaced by `********`."""
    secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)
    if not secrets:
        return checks
    pattern = re.compile("|".join(re.escape(s) for s in secrets), re.IGNORECASE)
    return [
        Check(name=c.name, status=c.status, message=pattern.sub("********", c.message))
        for c in checks
    ]
