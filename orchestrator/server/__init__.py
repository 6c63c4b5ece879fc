"""The HTTP front door: `create_app` over a `Pipeline`, and ways to run it with uvicorn.

Importing this package imports FastAPI; the library (`orchestrator`) never imports it.
"""

from __future__ import annotations

from orchestrator.server.app import FleetStatus, create_app
from orchestrator.server.runner import ServerTask, ServerThread, serve

__all__ = ["FleetStatus", "ServerTask", "ServerThread", "create_app", "serve"]
