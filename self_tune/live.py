"""The small live-config interface the tuner acts through, in process or over HTTP.

`ConfigPort` is all the controller knows of the system it tunes: read the current values,
apply a partial change and learn what changed. `LocalConfig` fronts in-process live configs
(the pipeline's `LiveConfig` and the fleet's) through the same `LiveConfigSet` a server's
`/v1/config` uses; `HttpConfig` speaks a running server's `GET /v1/config` and
`PATCH /v1/config` with the admin token; `CombinedConfig` joins ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from orchestrator.config import LiveConfig, LiveConfigSet
from orchestrator.errors import InvalidTunable
from self_tune.errors import ConfigUpdateRejected

__all__ = ["CombinedConfig", "ConfigPort", "HttpConfig", "LocalConfig", "Value"]

Value = int | float | None


class ConfigPort(Protocol):
    """Read and change live parameters by name."""

    def values(self) -> dict[str, Value]:
        """The current value of every parameter this port reaches."""
        ...

    def apply(self, changes: Mapping[str, Value]) -> dict[str, tuple[Value, Value]]:
        """Apply `changes` atomically per target; return ``{name: (old, new)}`` for what
        changed. Raises `ConfigUpdateRejected` naming a refused field."""
        ...


class LocalConfig:
    """In-process live configs (`LiveConfig`s, each owning its dataclass's field names), as a
    port: the numeric values of their `LiveConfigSet`, and its all-or-nothing `apply` with
    refusals reported as `ConfigUpdateRejected`."""

    def __init__(self, *lives: LiveConfig[Any]) -> None:
        if not lives:
            raise ValueError("lives: LocalConfig needs at least one live config")
        self._set = LiveConfigSet(*lives)

    def values(self) -> dict[str, Value]:
        return {name: value for name, value in self._set.values().items()
                if value is None or (isinstance(value, int | float)
                                     and not isinstance(value, bool))}

    def apply(self, changes: Mapping[str, Value]) -> dict[str, tuple[Value, Value]]:
        try:
            return dict(self._set.apply(changes))
        except InvalidTunable as exc:
            raise ConfigUpdateRejected(exc.field, str(exc)) from exc


class HttpConfig:
    """A running server's live config: `GET /v1/config` and `PATCH /v1/config`.

    `admin_token` is sent as the bearer token (changing needs `ADMIN_API_KEY`, or `API_KEY`
    when that is unset; reading needs any token the server accepts). A refused change, a
    refused token or an unreachable server raises `ConfigUpdateRejected` naming the field the
    server named (`*` when there is none); the token never appears in errors. One connection
    is kept open between calls; `close()` ends it.
    """

    def __init__(self, base_url: str, *, admin_token: str | None, timeout_s: float = 5.0) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/v1/config"
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)

    def values(self) -> dict[str, Value]:
        return _values_of(self._call("GET", None))

    def apply(self, changes: Mapping[str, Value]) -> dict[str, tuple[Value, Value]]:
        if not changes:
            return {}
        body = self._call("PATCH", dict(changes))
        changed = body.get("changed", {}) if isinstance(body, dict) else {}
        return {
            name: (pair["old"], pair["new"])
            for name, pair in changed.items()
            if isinstance(pair, Mapping) and "old" in pair and "new" in pair
        }

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, body: dict[str, Value] | None) -> Any:
        import httpx

        try:
            response = self._client.request(method, self.url, json=body)
        except httpx.HTTPError as exc:
            raise ConfigUpdateRejected("*", f"{method} {self.url}: {type(exc).__name__}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 200:
            return data
        error = data.get("error", {}) if isinstance(data, dict) else {}
        error = error if isinstance(error, dict) else {}
        message = error.get("message") or response.reason_phrase
        field = error.get("field") or "*"
        raise ConfigUpdateRejected(
            str(field), f"{method} {self.url}: HTTP {response.status_code}: {message}"
        )


class CombinedConfig:
    """Several ports as one, each name going to the first port that holds it (the loop tunes a
    remote server's pipeline and its own fleet together)."""

    def __init__(self, *ports: ConfigPort) -> None:
        if not ports:
            raise ValueError("ports: CombinedConfig needs at least one port")
        self._ports = ports

    def values(self) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for port in reversed(self._ports):  # the first port wins a name both hold
            out.update(port.values())
        return out

    def apply(self, changes: Mapping[str, Value]) -> dict[str, tuple[Value, Value]]:
        holders = [(port, set(port.values())) for port in self._ports]
        parts: dict[int, dict[str, Value]] = {}
        for name, value in changes.items():
            index = next((i for i, (_, names) in enumerate(holders) if name in names), None)
            if index is None:
                raise ConfigUpdateRejected(name, "no live config holds this parameter")
            parts.setdefault(index, {})[name] = value
        changed: dict[str, tuple[Value, Value]] = {}
        for index, part in parts.items():
            changed.update(holders[index][0].apply(part))
        return changed


def _values_of(body: Any) -> dict[str, Value]:
    data = body.get("values", {}) if isinstance(body, dict) else {}
    return {
        name: value
        for name, value in data.items()
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    }
