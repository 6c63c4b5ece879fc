"""`orchestrator doctor`: the real command, run against fake upstreams on 127.0.0.1, says per
check ok/warn/fail with what to fix, exits 1 only on a fail, and never prints a key."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import Fail, FakeAnthropic, FakeLlamaCpp, FakeOpenAI
from served import free_port

from orchestrator.settings import ENV_NAMES

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-ant-DOCTORCANARY-5e1c9a7b3d"
OPENAI_KEY = "sk-DOCTORCANARY-openai-2f8a6c"
_PROXIES = {"http_proxy", "https_proxy", "all_proxy"}


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str

    def line(self, start: str) -> str:
        """The one output line that starts with `start` (fails the test if there is none)."""
        found = [line for line in self.out.splitlines() if line.startswith(start)]
        assert len(found) == 1, f"no single line starting {start!r} in:\n{self.out}{self.err}"
        return found[0]

    def shows_no_key(self) -> bool:
        text = (self.out + self.err).lower()
        return all(k.lower() not in text for k in (KEY, OPENAI_KEY))


def write_env(path: Path, entries: Mapping[str, str], *, mode: int = 0o600) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in entries.items()), encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port a program that is not an orchestrator listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def doctor(cwd: Path, *args: str) -> Run:
    """`orchestrator doctor ARGS` in `cwd`, with no orchestrator setting in its environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in set(ENV_NAMES.values()) and k.lower() not in _PROXIES
    }
    env["PYTHONPATH"] = str(REPO)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.cli", "doctor", "--timeout-s", "10", *args,
        cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


def anthropic_env(tmp_path: Path, url: str, **extra: str) -> Path:
    entries = {"PROVIDER": "anthropic", "ANTHROPIC_API_KEY": KEY,
               "ANTHROPIC_UPSTREAM_URL": url, "PORT": str(free_port()), **extra}
    return write_env(tmp_path / "orchestrator.env", entries)


async def test_a_good_setup_is_all_ok_and_exits_0(
    tmp_path: Path, anthropic: FakeAnthropic
) -> None:
    """With a private env file, a key the upstream accepts, a priced model and a free port,
    every line is ok, the exit status 0, and the key went to the configured upstream only."""
    anthropic_env(tmp_path, anthropic.url)
    run = await doctor(tmp_path)
    assert run.code == 0, run.out + run.err
    assert run.line("ok    env file").endswith("(mode 0600); holds ANTHROPIC_API_KEY")
    assert run.line("ok    provider") == (
        f"ok    provider  anthropic: key accepted by {anthropic.url}/v1/models"
    )
    assert run.line("ok    prices").startswith(
        "ok    prices    claude-sonnet-5-5 (anthropic) costs $"
    )
    assert "is free" in run.line("ok    port")
    assert not [line for line in run.out.splitlines() if line.startswith(("warn", "fail"))]
    [probe] = anthropic.requests
    assert (probe.method, probe.path, probe.headers["x-api-key"]) == ("GET", "/v1/models", KEY)
    assert run.shows_no_key()


async def test_a_refused_key_fails_without_showing_the_key(
    tmp_path: Path, anthropic: FakeAnthropic
) -> None:
    """A 401 is "key refused by provider" and exit 1, even when the upstream's error body
    echoes the key (in another case): the body is never shown."""
    anthropic.fail_always(Fail(status=401, message=f"invalid x-api-key {KEY.upper()}"))
    anthropic_env(tmp_path, anthropic.url)
    run = await doctor(tmp_path)
    assert run.code == 1
    assert run.line("fail  provider") == (
        f"fail  provider  anthropic: key refused by provider (HTTP 401 from "
        f"{anthropic.url}/v1/models): check ANTHROPIC_API_KEY"
    )
    assert run.shows_no_key()


async def test_a_forbidden_key_fails_too(tmp_path: Path, anthropic: FakeAnthropic) -> None:
    """A 403 is refused like a 401."""
    anthropic.fail_always(Fail(status=403))
    anthropic_env(tmp_path, anthropic.url)
    run = await doctor(tmp_path)
    assert run.code == 1
    assert "key refused by provider (HTTP 403" in run.line("fail  provider")


async def test_a_closed_port_is_an_unreachable_upstream(tmp_path: Path) -> None:
    """Nothing listening at the upstream URL: "upstream unreachable at URL" and exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    anthropic_env(tmp_path, url)
    run = await doctor(tmp_path)
    assert run.code == 1
    line = run.line("fail  provider")
    assert line.startswith(f"fail  provider  anthropic: upstream unreachable at {url}/v1/models (")
    assert line.endswith("check ANTHROPIC_UPSTREAM_URL and the network")
    assert run.shows_no_key()


async def test_an_openai_compatible_upstream_is_asked_for_its_models(tmp_path: Path) -> None:
    """OpenAI: `GET <base URL>/models` with the key as bearer token, at the configured URL."""
    async with FakeOpenAI() as fake:
        write_env(tmp_path / "orchestrator.env", {
            "PROVIDER": "openai", "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_UPSTREAM_URL": fake.api_url, "PORT": str(free_port()),
        })
        run = await doctor(tmp_path)
    assert run.code == 0, run.out
    assert run.line("ok    provider") == (
        f"ok    provider  openai: key accepted by {fake.api_url}/models"
    )
    [probe] = fake.requests
    assert (probe.path, probe.headers["authorization"]) == ("/v1/models", f"Bearer {OPENAI_KEY}")
    assert run.shows_no_key()


async def test_a_fallback_provider_is_checked_too(tmp_path: Path) -> None:
    """Every provider in the chain gets its check: a llama.cpp fallback's `/health` is asked."""
    async with FakeLlamaCpp() as fake:
        run = await doctor(tmp_path, "--provider", "echo", "--fallback", "llamacpp",
                           "--port", "0")
        assert run.code == 1  # no LLAMA_CPP_URL: a settings fail naming it
        assert "LLAMA_CPP_URL" in run.line("fail  settings")
        write_env(tmp_path / "orchestrator.env", {"LLAMA_CPP_URL": fake.url})
        run = await doctor(tmp_path, "--provider", "echo", "--fallback", "llamacpp",
                           "--port", "0")
    assert run.code == 0, run.out
    assert run.line("ok    provider  echo") == "ok    provider  echo: offline, nothing to check"
    assert run.line("ok    provider  llamacpp") == (
        f"ok    provider  llamacpp: {fake.url}/health answers (HTTP 200)"
    )
    assert [r.path for r in fake.requests] == ["/health"]


async def test_an_env_file_others_can_read_is_a_warning_with_the_fix(tmp_path: Path) -> None:
    """Mode 0644: warn with `chmod 600 PATH`; a warning alone still exits 0."""
    path = write_env(tmp_path / "orchestrator.env",
                     {"PROVIDER": "echo", "API_KEY": KEY, "PORT": "0"}, mode=0o644)
    run = await doctor(tmp_path)
    assert run.code == 0
    assert run.line("warn  env file") == (
        f"warn  env file  {path.name} is readable by others (mode 0644); holds API_KEY: "
        f"chmod 600 {path.name}"
    )
    assert run.shows_no_key()


async def test_the_env_file_flag_is_the_one_checked(tmp_path: Path) -> None:
    """`--env-file PATH` is the file checked (and read), as for `serve`."""
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    path = write_env(elsewhere / "my.env", {"PROVIDER": "echo", "PORT": "0"}, mode=0o640)
    run = await doctor(tmp_path, "--env-file", str(path))
    assert run.line("warn  env file").endswith(f"chmod 600 {path}")
    assert "provider echo" in run.line("ok    settings")


async def test_a_malformed_env_file_line_is_named_but_not_shown(tmp_path: Path) -> None:
    """A line that is not KEY=VALUE fails by its number; its text (maybe a key) is not shown."""
    path = tmp_path / "orchestrator.env"
    path.write_text(f"PROVIDER=echo\nANTHROPIC API KEY {KEY}\n", encoding="utf-8")
    path.chmod(0o600)
    run = await doctor(tmp_path)
    assert run.code == 1
    assert run.line("fail  env file").startswith(
        "fail  env file  orchestrator.env:2 is not KEY=VALUE"
    )
    assert run.shows_no_key()


async def test_no_settings_fail_and_say_what_to_do(tmp_path: Path) -> None:
    """Nothing configured: the settings fail names the way out (flag, variable, wizard)."""
    run = await doctor(tmp_path)
    assert run.code == 1
    assert run.line("ok    env file").startswith("ok    env file  none at orchestrator.env")
    assert "run the setup wizard" in run.line("fail  settings  no provider set")


async def test_an_unpriced_model_is_a_warning_without_a_budget(tmp_path: Path) -> None:
    """A model the price table lacks: warn that a budget could not limit it, and how to price
    it; exit 0, since nothing is being limited."""
    async with FakeOpenAI() as fake:
        write_env(tmp_path / "orchestrator.env", {
            "PROVIDER": "openai", "OPENAI_UPSTREAM_URL": fake.api_url,
            "MODEL": "my-finetune-7b", "PORT": "0",
        })
        run = await doctor(tmp_path)
    assert run.code == 0, run.out
    line = run.line("warn  prices")
    assert line.startswith("warn  prices    my-finetune-7b (openai) has no price")
    assert "a budget (MAX_SPEND) could not limit it" in line
    assert '[models."my-finetune-7b"]' in line and "--prices FILE" in line
    assert run.line("ok    provider") == (
        f"ok    provider  openai: {fake.api_url}/models answers without a key"
    )


async def test_an_unpriced_model_under_a_budget_fails(tmp_path: Path) -> None:
    """With MAX_SPEND set, an unpriced model is a fail: the budget cannot work."""
    write_env(tmp_path / "orchestrator.env", {
        "PROVIDER": "openai", "OPENAI_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1",
        "MODEL": "my-finetune-7b", "MAX_SPEND": "5",
    })
    run = await doctor(tmp_path)
    assert run.code == 1
    assert "MAX_SPEND needs a price for model 'my-finetune-7b'" in run.line("fail  settings")


async def test_a_busy_port_fails_and_names_the_fix(tmp_path: Path, taken_port: int) -> None:
    """A port another program listens on: fail, with --port / PORT as the fix."""
    run = await doctor(tmp_path, "--provider", "echo", "--port", str(taken_port))
    assert run.code == 1
    assert run.line("fail  port") == (
        f"fail  port      127.0.0.1:{taken_port} is taken by another program: stop it, or "
        "choose another port with --port or PORT"
    )


async def test_a_port_an_orchestrator_serves_is_said_to_be_one(tmp_path: Path) -> None:
    """A port a running orchestrator serves is reported as that, not as taken."""
    from orchestrator.assembly import build_pipeline
    from orchestrator.server.app import create_app
    from orchestrator.server.runner import ServerTask
    from orchestrator.settings import ServerSettings

    settings = ServerSettings(provider="echo", port=free_port(), semantic_dedup=False,
                              learned_routing=False)
    async with build_pipeline(settings) as pipeline:
        app = create_app(pipeline, settings=settings, start_pipeline=False)
        server = ServerTask(app, host=settings.host, port=settings.port)
        await server.start()
        try:
            run = await doctor(tmp_path, "--provider", "echo", "--port", str(settings.port))
        finally:
            await server.stop()
    assert run.code == 0, run.out
    assert "is served by an orchestrator already" in run.line("ok    port")


async def test_json_output_lists_every_check(tmp_path: Path, anthropic: FakeAnthropic) -> None:
    """`--json`: one object, `ok` false on any fail, each check with name, status, message."""
    anthropic.fail_always(Fail(status=401, message=KEY))
    anthropic_env(tmp_path, anthropic.url)
    run = await doctor(tmp_path, "--json")
    assert run.code == 1
    report = json.loads(run.out)
    assert report["ok"] is False
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {"env file": "ok", "settings": "ok", "provider": "fail",
                        "prices": "ok", "port": "ok"}
    assert run.shows_no_key()
