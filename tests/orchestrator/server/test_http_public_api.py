"""The public surface of the server package and the settings module."""

from __future__ import annotations

import subprocess
import sys

import orchestrator.server
import orchestrator.settings


def test_server_exports() -> None:
    """orchestrator.server exports the app factory and the ways to run it, nothing else."""
    assert sorted(orchestrator.server.__all__) == [
        "FleetStatus",
        "ServerTask",
        "ServerThread",
        "create_app",
        "serve",
    ]


def test_settings_exports() -> None:
    """orchestrator.settings exports the settings, their loading and the env-file format."""
    assert sorted(orchestrator.settings.__all__) == [
        "DEFAULT_ENV_FILE",
        "DEFAULT_MAX_BODY_BYTES",
        "ENV_NAMES",
        "PROVIDERS",
        "Provider",
        "Secret",
        "ServerSettings",
        "default_model",
        "is_loopback",
        "load_settings",
        "read_env_file",
        "write_env_file",
    ]
    for name in orchestrator.settings.__all__:
        assert hasattr(orchestrator.settings, name)


def test_settings_import_is_light() -> None:
    """Importing the settings loads neither FastAPI nor a provider SDK (the CLI stays fast)."""
    code = (
        "import sys, orchestrator.settings; "
        "heavy = ('fastapi', 'anthropic', 'openai', 'uvicorn'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
