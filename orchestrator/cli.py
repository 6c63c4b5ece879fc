"""The `orchestrator` command: setup wizard, banner and REPL, `serve`, `mcp`, `tui`, `doctor`.

    orchestrator                         wizard if needed, then banner + REPL (+ web API)
    orchestrator --reset                 wipe orchestrator.env and run the wizard again
    orchestrator serve --provider echo   the web API alone (no wizard, no REPL)
    orchestrator mcp                     the MCP tools over stdin/stdout
    orchestrator tui [--url URL]         the terminal dashboard of a running server
    orchestrator doctor [--json]         check the setup (env file, key, upstream, prices, port)

Settings come from flags > environment > `orchestrator.env` > defaults (`orchestrator.settings`).
Exit codes: 0 done, 1 the wizard was left or the port is taken (or `doctor` found a `fail`),
2 bad or missing settings, 130 interrupted.
This module imports only the standard library at load time, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from orchestrator.settings import ServerSettings

__all__ = ["banner", "build_parser", "main"]

EXIT_OK, EXIT_ABORTED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Settings the wizard can supply; a load failing on anything else is not the wizard's to fix.
_WIZARD_FIXES = frozenset({"PROVIDER", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "LLAMA_CPP_URL"})


def _settings_flags(parser: argparse.ArgumentParser, *, web: bool, suppress: bool) -> None:
    """The settings flags; on subcommands their default is SUPPRESS so that a flag given
    before the subcommand is not overwritten by the subcommand's default."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("settings (override the environment and orchestrator.env)")
    group.add_argument(
        "--provider",
        choices=("anthropic", "openai", "llamacpp", "echo"),
        default=default,
        help="model provider (PROVIDER)",
    )
    group.add_argument("--model", default=default, help="model name (MODEL)")
    group.add_argument(
        "--fallback",
        default=default,
        metavar="P1,P2",
        help="providers tried in order when the provider fails (FALLBACK), e.g. openai,echo",
    )
    group.add_argument(
        "--max-spend",
        type=float,
        default=default,
        metavar="USD",
        dest="max_spend_usd",
        help="global spend limit in US dollars (MAX_SPEND)",
    )
    group.add_argument(
        "--prices",
        default=default,
        metavar="FILE",
        dest="prices_file",
        help="a TOML price table merged over the shipped one (PRICES_FILE)",
    )
    group.add_argument(
        "--env-file",
        type=Path,
        default=default,
        metavar="PATH",
        help="settings file (default: ./orchestrator.env)",
    )
    if web:
        group.add_argument("--host", default=default, help="bind address (HOST, 127.0.0.1)")
        group.add_argument("--port", type=int, default=default, help="web API port (PORT, 8080)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prompt-orchestrator")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `orchestrator` command."""
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description=(
            "Run the inference pipeline: a setup wizard on first run, then a REPL in the "
            "terminal while the web API (Anthropic- and OpenAI-compatible, MCP at /mcp) serves."
        ),
        epilog="Logging: LOG_FORMAT=json for JSON lines, LOG_LEVEL=DEBUG|INFO|WARNING|ERROR, "
        "LOG_PROMPTS=1 to log prompts and answers (masked, truncated).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _settings_flags(parser, web=True, suppress=False)
    parser.add_argument("--no-web", action="store_true", help="the REPL only, no web API")
    parser.add_argument(
        "--reset", action="store_true", help="wipe orchestrator.env and run the wizard again"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the web API alone (no wizard, no REPL)", description="Run the web API."
    )
    _settings_flags(serve, web=True, suppress=True)
    serve.add_argument(
        "--self-tune",
        action="store_true",
        help="run the tuning loop beside the pipeline: sample it, tune its live parameters, "
        "report anomalies (shown in /v1/status and the dashboards)",
    )
    serve.add_argument(
        "--telemetry-interval-s",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between the tuning loop's samples (default 5)",
    )
    serve.add_argument(
        "--telemetry-nats",
        metavar="URL",
        help="with --self-tune: publish every telemetry snapshot to this NATS server too "
        "(e.g. nats://127.0.0.1:4222), so other processes can watch them",
    )
    serve.add_argument(
        "--telemetry-nats-subject",
        metavar="SUBJECT",
        help="the NATS subject of --telemetry-nats (default orchestrator.telemetry)",
    )
    serve.add_argument(
        "--db",
        metavar="URL",
        help="agent memory SQLAlchemy URL (e.g. sqlite:///.coordinator/memory.db): keeps the "
        "learned router's state across restarts and --self-tune's changes with their reasons",
    )
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="with --self-tune: recommend parameter changes (shown in /v1/status) without "
        "making them",
    )
    mcp = commands.add_parser(
        "mcp",
        help="serve the MCP tools over stdin/stdout (for Claude Desktop, Claude Code)",
        description="Serve the MCP tools (infer, batch_infer, pipeline_status, "
        "configure_pipeline, feedback) over stdin/stdout.",
    )
    _settings_flags(mcp, web=False, suppress=True)
    doctor = commands.add_parser(
        "doctor",
        help="check the setup and say what to fix",
        description="Check what `serve` would use: the env file's mode, the settings, each "
        "provider (upstream reachable, key accepted, by one call that spends no tokens), the "
        "models' prices and the port. Prints one ok/warn/fail line each; exits 1 on a fail. "
        "Never prints a key.",
    )
    _settings_flags(doctor, web=True, suppress=True)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument(
        "--timeout-s",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds each network check may wait (default 5)",
    )
    if _has_tui():
        tui = commands.add_parser(
            "tui", help="terminal dashboard of a running server", description="Dashboard."
        )
        tui.add_argument(
            "--url",
            default="http://127.0.0.1:8080",
            help="the server to watch (default http://127.0.0.1:8080)",
        )
        tui.add_argument(
            "--api-key", default=None, help="the server's token (default: API_KEY, if set)"
        )
        tui.add_argument("--env-file", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def _has_tui() -> bool:
    import importlib.util

    return importlib.util.find_spec("orchestrator.tui") is not None


# -- settings --------------------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    names = ("provider", "model", "fallback", "host", "port", "max_spend_usd", "prices_file")
    return {name: getattr(args, name, None) for name in names}


def _env_file(args: argparse.Namespace) -> Path:
    from orchestrator.settings import DEFAULT_ENV_FILE

    path: Path | None = getattr(args, "env_file", None)
    return path.expanduser() if path is not None else DEFAULT_ENV_FILE


def _fail(message: str, *, err: TextIO) -> int:
    err.write(f"orchestrator: error: {message}\n")
    return EXIT_USAGE


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _interactive_settings(args: argparse.Namespace, *, err: TextIO) -> ServerSettings | int:
    """Settings for the REPL mode: the wizard fills what is missing when stdin is a terminal."""
    from orchestrator.errors import SettingsError, WizardAborted
    from orchestrator.settings import load_settings
    from orchestrator.wizard import run_wizard, save_answers

    env_file = _env_file(args)
    terminal = _is_terminal(sys.stdin)
    if args.reset and not terminal:
        return _fail("--reset asks the setup questions again and needs a terminal", err=err)
    try:
        if not args.reset:
            return load_settings(_flags(args), env_file=env_file)
    except SettingsError as exc:
        if not terminal or not set(exc.names) <= _WIZARD_FIXES:
            hint = "" if terminal else " (stdin is not a terminal, so the wizard cannot ask)"
            return _fail(f"{exc}{hint}", err=err)
    try:
        answers = run_wizard(provider=getattr(args, "provider", None))
    except WizardAborted as exc:
        err.write(f"orchestrator: {exc}\n")
        return EXIT_ABORTED
    if args.reset:  # wiped only now, so that leaving the wizard keeps the old settings
        env_file.unlink(missing_ok=True)
    save_answers(answers, env_file)
    print(f"Saved to {env_file} (readable only by you).\n")
    try:
        return load_settings(_flags(args), env_file=env_file)
    except SettingsError as exc:
        return _fail(str(exc), err=err)


def _plain_settings(args: argparse.Namespace, *, err: TextIO) -> ServerSettings | int:
    from orchestrator.errors import SettingsError
    from orchestrator.settings import load_settings

    try:
        return load_settings(_flags(args), env_file=_env_file(args))
    except SettingsError as exc:
        return _fail(str(exc), err=err)


def _configure_logging(settings: ServerSettings, *, quiet: bool = False) -> None:
    """Configure logging once for the process. `quiet` (the REPL) shows only warnings unless
    LOG_LEVEL is set, so server chatter does not interleave with answers."""
    from orchestrator.logging_setup import configure_logging

    secrets = (
        settings.anthropic_api_key,
        settings.openai_api_key,
        settings.api_key,
        settings.admin_api_key,
    )
    configure_logging(
        level="WARNING" if quiet else settings.log_level,
        fmt=settings.log_format,
        secrets=[s.reveal() for s in secrets if s is not None],
        log_prompts=settings.log_prompts,
    )


def _log_level_given(args: argparse.Namespace) -> bool:
    from orchestrator.settings import read_env_file

    return bool(os.environ.get("LOG_LEVEL") or read_env_file(_env_file(args)).get("LOG_LEVEL"))


# -- the banner ------------------------------------------------------------------------------


def banner(settings: ServerSettings, *, url: str | None) -> str:
    """What the interactive mode prints first: what serves, and how to connect to it."""
    from orchestrator.settings import default_model

    model = settings.model or default_model(settings.provider)
    lines = [
        "prompt-orchestrator",
        f"  provider  {settings.provider}"
        + (f" (fallback: {', '.join(settings.fallback)})" if settings.fallback else ""),
        f"  model     {model}",
    ]
    if url is None:
        lines.append("  web API   off (--no-web)")
    else:
        key = " (API key: your API_KEY)" if settings.api_key is not None else ""
        dashboard = f"{url}/dashboard" + ("?token=<API_KEY>" if settings.api_key else "")
        lines.append(f"  web API   {url}  (dashboard {dashboard})")
        lines += ["", "Connect:"]
        ways = [
            ("agents, Anthropic SDK, Claude Code", f"ANTHROPIC_BASE_URL={url}{key}"),
            ("IDEs, OpenAI SDK", f"OPENAI_BASE_URL={url}/v1{key}"),
            ("MCP over HTTP", f"{url}/mcp"),
            ("Claude Desktop (MCP)", '"command": "orchestrator", "args": ["mcp"]'),
            ("Claude Code (MCP)", "claude mcp add orchestrator -- orchestrator mcp"),
        ]
        lines += [f"  {label:<36} {how}" for label, how in ways]
    lines += [
        "",
        "Type a prompt and press Enter; 'exit' or 'quit' (or Ctrl-D) leaves.",
        "Rate the last answer with /good, /wrong or /stale (out of date), a comment optional.",
        "",
    ]
    return "\n".join(lines)


# -- the modes -------------------------------------------------------------------------------


async def _interactive(settings: ServerSettings, *, web: bool, err: TextIO) -> int:
    """Banner and REPL; the web API serves the same pipeline from the same event loop."""
    from orchestrator.assembly import build_pipeline
    from orchestrator.repl import run_repl

    async with build_pipeline(settings) as pipeline:
        if not web:
            print(banner(settings, url=None), flush=True)
            await run_repl(pipeline)
            return EXIT_OK
        from orchestrator.server.app import create_app
        from orchestrator.server.runner import ServerTask

        if not _can_listen(settings.host, settings.port):
            return _cannot_listen(settings, err=err)
        app = create_app(pipeline, settings=settings, start_pipeline=False)
        server = ServerTask(app, host=settings.host, port=settings.port)
        try:
            url = await server.start()
        except RuntimeError:
            return _cannot_listen(settings, err=err)
        try:
            print(banner(settings, url=url), flush=True)
            await run_repl(pipeline)
        finally:
            await server.stop()
    return EXIT_OK


async def _mcp_stdio(settings: ServerSettings) -> None:
    from orchestrator.assembly import build_pipeline
    from orchestrator.server.mcp import serve_stdio

    async with build_pipeline(settings) as pipeline:
        await serve_stdio(pipeline)


def _can_listen(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now (as uvicorn binds it, with SO_REUSEADDR).

    Checked before starting, because uvicorn ends a failed bind with SystemExit, which would
    tear through the REPL's event loop instead of giving a clear message.
    """
    from orchestrator.doctor import port_free

    return port_free(host, port)


def _cannot_listen(settings: ServerSettings, *, err: TextIO) -> int:
    err.write(
        f"orchestrator: error: the web API cannot listen on {settings.host}:{settings.port} "
        "(is the port taken?); choose another with --port, or run with --no-web\n"
    )
    return EXIT_ABORTED


def _serve(
    settings: ServerSettings,
    *,
    self_tune_interval_s: float | None,
    dry_run: bool,
    err: TextIO,
    db: str | None = None,
    telemetry_nats: str | None = None,
    telemetry_nats_subject: str | None = None,
) -> int:
    from orchestrator.server.runner import serve

    if not _can_listen(settings.host, settings.port):
        return _cannot_listen(settings, err=err)
    serve(
        settings,
        self_tune_interval_s=self_tune_interval_s,
        self_tune_dry_run=dry_run,
        memory_url=db,
        telemetry_nats=telemetry_nats,
        telemetry_nats_subject=telemetry_nats_subject,
    )
    return EXIT_OK


def _tui(args: argparse.Namespace) -> int:
    from orchestrator.settings import read_env_file
    from orchestrator.tui import DashboardApp

    api_key = (
        args.api_key or os.environ.get("API_KEY") or read_env_file(_env_file(args)).get("API_KEY")
    )
    DashboardApp(args.url.rstrip("/"), api_key=api_key or None).run()
    return EXIT_OK


def _doctor(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    import json

    from orchestrator.doctor import Status, run_checks

    if not (0 < args.timeout_s < float("inf")):
        return _fail(f"--timeout-s must be > 0, got {args.timeout_s:g}", err=err)
    checks = run_checks(_flags(args), env_file=_env_file(args), timeout_s=args.timeout_s)
    failed = any(c.status is Status.FAIL for c in checks)
    if args.json:
        out.write(json.dumps({"ok": not failed, "checks": [c.to_json() for c in checks]}) + "\n")
    else:
        out.writelines(c.line() + "\n" for c in checks)
        fails = sum(c.status is Status.FAIL for c in checks)
        warns = sum(c.status is Status.WARN for c in checks)
        out.write(f"\n{fails} fail, {warns} warn\n" if fails or warns else "\nall ok\n")
    return EXIT_ABORTED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `orchestrator` command; return its exit code."""
    args = build_parser().parse_args(argv)
    err = sys.stderr
    if args.command == "tui":
        return _tui(args)
    if args.command == "doctor":
        return _doctor(args, out=sys.stdout, err=err)
    if args.command is None:
        loaded = _interactive_settings(args, err=err)
    else:
        loaded = _plain_settings(args, err=err)
    if isinstance(loaded, int):
        return loaded
    settings = loaded
    try:
        quiet = args.command is None and not _log_level_given(args)
        _configure_logging(settings, quiet=quiet)
    except ValueError as exc:  # a bad LOG_LEVEL / LOG_FORMAT
        return _fail(str(exc), err=err)
    try:
        if args.command == "serve":
            interval = args.telemetry_interval_s
            if not (0 < interval < float("inf")):
                return _fail(f"--telemetry-interval-s must be > 0, got {interval:g}", err=err)
            if args.dry_run and not args.self_tune:
                return _fail("--dry-run needs --self-tune (it is the tuner's)", err=err)
            nats_flags = args.telemetry_nats or args.telemetry_nats_subject
            if nats_flags and not args.self_tune:
                return _fail(
                    "--telemetry-nats needs --self-tune (it publishes the tuner's telemetry)",
                    err=err,
                )
            if args.telemetry_nats_subject and not args.telemetry_nats:
                return _fail("--telemetry-nats-subject needs --telemetry-nats URL", err=err)
            if args.telemetry_nats_subject:
                from self_tune.nats_bus import subject_problem

                problem = subject_problem(args.telemetry_nats_subject)
                if problem is not None:
                    return _fail(f"--telemetry-nats-subject: {problem}", err=err)
            return _serve(
                settings,
                self_tune_interval_s=interval if args.self_tune else None,
                dry_run=args.dry_run,
                err=err,
                db=args.db,
                telemetry_nats=args.telemetry_nats,
                telemetry_nats_subject=args.telemetry_nats_subject,
            )
        if args.command == "mcp":
            asyncio.run(_mcp_stdio(settings))
            return EXIT_OK
        return asyncio.run(_interactive(settings, web=not args.no_web, err=err))
    except KeyboardInterrupt:
        err.write("\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
