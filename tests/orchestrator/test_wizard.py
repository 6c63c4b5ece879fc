"""The setup wizard, driven through injected input and output streams."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from orchestrator.errors import WizardAborted
from orchestrator.providers.anthropic import DEFAULT_MODEL as ANTHROPIC_DEFAULT
from orchestrator.settings import load_settings, read_env_file
from orchestrator.wizard import WizardAnswers, run_wizard, save_answers

KEY = "sk-ant-api03-wizardtestkey0123456789"


def wizard(lines: str, *, environ: dict[str, str] | None = None) -> tuple[WizardAnswers, str]:
    """Run the wizard on `lines`; return its answers and everything it printed."""
    out = io.StringIO()
    answers = run_wizard(stdin=io.StringIO(lines), stdout=out, environ=environ or {})
    return answers, out.getvalue()


def test_anthropic_with_defaults() -> None:
    """1, a key, Enter, Enter: Anthropic with the default model on port 8080."""
    answers, shown = wizard(f"1\n{KEY}\n\n\n")
    assert answers == WizardAnswers(provider="anthropic", api_key=KEY, model=None, port=8080)
    assert "1) Anthropic" in shown and "4) echo — offline" in shown
    assert f"Enter for {ANTHROPIC_DEFAULT}" in shown
    assert "input hidden" in shown


def test_model_and_port_can_be_chosen() -> None:
    """A typed model and port are kept."""
    answers, _ = wizard("2\nsk-openai-key-123\ngpt-test\n9000\n")
    assert answers == WizardAnswers(
        provider="openai", api_key="sk-openai-key-123", model="gpt-test", port=9000
    )


def test_echo_needs_no_key() -> None:
    """The offline echo provider asks no key."""
    answers, shown = wizard("4\n\n\n")
    assert answers == WizardAnswers(provider="echo")
    assert "API key" not in shown


def test_llamacpp_asks_its_url_and_avoids_its_port() -> None:
    """llama.cpp asks for the server URL (no key); our port defaults away from llama-server's."""
    answers, shown = wizard("3\n\n\n\n")
    assert answers.provider == "llamacpp"
    assert answers.api_key is None
    assert answers.llama_cpp_url == "http://127.0.0.1:8080"
    assert answers.port == 8081
    assert "API key" not in shown


def test_a_provider_already_chosen_is_not_asked() -> None:
    """With the provider given (the --provider flag), the wizard starts at the key."""
    out = io.StringIO()
    answers = run_wizard(
        stdin=io.StringIO("sk-openai-key-123\n\n\n"), stdout=out, environ={}, provider="openai"
    )
    assert answers == WizardAnswers(provider="openai", api_key="sk-openai-key-123")
    assert "Provider [1-4]" not in out.getvalue()


def test_bad_answers_are_asked_again() -> None:
    """An unknown provider, an empty key and a bad port each get a hint and the question again."""
    answers, shown = wizard(f"7\nanthropic\n\n{KEY}\n\nport\n70000\n8090\n")
    assert answers == WizardAnswers(provider="anthropic", api_key=KEY, model=None, port=8090)
    assert "Please type a number from 1 to 4." in shown
    assert "An API key is needed" in shown
    assert "Please give a port number" in shown


def test_key_from_the_environment_can_be_kept() -> None:
    """With the key already in the environment, Enter keeps it there (nothing to save)."""
    answers, shown = wizard("1\n\n\n\n", environ={"ANTHROPIC_API_KEY": KEY})
    assert answers.api_key is None
    assert "Enter to use ANTHROPIC_API_KEY" in shown


def test_key_is_read_through_the_secret_reader() -> None:
    """The key question goes to the hidden reader, never to the line reader."""
    asked: list[str] = []

    def read_secret(question: str) -> str:
        asked.append(question)
        return KEY

    answers = run_wizard(
        stdin=io.StringIO("1\n\n\n"), stdout=io.StringIO(), read_secret=read_secret, environ={}
    )
    assert answers.api_key == KEY
    assert asked == ["Anthropic API key (input hidden): "]


def test_end_of_input_aborts() -> None:
    """Running out of input mid-way raises WizardAborted."""
    with pytest.raises(WizardAborted):
        wizard("1\n")


def test_saved_file_is_private_and_loads(tmp_path: Path) -> None:
    """The answers are saved with mode 0600 and load back as settings."""
    path = tmp_path / "orchestrator.env"
    save_answers(WizardAnswers(provider="anthropic", api_key=KEY, port=9001), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = load_settings(environ={}, env_file=path)
    assert settings.provider == "anthropic"
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.reveal() == KEY
    assert settings.port == 9001


def test_saving_keeps_unrelated_entries(tmp_path: Path) -> None:
    """Entries the wizard does not ask about (like MAX_SPEND) survive; the old model does not."""
    path = tmp_path / "orchestrator.env"
    path.write_text("MAX_SPEND=5\nMODEL=old-model\nPROVIDER=openai\n")
    save_answers(WizardAnswers(provider="echo"), path)
    assert read_env_file(path) == {"MAX_SPEND": "5", "PROVIDER": "echo", "PORT": "8080"}


def test_public_surface() -> None:
    """The wizard module exports exactly its documented names."""
    from orchestrator import wizard as module

    assert sorted(module.__all__) == [
        "CHOICES",
        "DEFAULT_LLAMA_CPP_URL",
        "DEFAULT_PORT",
        "WizardAnswers",
        "run_wizard",
        "save_answers",
    ]
