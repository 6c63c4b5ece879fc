"""The first-run setup wizard: provider, key, model and port, saved to `orchestrator.env`.

    answers = run_wizard()                       # asks on the terminal
    save_answers(answers, Path("orchestrator.env"))

The key is read with `getpass` (not echoed). Every question re-asks until it gets a valid
answer; end of input raises `WizardAborted`. Reading and writing go through injectable
callables and streams, so tests can drive the wizard without a terminal.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from orchestrator.errors import WizardAborted
from orchestrator.settings import Provider, default_model, read_env_file, write_env_file

__all__ = [
    "CHOICES",
    "DEFAULT_LLAMA_CPP_URL",
    "DEFAULT_PORT",
    "WizardAnswers",
    "run_wizard",
    "save_answers",
]

CHOICES: tuple[tuple[Provider, str], ...] = (
    ("anthropic", "Anthropic"),
    ("openai", "OpenAI"),
    ("llamacpp", "llama.cpp — local, no key"),
    ("echo", "echo — offline"),
)
DEFAULT_PORT = 8080
DEFAULT_LLAMA_CPP_URL = "http://127.0.0.1:8080"  # llama-server's own default
_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


@dataclass(frozen=True, slots=True, kw_only=True)
class WizardAnswers:
    """What the wizard learned. `api_key` None means none needed or the environment's is used;
    `model` None means the provider's default."""

    provider: Provider
    api_key: str | None = None
    model: str | None = None
    port: int = DEFAULT_PORT
    llama_cpp_url: str | None = None

    def to_env(self) -> dict[str, str]:
        """The answers as `orchestrator.env` entries."""
        entries = {"PROVIDER": self.provider, "PORT": str(self.port)}
        if self.model is not None:
            entries["MODEL"] = self.model
        if self.api_key is not None:
            entries[_KEY_ENV[self.provider]] = self.api_key
        if self.llama_cpp_url is not None:
            entries["LLAMA_CPP_URL"] = self.llama_cpp_url
        return entries


class _Asker:
    def __init__(
        self,
        read_line: Callable[[str], str],
        read_secret: Callable[[str], str],
        out: TextIO,
    ) -> None:
        self.read_line, self.read_secret, self.out = read_line, read_secret, out

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def ask(self, question: str, *, secret: bool = False) -> str:
        try:
            answer = (self.read_secret if secret else self.read_line)(question)
        except (EOFError, KeyboardInterrupt):
            self.say()
            raise WizardAborted("setup cancelled; nothing was saved") from None
        return answer.strip()


def _stream_reader(stdin: TextIO, out: TextIO) -> Callable[[str], str]:
    def read(question: str) -> str:
        out.write(question)
        out.flush()
        line = stdin.readline()
        if not line:
            raise EOFError
        return line

    return read


def _ask_provider(asker: _Asker) -> Provider:
    asker.say("Which model provider should the orchestrator use?")
    for number, (_, label) in enumerate(CHOICES, start=1):
        asker.say(f"  {number}) {label}")
    while True:
        answer = asker.ask(f"Provider [1-{len(CHOICES)}]: ")
        if answer.isdigit() and 1 <= int(answer) <= len(CHOICES):
            return CHOICES[int(answer) - 1][0]
        names = {name: name for name, _ in CHOICES} | {"llama.cpp": "llamacpp"}
        if answer.lower() in names:
            return names[answer.lower()]  # type: ignore[return-value]
        asker.say(f"Please type a number from 1 to {len(CHOICES)}.")


def _ask_key(asker: _Asker, provider: Provider, environ: Mapping[str, str]) -> str | None:
    env_name = _KEY_ENV.get(provider)
    if env_name is None:
        return None
    label = dict(CHOICES)[provider]
    in_env = bool(environ.get(env_name))
    hint = f" (Enter to use {env_name} from the environment)" if in_env else ""
    while True:
        key = asker.ask(f"{label} API key{hint} (input hidden): ", secret=True)
        if key:
            return key
        if in_env:
            return None
        asker.say(f"An API key is needed for {label}; it is stored only in the settings file.")


def _ask_llama_url(asker: _Asker) -> str:
    while True:
        url = asker.ask(f"llama.cpp server URL (Enter for {DEFAULT_LLAMA_CPP_URL}): ")
        url = url or DEFAULT_LLAMA_CPP_URL
        if url.startswith(("http://", "https://")) and urlsplit(url).hostname:
            return url.rstrip("/")
        asker.say("Please give an http:// or https:// URL, like http://127.0.0.1:8080.")


def _ask_port(asker: _Asker, taken: int | None) -> int:
    default = DEFAULT_PORT if taken != DEFAULT_PORT else DEFAULT_PORT + 1
    while True:
        answer = asker.ask(f"Port for the web API (Enter for {default}): ")
        if not answer:
            port = default
        elif answer.isdigit() and 1 <= int(answer) <= 65535:
            port = int(answer)
        else:
            asker.say("Please give a port number from 1 to 65535.")
            continue
        if port == taken:
            asker.say(f"Port {port} is the llama.cpp server's; choose another.")
            continue
        return port


def run_wizard(
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    read_secret: Callable[[str], str] | None = None,
    environ: Mapping[str, str] | None = None,
    provider: Provider | None = None,
) -> WizardAnswers:
    """Ask for provider, key (hidden), model and port; return the answers (saves nothing).

    A `provider` already chosen (the `--provider` flag) is not asked again.

    With no `stdin` it reads the terminal (`input`, and `getpass` for the key); with a `stdin`
    stream it reads lines from it (the key too, unless `read_secret` is given).
    Raises `WizardAborted` at end of input or on Ctrl-C.
    """
    out = stdout if stdout is not None else sys.stdout
    read_line = input if stdin is None else _stream_reader(stdin, out)
    if read_secret is None:
        read_secret = getpass.getpass if stdin is None else read_line
    asker = _Asker(read_line, read_secret, out)
    env = os.environ if environ is None else environ

    asker.say("prompt-orchestrator setup — answers are saved to orchestrator.env (mode 0600).")
    if provider is None:
        provider = _ask_provider(asker)
    else:
        asker.say(f"Provider: {dict(CHOICES)[provider]} (from --provider)")
    api_key = _ask_key(asker, provider, env)
    llama_cpp_url = _ask_llama_url(asker) if provider == "llamacpp" else None
    fallback = default_model(provider)
    model = asker.ask(f"Model (Enter for {fallback}): ") or None
    taken = None
    if llama_cpp_url is not None:
        parts = urlsplit(llama_cpp_url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1"):
            taken = parts.port or (443 if parts.scheme == "https" else 80)
    port = _ask_port(asker, taken)
    return WizardAnswers(
        provider=provider, api_key=api_key, model=model, port=port, llama_cpp_url=llama_cpp_url
    )


def save_answers(answers: WizardAnswers, path: Path) -> None:
    """Merge `answers` into the env file at `path` (entries it does not touch are kept),
    written atomically with mode 0600."""
    entries = read_env_file(path)
    entries.pop("MODEL", None)  # a model name belongs to the provider it was chosen for
    entries.update(answers.to_env())
    write_env_file(path, entries)
