"""PipelineConfig and LiveConfig: defaults, validation, live changes."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
from dataclasses import dataclass

import pytest

from orchestrator.config import (
    CacheScope,
    Change,
    LiveConfig,
    PipelineConfig,
    Tunables,
    bounds_of,
    check_bounds,
    tunable,
)


def test_default_queue_capacities_match_the_spec() -> None:
    """Stage queues default to 512 (RAG), 512 (Assemble), 1024 (Inference), 256 after it."""
    t = PipelineConfig().tunables
    assert (t.rag_queue_capacity, t.assemble_queue_capacity, t.inference_queue_capacity) == (
        512,
        512,
        1024,
    )
    assert t.postprocess_queue_capacity == t.stream_queue_capacity == 256


def test_breaker_defaults_match_the_spec() -> None:
    """Breakers open after 5 failures and stay open 60 s; probes close at 80%."""
    config = PipelineConfig()
    assert config.tunables.breaker_failure_threshold == 5
    assert config.tunables.breaker_open_s == 60.0
    assert config.breaker_close_success_ratio == 0.8


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inference_concurrency", 0),
        ("rag_queue_capacity", -1),
        ("shed_threshold", 1.5),
        ("breaker_open_s", 0),
        ("retry_base_delay_s", -0.1),
        ("rate_limit_rps", 0),
        ("cache_ttl_s", float("nan")),
    ],
)
def test_invalid_tunable_is_refused_naming_it(field: str, value: object) -> None:
    """A bad tunable raises ValueError that names the parameter."""
    with pytest.raises(ValueError, match=field):
        Tunables(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inference_shards", 0),
        ("session_budget_usd", -1.0),
        ("budget_warn_fraction", 2.0),
        ("prompt_template", "no placeholder"),
        ("fallback_order", ("a", "a")),
    ],
)
def test_invalid_pipeline_config_is_refused_naming_it(field: str, value: object) -> None:
    """A bad static setting raises ValueError that names the parameter."""
    with pytest.raises(ValueError, match=field):
        PipelineConfig(**{field: value})


def test_cache_scope_accepts_its_string_value() -> None:
    """A cache scope given as a string becomes the enum member."""
    assert PipelineConfig(cache_scope="session").cache_scope is CacheScope.SESSION  # type: ignore[arg-type]


def test_set_returns_only_what_changed() -> None:
    """`set` reports {name: (old, new)} for values that actually changed."""
    live = LiveConfig()
    changed = live.set(inference_concurrency=8, breaker_open_s=60.0)
    assert changed == {"inference_concurrency": (64, 8)}
    assert live.current.inference_concurrency == 8
    assert live.version == 1


def test_set_with_a_bad_value_changes_nothing() -> None:
    """An invalid change raises and leaves every value as it was."""
    live = LiveConfig()
    with pytest.raises(ValueError, match="shed_threshold"):
        live.set(inference_concurrency=8, shed_threshold=0)
    assert live.current == Tunables()
    assert live.version == 0


def test_set_with_an_unknown_name_is_refused() -> None:
    """A typo in a tunable's name is an error, not a silent no-op."""
    with pytest.raises(ValueError, match="inference_concurency"):
        LiveConfig().set(inference_concurency=3)


def test_listeners_hear_each_effective_change() -> None:
    """`on_change` listeners are called with the changes, and not for no-op sets."""
    live = LiveConfig()
    heard: list[dict[str, tuple[object, object]]] = []
    live.on_change(heard.append)
    live.set(cache_ttl_s=10.0)
    live.set(cache_ttl_s=10.0)
    live.remove_listener(heard.append)
    live.set(cache_ttl_s=20.0)
    assert heard == [{"cache_ttl_s": (300.0, 10.0)}]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit_rps", 1e-300),
        ("retry_base_delay_s", 1e308),
        ("inference_concurrency", 10**9),
        ("breaker_open_s", float("inf")),
        ("retry_max_attempts", 2.5),
        ("inference_concurrency", True),
    ],
)
def test_a_value_outside_its_bounds_is_refused(field: str, value: object) -> None:
    """`set` refuses a value outside the tunable's bounds, naming it, and applies nothing."""
    live = LiveConfig()
    with pytest.raises(ValueError, match=field):
        live.set(**{field: value})
    assert live.current == Tunables()
    assert live.version == 0


def test_unlimited_rate_stays_a_choice_and_a_number_can_replace_it() -> None:
    """None (unlimited) is a valid rate limit, and a controller can set a number in its place."""
    live = LiveConfig(Tunables(rate_limit_rps=None))
    assert live.set(rate_limit_rps=50.0) == {"rate_limit_rps": (None, 50.0)}
    assert live.set(rate_limit_rps=None) == {"rate_limit_rps": (50.0, None)}


def test_every_tunable_has_bounds_that_hold_its_default() -> None:
    """Each `Tunables` field declares bounds, and its default lies within them."""
    bounds = bounds_of(Tunables)
    assert set(bounds) == {f.name for f in dataclasses.fields(Tunables)}
    for name, b in bounds.items():
        b.check(name, getattr(Tunables(), name))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Knobs:
    workers: int = tunable(2, low=1, high=8, unit="workers", integer=True)
    lease_s: float = tunable(30.0, low=1.0, high=600.0, unit="s")

    def __post_init__(self) -> None:
        check_bounds(self)


def test_live_config_holds_any_tunable_dataclass() -> None:
    """A LiveConfig over another frozen dataclass validates by that type's bounds."""
    live = LiveConfig(_Knobs())
    assert live.set(workers=4) == {"workers": (2, 4)}
    assert live.current.workers == 4
    with pytest.raises(ValueError, match="workers"):
        live.set(workers=9)
    with pytest.raises(ValueError, match="unknown tunable"):
        live.set(inference_concurrency=3)
    assert set(live.bounds()) == {"workers", "lease_s"}


def test_sets_from_many_threads_lose_no_change() -> None:
    """Concurrent `set`s from eight threads each apply atomically: the version counts them all."""
    live = LiveConfig(_Knobs())
    heard: list[Change] = []
    live.on_change(heard.append)
    barrier = threading.Barrier(8)

    def flip(n: int) -> None:
        barrier.wait()
        for i in range(200):
            live.set(workers=1 + (n + i) % 8, lease_s=float(1 + i))

    threads = [threading.Thread(target=flip, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert live.version == len(heard)
    assert 0 < live.version <= 1600
    current, version = live.snapshot()
    assert version == live.version and current == live.current


def test_update_with_a_stale_version_is_refused() -> None:
    """`update(..., expected_version=n)` applies only if the version is still n."""
    live = LiveConfig()
    live.set(cache_ttl_s=10.0)
    with pytest.raises(ValueError, match="version"):
        live.update({"cache_ttl_s": 20.0}, expected_version=0)
    assert live.update({"cache_ttl_s": 20.0}, expected_version=1) == {"cache_ttl_s": (10.0, 20.0)}


async def test_a_listener_registered_on_a_loop_runs_on_that_loop() -> None:
    """A `set` from another thread calls a loop's listener on the loop's own thread."""
    live = LiveConfig()
    loop_thread = threading.get_ident()
    heard: asyncio.Queue[tuple[int, Change]] = asyncio.Queue()
    live.on_change(lambda changed: heard.put_nowait((threading.get_ident(), changed)))
    setter = threading.Thread(target=live.set, kwargs={"cache_ttl_s": 10.0})
    setter.start()
    setter.join()
    thread_id, changed = await asyncio.wait_for(heard.get(), timeout=5)
    assert thread_id == loop_thread
    assert changed == {"cache_ttl_s": (300.0, 10.0)}


async def test_a_set_on_the_loop_calls_its_listeners_at_once() -> None:
    """A `set` on the listener's own loop calls it before `set` returns."""
    live = LiveConfig()
    heard: list[Change] = []
    live.on_change(heard.append)
    live.set(cache_ttl_s=10.0)
    assert heard == [{"cache_ttl_s": (300.0, 10.0)}]


def test_a_listener_registered_off_any_loop_runs_in_the_setting_thread() -> None:
    """Without a loop at registration, the listener runs synchronously in the caller of `set`."""
    live = LiveConfig()
    seen: list[int] = []
    live.on_change(lambda _changed: seen.append(threading.get_ident()))
    setter = threading.Thread(target=live.set, kwargs={"cache_ttl_s": 10.0})
    setter.start()
    setter.join()
    assert seen == [setter.ident]


def test_importing_the_config_loads_no_pipeline() -> None:
    """`import orchestrator.config` loads only itself and the error tree (a leaf): no pipeline,
    stage or provider module."""
    code = (
        "import sys, orchestrator.config; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('orchestrator'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "orchestrator,orchestrator.config,orchestrator.errors"
