"""What requests cost: a per-model price table, and session/global budgets.

Budgets warn (log + counter) once spend reaches `warn_fraction` of a limit and refuse with
`BudgetExceeded` once a request would take spend past it. Only answered calls are billed:
a failed attempt that was retried or fell back is never charged.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import BudgetExceeded
from orchestrator.request import Usage

__all__ = ["DEFAULT_PRICE_TABLE", "Budget", "ModelPrice", "PriceTable"]

log = logging.getLogger(__name__)

DEFAULT_PRICE_TABLE = Path(__file__).with_name("prices.toml")


# Anthropic's multipliers of the input price: reading the prompt cache costs a tenth, writing
# it (the five-minute cache) a quarter more. The defaults when a table gives no cache prices.
CACHE_READ_FACTOR = 0.1
CACHE_WRITE_FACTOR = 1.25


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """USD per million tokens of each kind: fresh input, output, prompt-cache reads and writes
    (None: `CACHE_READ_FACTOR` / `CACHE_WRITE_FACTOR` times the input price)."""

    input_per_mtok_usd: float
    output_per_mtok_usd: float
    cache_read_per_mtok_usd: float | None = None
    cache_write_per_mtok_usd: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "input_per_mtok_usd",
            "output_per_mtok_usd",
            "cache_read_per_mtok_usd",
            "cache_write_per_mtok_usd",
        ):
            value = getattr(self, name)
            if value is None and name.startswith("cache_"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.cache_read_per_mtok_usd is None:
            read = self.input_per_mtok_usd * CACHE_READ_FACTOR
            object.__setattr__(self, "cache_read_per_mtok_usd", read)
        if self.cache_write_per_mtok_usd is None:
            write = self.input_per_mtok_usd * CACHE_WRITE_FACTOR
            object.__setattr__(self, "cache_write_per_mtok_usd", write)

    def cost_usd(self, usage: Usage) -> float:
        """What `usage` costs: every kind of token it reports, at its own price."""
        assert self.cache_read_per_mtok_usd is not None
        assert self.cache_write_per_mtok_usd is not None
        return (
            usage.input_tokens * self.input_per_mtok_usd
            + usage.output_tokens * self.output_per_mtok_usd
            + usage.cache_read_input_tokens * self.cache_read_per_mtok_usd
            + usage.cache_creation_input_tokens * self.cache_write_per_mtok_usd
        ) / 1_000_000


class PriceTable:
    """Model name → `ModelPrice`. Unknown models cost 0, are counted in `unpriced` and logged
    as a warning (once per model): a budget cannot see what they spend.

    A model not found by its exact name is looked up by the longest table name it starts with,
    so dated variants (`claude-sonnet-4-5-20250929`) find their family's price.
    """

    __slots__ = ("_prices", "_resolved", "unpriced")

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        self._resolved: dict[str, ModelPrice | None] = {}
        self.unpriced: dict[str, int] = {}

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The shipped table with `path`'s entries merged over it (None: the shipped table).

        A table is TOML: `[models."<name>"]` with `input_per_mtok_usd`, `output_per_mtok_usd`
        and optionally `cache_read_per_mtok_usd`, `cache_write_per_mtok_usd`. Raises
        ValueError naming the file and the model on a malformed entry, OSError if unreadable.
        """
        prices = _read_table(DEFAULT_PRICE_TABLE)
        if path is not None and Path(path) != DEFAULT_PRICE_TABLE:
            prices.update(_read_table(Path(path)))
        return cls(prices)

    def price(self, model: str) -> ModelPrice | None:
        if model in self._resolved:
            return self._resolved[model]
        found = self._prices.get(model)
        if found is None:
            prefixes = [name for name in self._prices if model.startswith(name)]
            if prefixes:
                found = self._prices[max(prefixes, key=len)]
        self._resolved[model] = found
        return found

    def cost_usd(self, model: str, usage: Usage) -> float:
        """What `usage` of `model` costs (0.0, counted and warned about, when unpriced)."""
        price = self.price(model)
        if price is None:
            seen = self.unpriced.get(model, 0)
            if not seen:
                log.warning(
                    "model %r has no price: its cost counts as $0 and budgets cannot limit it; "
                    "give its price with --prices FILE or PRICES_FILE",
                    model,
                )
            self.unpriced[model] = seen + 1
            return 0.0
        return price.cost_usd(usage)


def _read_table(path: Path) -> dict[str, ModelPrice]:
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict):
        raise ValueError(f"{path}: expected a [models.<name>] table")
    prices = {}
    for name, entry in models.items():
        try:
            prices[name] = ModelPrice(**entry)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: model {name!r}: {exc}") from exc
    return prices


class Budget:
    """Spend limits in USD: one per session (each session its own) and one global.

    `check(session_id, estimate_usd)` before a call; `charge(session_id, cost_usd)` after an
    answered one. Warnings count in `warnings` and log once per scope as 80% is crossed.
    """

    __slots__ = (
        "_session_spent",
        "_warned",
        "global_limit_usd",
        "global_spent_usd",
        "refusals",
        "session_limit_usd",
        "warn_fraction",
        "warnings",
    )

    def __init__(
        self,
        *,
        session_limit_usd: float | None = None,
        global_limit_usd: float | None = None,
        warn_fraction: float = 0.8,
    ) -> None:
        for name, value in (
            ("session_limit_usd", session_limit_usd),
            ("global_limit_usd", global_limit_usd),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0 < warn_fraction <= 1:
            raise ValueError(f"warn_fraction must be in (0, 1], got {warn_fraction!r}")
        self.session_limit_usd = session_limit_usd
        self.global_limit_usd = global_limit_usd
        self.warn_fraction = warn_fraction
        self.global_spent_usd = 0.0
        self._session_spent: dict[str, float] = {}
        self._warned: set[str] = set()
        self.warnings = 0
        self.refusals = 0

    def session_spent_usd(self, session_id: str) -> float:
        return self._session_spent.get(session_id, 0.0)

    def check(self, session_id: str | None, estimate_usd: float = 0.0) -> None:
        """Raise `BudgetExceeded` if spending `estimate_usd` more would cross a limit."""
        limit = self.global_limit_usd
        if limit is not None and self.global_spent_usd + estimate_usd >= limit:
            self.refusals += 1
            raise BudgetExceeded("global", self.global_spent_usd, limit)
        limit = self.session_limit_usd
        if limit is not None and session_id is not None:
            spent = self._session_spent.get(session_id, 0.0)
            if spent + estimate_usd >= limit:
                self.refusals += 1
                raise BudgetExceeded(f"session:{session_id}", spent, limit)

    def charge(self, session_id: str | None, cost_usd: float) -> None:
        """Record what an answered call cost."""
        if cost_usd <= 0:
            return
        self.global_spent_usd += cost_usd
        if self.global_limit_usd is not None:
            self._maybe_warn("global", self.global_spent_usd, self.global_limit_usd)
        if session_id is not None:
            spent = self._session_spent.get(session_id, 0.0) + cost_usd
            self._session_spent[session_id] = spent
            if self.session_limit_usd is not None:
                self._maybe_warn(f"session:{session_id}", spent, self.session_limit_usd)

    def _maybe_warn(self, scope: str, spent: float, limit: float) -> None:
        if spent >= self.warn_fraction * limit and scope not in self._warned:
            self._warned.add(scope)
            self.warnings += 1
            log.warning(
                "budget %s at %.0f%%: spent $%.4f of $%.4f",
                scope,
                100 * spent / limit,
                spent,
                limit,
            )
