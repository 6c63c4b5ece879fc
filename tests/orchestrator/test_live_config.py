"""PipelineConfig and LiveConfig: defaults, validation, live changes."""

from __future__ import annotations

import pytest

from orchestrator.config import CacheScope, LiveConfig, PipelineConfig, Tunables


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
