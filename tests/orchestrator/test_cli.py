"""The `orchestrator` command: wizard on a real terminal, settings, REPL, serve, help."""

from __future__ import annotations

import codecs
import io
import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served import free_port

from orchestrator import cli
from orchestrator.settings import ENV_NAMES, ServerSettings, read_env_file

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-ant-api03-ptytestkey-0123456789abcdef"


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any orchestrator setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in set(ENV_NAMES.values())}
    env.pop("COLUMNS", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No orchestrator setting in the environment; the working directory is empty."""
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Terminal:
    """`orchestrator …` running on a pseudo-terminal, read until expected text appears."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes `python -m orchestrator.cli …` on the terminal
            os.chdir(cwd)
            os.execve(
                sys.executable, [sys.executable, "-m", "orchestrator.cli", *args], clean_env()
            )
        self.pid, self.fd = pid, fd
        self.seen = ""
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode  # "›" may split

    def expect(self, text: str, timeout_s: float = 20.0) -> str:
        """Read until `text` has appeared; return everything read so far."""
        deadline = time.monotonic() + timeout_s
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"never saw {text!r}; got:\n{self.seen}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"exited before {text!r}; got:\n{self.seen}")
            self.seen += self._decode(chunk)
        return self.seen

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def wait(self, timeout_s: float = 20.0) -> int:
        """Read to the end of output and return the exit code; fail if it does not end."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                os.close(self.fd)
                raise AssertionError(f"did not exit; got:\n{self.seen}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += self._decode(chunk)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_first_run_wizard_hides_the_key_and_saves_a_private_file(tmp_path: Path) -> None:
    """On a terminal with no settings the wizard asks; the typed key is not echoed, and the
    answers land in orchestrator.env with mode 0600 before the banner and REPL appear."""
    term = Terminal(["--no-web"], tmp_path)
    term.expect("Provider [1-4]: ")
    term.send("1")
    term.expect("(input hidden): ")
    term.send(KEY)
    term.expect("Model (Enter for ")
    term.send("")
    term.expect("Port for the web API (Enter for 8080): ")
    term.send("9099")
    term.expect("› ")
    term.send("quit")
    assert term.wait() == 0

    assert KEY not in term.seen
    assert "provider  anthropic" in term.seen
    path = tmp_path / "orchestrator.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == {
        "PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": KEY,
        "PORT": "9099",
    }


def test_reset_wipes_the_file_and_asks_again(tmp_path: Path) -> None:
    """`--reset` runs the wizard although the settings are complete, and replaces the file
    (entries it does not ask about go too);
    the REPL then answers from the newly chosen echo provider."""
    path = tmp_path / "orchestrator.env"
    path.write_text(f"PROVIDER=anthropic\nANTHROPIC_API_KEY={KEY}\nMAX_SPEND=3\n")
    term = Terminal(["--reset", "--no-web"], tmp_path)
    term.expect("Provider [1-4]: ")
    term.send("4")
    term.expect("Model (Enter for echo): ")
    term.send("")
    term.expect("(Enter for 8080): ")
    term.send("")
    term.expect("› ")
    term.send("ping through the pipeline")
    term.expect("ping through the pipeline\r\nping through the pipeline")
    term.send("exit")
    assert term.wait() == 0
    assert read_env_file(path) == {"PROVIDER": "echo", "PORT": "8080"}


def test_ctrl_c_at_the_prompt_leaves_at_once(tmp_path: Path) -> None:
    """Ctrl-C while the REPL waits for input (here after one answer) ends the command (exit
    130) without waiting for another line, the web API shut down with it."""
    (tmp_path / "orchestrator.env").write_text("PROVIDER=echo\nPORT=0\n")
    term = Terminal([], tmp_path)
    term.expect("› ")
    term.send("one answer")
    term.expect("one answer\r\none answer\r\n› ")
    os.write(term.fd, b"\x03")
    assert term.wait() == 130


def test_leaving_the_reset_wizard_keeps_the_old_settings(tmp_path: Path) -> None:
    """Ctrl-D during `--reset` exits 1 and leaves orchestrator.env as it was."""
    path = tmp_path / "orchestrator.env"
    path.write_text("PROVIDER=echo\nMAX_SPEND=3\n")
    term = Terminal(["--reset", "--no-web"], tmp_path)
    term.expect("Provider [1-4]: ")
    os.write(term.fd, b"\x04")
    assert term.wait() == 1
    assert "nothing was saved" in term.seen
    assert path.read_text() == "PROVIDER=echo\nMAX_SPEND=3\n"


def test_without_a_terminal_missing_settings_are_an_error(
    no_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With stdin not a terminal there is no wizard: missing settings exit 2, naming them."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n"))
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "no provider set" in err and "not a terminal" in err
    assert not (no_settings / "orchestrator.env").exists()


def test_without_a_terminal_a_missing_key_is_named(
    no_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider without its key is a clear error naming the variable to set."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["--provider", "openai"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_reset_needs_a_terminal(
    no_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--reset` without a terminal refuses (exit 2) and leaves the file alone."""
    path = no_settings / "orchestrator.env"
    path.write_text("PROVIDER=echo\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["--reset"]) == 2
    assert "needs a terminal" in capsys.readouterr().err
    assert path.read_text() == "PROVIDER=echo\n"


def test_flags_override_the_file(
    no_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--provider beats the file's PROVIDER; what no flag names (MODEL) still comes from it."""
    (no_settings / "orchestrator.env").write_text(
        f"PROVIDER=anthropic\nANTHROPIC_API_KEY={KEY}\nMODEL=file-model\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("flags win\nquit\n"))
    assert cli.main(["--provider", "echo", "--no-web"]) == 0
    out = capsys.readouterr().out
    assert "provider  echo" in out
    assert "model     file-model" in out
    assert "flags win" in out


def test_repl_answers_while_the_web_api_serves(
    no_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --no-web the banner shows the live web API and how to connect; the REPL answers."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello from the repl\n"))
    assert cli.main(["--provider", "echo", "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "web API   http://127.0.0.1:" in out
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:" in out
    assert "OPENAI_BASE_URL=http://127.0.0.1:" in out and "/v1" in out
    assert "claude mcp add orchestrator -- orchestrator mcp" in out
    assert "hello from the repl" in out


def test_banner_names_the_token_when_one_is_set() -> None:
    """With API_KEY set, the banner says agents must send it (but never shows it)."""
    settings = ServerSettings(provider="echo", api_key="tok-123456789")
    text = cli.banner(settings, url="http://127.0.0.1:8080")
    assert "your API_KEY" in text
    assert "tok-123456789" not in text
    assert "web API   off" in cli.banner(settings, url=None)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """`orchestrator serve --provider echo --port N` running, with JSON logs and a key in its
    environment; yields the process, its base URL and the log lines read up to start-up."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "serve",
            "--provider",
            "echo",
            "--port",
            f"{port}",
        ],
        cwd=tmp_path,
        env=clean_env(LOG_FORMAT="json", ANTHROPIC_API_KEY=KEY),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:  # start-up is over when uvicorn says it is running
        lines.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        pytest.fail(f"server exited: {''.join(lines)}")
    try:
        yield proc, f"http://127.0.0.1:{port}", lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=90)  # see test_serve_logs_json_lines_without_keys


def test_serve_answers_health_and_prompts(
    served: tuple[subprocess.Popen[str], str, list[str]],
) -> None:
    """`orchestrator serve --provider echo --port N` serves /health and /v1/prompt."""
    _, url, _ = served
    assert httpx.get(url + "/health").status_code == 200
    answer = httpx.post(url + "/v1/prompt", json={"input": "served"}).json()
    assert answer["text"] == "served"


def test_serve_logs_json_lines_without_keys(
    served: tuple[subprocess.Popen[str], str, list[str]],
) -> None:
    """With LOG_FORMAT=json every log line is a JSON object; the key in the environment never
    shows; Ctrl-C shuts the server down cleanly (exit 130, as for any interrupted command)."""
    proc, _, lines = served
    proc.send_signal(signal.SIGINT)
    # Generous: shutdown waits for a semantic-dedup model load the first prompt started
    # (killing a thread inside torch's import would abort the interpreter); ~20 s under load.
    _, rest = proc.communicate(timeout=90)
    assert proc.returncode == 130
    records = [json.loads(line) for line in lines + rest.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert any("Uvicorn running on" in m for m in messages)
    assert "Application shutdown complete." in messages
    assert KEY not in "".join(lines) + rest


def test_help_loads_no_heavy_module() -> None:
    """`orchestrator --help` lists the commands without importing the web or SDK stacks."""
    code = (
        "import sys, contextlib, io\n"
        "from orchestrator import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        "heavy = ['fastapi', 'uvicorn', 'mcp', 'anthropic', 'openai', 'textual']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "print('serve' in out.getvalue() and 'mcp' in out.getvalue())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "True"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [[], ["serve"]])
def test_a_taken_port_is_a_clear_error(
    no_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    taken_port: int,
    command: list[str],
) -> None:
    """When the port is taken, the REPL mode and `serve` say so and exit 1."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("never read\n"))
    assert cli.main([*command, "--provider", "echo", "--port", str(taken_port)]) == 1
    assert f"cannot listen on 127.0.0.1:{taken_port}" in capsys.readouterr().err


def test_tui_opens_the_dashboard_on_the_given_url(
    no_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orchestrator tui --url U` runs the Textual dashboard against U, with API_KEY as token."""
    from orchestrator.tui import DashboardApp

    opened: list[tuple[str, str | None]] = []
    monkeypatch.setattr(DashboardApp, "run", lambda self: opened.append((self.url, self._api_key)))
    monkeypatch.setenv("API_KEY", "tok-for-the-tui")
    assert cli.main(["tui", "--url", "http://127.0.0.1:9999/"]) == 0
    assert opened == [("http://127.0.0.1:9999", "tok-for-the-tui")]


def readme_blocks(language: str) -> list[str]:
    """The fenced code blocks of orchestrator/README.md in `language` ('' for plain)."""
    text = (REPO / "orchestrator" / "README.md").read_text()
    blocks: list[str] = []
    inside: str | None = None
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("```") and inside is None:
            inside, current = line[3:].strip(), []
        elif line.startswith("```"):
            if inside == language:
                blocks.append("\n".join(current))
            inside = None
        elif inside is not None:
            current.append(line)
    return blocks


def test_readme_claude_desktop_config_runs_the_mcp_command() -> None:
    """The README's claude_desktop_config.json entry is valid JSON whose command and args are
    the `orchestrator mcp` subcommand with flags the parser accepts."""
    configs = [json.loads(b) for b in readme_blocks("json") if "mcpServers" in b]
    assert len(configs) == 1
    entry = configs[0]["mcpServers"]["orchestrator"]
    assert entry["command"] == "orchestrator"
    args = cli.build_parser().parse_args(entry["args"])
    assert args.command == "mcp"
    assert args.env_file == Path("/home/you/orchestrator.env")


def test_readme_claude_code_commands_are_well_formed() -> None:
    """The README's `claude mcp add` lines run `orchestrator mcp` over stdio, or use /mcp."""
    lines = [line for b in readme_blocks("") for line in b.splitlines() if "claude mcp add" in line]
    stdio = next(line for line in lines if " -- " in line)
    name, _, command = stdio.removeprefix("claude mcp add ").partition(" -- ")
    assert name == "orchestrator"
    program, *args = command.split()
    assert program == "orchestrator"
    assert cli.build_parser().parse_args(args).command == "mcp"
    http = next(line for line in lines if "--transport http" in line)
    assert http.endswith(" orchestrator http://127.0.0.1:8080/mcp")


def test_public_surface() -> None:
    """The CLI module exports exactly its documented names."""
    assert sorted(cli.__all__) == ["banner", "build_parser", "main"]


def test_serve_self_tune_runs_the_tuning_loop_beside_the_pipeline(tmp_path: Path) -> None:
    """`serve --self-tune --telemetry-interval-s 0.2`: /v1/status carries the loop's rounds,
    every live parameter against its default, and the anomaly an injected upstream fault
    raises once traffic flows."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo", "--port",
         f"{port}", "--self-tune", "--telemetry-interval-s", "0.2"],
        cwd=tmp_path, env=clean_env(ECHO_FAULTS="10:0.5"), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "Uvicorn running on" in line:
                break
        else:
            pytest.fail("server exited")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        tuning: dict = {}
        n = 0
        while not any(a["metric"] == "upstream_error_rate" for a in tuning.get("anomalies", [])):
            assert time.monotonic() < deadline, f"no upstream anomaly: {tuning}"
            httpx.post(url + "/v1/prompt", json={"input": f"prompt {n}"}, timeout=30)
            n += 1
            tuning = httpx.get(url + "/v1/status").json().get("self_tune", {})
        assert tuning["tuning"] == "on" and tuning["ticks"] >= 1
        names = {p["name"] for p in tuning["parameters"]}
        assert {"inference_concurrency", "retry_max_attempts", "cache_ttl_s"} <= names
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_serve_refuses_a_nonsense_telemetry_interval(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo",
         "--self-tune", "--telemetry-interval-s", "0"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--telemetry-interval-s" in done.stderr


def test_serve_dry_run_needs_self_tune(tmp_path: Path) -> None:
    """`--dry-run` is the tuner's; without `--self-tune` it is refused, naming both."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo", "--dry-run"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--dry-run needs --self-tune" in done.stderr


def test_serve_self_tune_dry_run_recommends_without_changing(tmp_path: Path) -> None:
    """`serve --self-tune --dry-run`: /v1/status says dry run, and /v1/config still holds
    every default while traffic flows."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo", "--port",
         f"{port}", "--self-tune", "--telemetry-interval-s", "0.2", "--dry-run"],
        cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "Uvicorn running on" in line:
                break
        else:
            pytest.fail("server exited")
        url = f"http://127.0.0.1:{port}"
        before = httpx.get(url + "/v1/config").json()["values"]
        deadline = time.monotonic() + 60
        tuning: dict = {}
        n = 0
        while tuning.get("ticks", 0) < 10:
            assert time.monotonic() < deadline, f"the loop did not run: {tuning}"
            httpx.post(url + "/v1/prompt", json={"input": f"prompt {n}"}, timeout=30)
            n += 1
            tuning = httpx.get(url + "/v1/status").json().get("self_tune", {})
        assert tuning["tuning"] == "dry run" and tuning["dry_run"] is True
        assert httpx.get(url + "/v1/config").json()["values"] == before
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`orchestrator --version` prints the distribution's version and exits 0."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"orchestrator {version('prompt-orchestrator')}"
