"""Server settings: sources and their order, the env file, validation, the pipeline built."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fakes import Fail, FakeAnthropic

from orchestrator import (
    AnthropicWorker,
    EchoWorker,
    InferenceRequest,
    LlamaCppWorker,
    OpenAIWorker,
)
from orchestrator.assembly import build_pipeline
from orchestrator.settings import (
    ServerSettings,
    SettingsError,
    load_settings,
    read_env_file,
    write_env_file,
)


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    """Each setting comes from the first source that has it."""
    env_file = tmp_path / "orchestrator.env"
    write_env_file(env_file, {"PROVIDER": "echo", "PORT": "9001", "MODEL": "from-file"})
    settings = load_settings(
        {"port": 9003},
        environ={"PORT": "9002", "MODEL": "from-env"},
        env_file=env_file,
    )
    assert settings.port == 9003  # flag
    assert settings.model == "from-env"  # environment over file
    assert settings.provider == "echo"  # file
    assert settings.host == "127.0.0.1"  # default


def test_no_provider_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    """Without a provider from any source the error says how to give one."""
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={}, env_file=tmp_path / "absent.env")
    assert caught.value.names == ("PROVIDER",) and "--provider" in str(caught.value)


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("openai", "OPENAI_API_KEY"),
        ("llamacpp", "LLAMA_CPP_URL"),
    ],
)
def test_a_provider_without_its_key_names_what_is_missing(
    tmp_path: Path, provider: str, missing: str
) -> None:
    """Each provider's required setting is named when absent."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"provider": provider}, environ={}, env_file=tmp_path / "absent.env")
    assert caught.value.names == (missing,) and missing in str(caught.value)


def test_a_malformed_number_names_the_setting_and_source(tmp_path: Path) -> None:
    """PORT=abc is refused naming PORT and where it came from."""
    with pytest.raises(SettingsError, match="PORT in the environment"):
        load_settings({"provider": "echo"}, environ={"PORT": "abc"}, env_file=None)


def test_env_file_round_trips_with_owner_only_mode(tmp_path: Path) -> None:
    """write_env_file stores KEY=VALUE lines readable only by the owner; read gives them back."""
    path = tmp_path / "orchestrator.env"
    entries = {"PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-x=y"}
    write_env_file(path, entries)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == entries
    assert "ANTHROPIC_API_KEY=sk-ant-x=y\n" in path.read_text()


def test_env_file_reading_skips_comments_and_names_bad_lines(tmp_path: Path) -> None:
    """Comments and blank lines are skipped, quotes around a value removed; a line without '='
    is named by file and line."""
    path = tmp_path / "orchestrator.env"
    path.write_text('# settings\n\nPROVIDER=echo\nMODEL="m 1"\n')
    assert read_env_file(path) == {"PROVIDER": "echo", "MODEL": "m 1"}
    path.write_text("# settings\n\nPROVIDER=echo\nnonsense\n")
    with pytest.raises(SettingsError, match=r"orchestrator.env:4"):
        read_env_file(path)


def test_env_file_refuses_multi_line_values(tmp_path: Path) -> None:
    """A value with a newline cannot be written (it would inject another setting)."""
    with pytest.raises(ValueError, match="API_KEY"):
        write_env_file(tmp_path / "e.env", {"API_KEY": "a\nPROVIDER=echo"})


def test_to_env_round_trips_through_the_file(tmp_path: Path) -> None:
    """Settings written with to_env() load back equal."""
    settings = ServerSettings(
        provider="anthropic", anthropic_api_key="sk-ant-1", model="claude-x", port=9100
    )
    path = tmp_path / "orchestrator.env"
    write_env_file(path, settings.to_env())
    assert load_settings(environ={}, env_file=path) == settings


def test_invalid_values_name_the_setting() -> None:
    """Bad provider, port, URL or spend are refused naming the setting."""
    cases = [
        ({"provider": "gemini"}, "PROVIDER"),
        ({"provider": "echo", "port": 70000}, "PORT"),
        ({"provider": "llamacpp", "llama_cpp_url": "localhost:8081"}, "LLAMA_CPP_URL"),
        ({"provider": "echo", "max_spend_usd": -1.0}, "MAX_SPEND"),
    ]
    for kwargs, name in cases:
        with pytest.raises(SettingsError) as caught:
            ServerSettings(**kwargs)  # type: ignore[arg-type]
        assert caught.value.names == (name,)


async def test_build_pipeline_creates_the_named_worker() -> None:
    """build_pipeline makes the worker the provider names, with the model and budget given."""
    cases = [
        (ServerSettings(provider="echo"), EchoWorker, "echo"),
        (
            ServerSettings(provider="anthropic", anthropic_api_key="k", model="m1"),
            AnthropicWorker,
            "m1",
        ),
        (
            ServerSettings(provider="openai", openai_base_url="http://127.0.0.1:1/v1"),
            OpenAIWorker,
            None,
        ),
        (
            ServerSettings(provider="llamacpp", llama_cpp_url="http://127.0.0.1:1"),
            LlamaCppWorker,
            None,
        ),
    ]
    for settings, kind, model in cases:
        pipeline = build_pipeline(settings)
        worker = pipeline.routes[0].worker
        assert isinstance(worker, kind)
        if model is not None:
            assert worker.default_model == model
        await worker.aclose()
    budgeted = build_pipeline(ServerSettings(provider="echo", max_spend_usd=5.0))
    assert budgeted.config.global_budget_usd == 5.0


def test_fallback_providers_come_from_the_environment_and_round_trip(tmp_path: Path) -> None:
    """FALLBACK lists the providers to try after PROVIDER; to_env writes it back."""
    settings = load_settings(
        environ={"PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-1",
                 "FALLBACK": "llamacpp, echo", "LLAMA_CPP_URL": "http://127.0.0.1:1"},
        env_file=None,
    )
    assert settings.fallback == ("llamacpp", "echo")
    path = tmp_path / "orchestrator.env"
    write_env_file(path, settings.to_env())
    assert load_settings(environ={}, env_file=path) == settings


def test_a_bad_fallback_names_the_setting() -> None:
    """An unknown, repeated or primary provider in FALLBACK is refused naming FALLBACK; a
    fallback without its credentials names the missing key."""
    for fallback in ("gemini", "echo,echo", "anthropic"):
        with pytest.raises(SettingsError) as caught:
            ServerSettings(provider="anthropic", anthropic_api_key="k", fallback=fallback)
        assert caught.value.names == ("FALLBACK",)
    with pytest.raises(SettingsError) as caught:
        ServerSettings(provider="echo", fallback="anthropic")
    assert caught.value.names == ("ANTHROPIC_API_KEY",)


async def test_a_dead_provider_falls_back_to_the_next() -> None:
    """With the primary upstream failing, the pipeline answers from the fallback, in order
    (the configured order: the learned router off)."""
    async with FakeAnthropic() as upstream:
        upstream.fail_always(Fail(status=503))
        settings = ServerSettings(provider="anthropic", anthropic_api_key="sk-ant-test",
                                  anthropic_base_url=upstream.url, fallback=("echo",),
                                  learned_routing=False)
        async with build_pipeline(settings) as pipeline:
            assert [route.worker.name for route in pipeline.routes] == ["anthropic", "echo"]
            response = await pipeline.infer(InferenceRequest("still answered"))
        assert response.provider == "echo"
        assert response.text.endswith("still answered")
        assert upstream.request_count >= 1


def test_a_budget_over_an_unpriced_model_is_refused_saying_how_to_price_it(
    tmp_path: Path,
) -> None:
    """MAX_SPEND with a model the table cannot price is an error naming --prices/PRICES_FILE."""
    with pytest.raises(SettingsError, match=r"--prices FILE or PRICES_FILE") as caught:
        ServerSettings(
            provider="anthropic", anthropic_api_key="k", model="mystery-1", max_spend_usd=5
        )
    assert "MAX_SPEND" in caught.value.names


def test_a_prices_file_prices_the_model_and_the_budget_starts(tmp_path: Path) -> None:
    """A price given in PRICES_FILE makes the same budget acceptable, and bills the model."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."mystery-1"]\ninput_per_mtok_usd = 1\noutput_per_mtok_usd = 2\n')
    settings = load_settings(
        {"provider": "anthropic", "model": "mystery-1", "max_spend_usd": 5},
        environ={"ANTHROPIC_API_KEY": "k", "PRICES_FILE": str(prices)},
        env_file=None,
    )
    pipeline = build_pipeline(settings)
    assert pipeline.prices.price("mystery-1") is not None


def test_the_default_models_start_with_a_budget() -> None:
    """Every provider's default model can run under MAX_SPEND (they are all priced)."""
    for provider, extra in (
        ("anthropic", {"anthropic_api_key": "k"}),
        ("openai", {"openai_api_key": "k"}),
        ("llamacpp", {"llama_cpp_url": "http://127.0.0.1:1"}),
        ("echo", {}),
    ):
        ServerSettings(provider=provider, max_spend_usd=1.0, **extra)  # type: ignore[arg-type]


def test_echo_takes_a_budget_whatever_its_model() -> None:
    """The echo provider costs nothing, so any model name is fine under a budget."""
    ServerSettings(provider="echo", model="claude-opus-5-5-unknown-xyz", max_spend_usd=1.0)


async def test_log_prompts_is_off_unless_set_and_reaches_the_pipeline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`LOG_PROMPTS` (default off) is an on/off setting; on, the pipeline built from it logs
    each prompt and answer on `orchestrator.prompts`."""
    import logging

    plain = {"PROVIDER": "echo", "SEMANTIC_DEDUP": "off", "LEARNED_ROUTING": "off"}
    off = load_settings(environ=plain, env_file=None)
    on = load_settings(environ={**plain, "LOG_PROMPTS": "on"}, env_file=None)
    assert (off.log_prompts, on.log_prompts) == (False, True)
    with pytest.raises(SettingsError, match="LOG_PROMPTS"):
        load_settings(environ={"PROVIDER": "echo", "LOG_PROMPTS": "maybe"}, env_file=None)
    for settings, expected in ((off, 0), (on, 1)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            async with build_pipeline(settings) as pipeline:
                await pipeline.infer(InferenceRequest("narwhal question"))
        lines = [r for r in caplog.records if "narwhal" in r.getMessage()]
        assert len(lines) == expected
        assert all(r.name == "orchestrator.prompts" for r in lines)
