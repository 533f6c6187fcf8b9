"""The temporary Prefect API of one command, when no Prefect server is configured (no PREFECT_API_URL, no
`flowship up`).

A command that will run a flow starts it in the background as soon as it knows (`start_soon`), so that its start
(Prefect's server imports and its database set-up: several seconds, in a process of its own, on the other core)
overlaps the command's own work (importing MLflow and the flow's modules); the command waits for it only before its
first flow (`ready`). It serves every flow of the command and stops when the command ends (on Linux also when the
command is killed). Its flows send no heartbeats: nothing outlives the command to read them.

Prefect's own temporary server does the same work, but starts only when the first flow calls the API, and waits
there; it also takes a random port between 8000 and 9000, where production may listen (`release.production_port`,
8000 by default). This one takes a port the OS gives.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
from pathlib import Path

from flowship.services.processes import HOST, Process, answers, child_environment, spawn, stop_process, wait_until

NAME = "prefect-temporary"
# how long `ready` waits for the API (the setting Prefect's own temporary server reads; `flowship` sets it to 90 s)
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 90.0
# what Prefect's own temporary server runs with: no UI, no background services (scheduler, late runs, ...)
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}

# Prefect's setting of the interval of flow-run heartbeats (None: none are sent)
HEARTBEAT_SETTING = "flows.heartbeat_frequency"

_started: Process | None = None
_answered = False
_settings = contextlib.ExitStack()  # Prefect's settings while the API runs


def start_soon(root: Path) -> None:
    """Start the temporary API in the background and point this process (and its children) at it.

    Nothing is started when a Prefect server is configured (PREFECT_API_URL), or when this process has already
    imported Prefect without one: Prefect reads its settings once, and keeps its own temporary server then."""
    global _started
    if _started is not None or os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return
    port = _free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    argv += ["--host", HOST, "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    env = child_environment(root, SERVER_ENV)
    _started = spawn(NAME, argv, root, env, url=f"http://{HOST}:{port}", die_with_parent=True)
    atexit.register(stop)
    os.environ["PREFECT_API_URL"] = f"http://{HOST}:{port}/api"


def ready(root: Path) -> None:
    """Before a flow: the temporary API started (if it is to be) and answering. A `ServiceError` with the end of its
    log when it exits or does not answer in time."""
    global _answered
    start_soon(root)
    if _started is None or _answered:
        return
    timeout = float(os.environ.get(STARTUP_TIMEOUT_ENV) or STARTUP_TIMEOUT_S)
    health = f"{_started.url}/api/health"
    wait_until("the temporary Prefect API", lambda: answers(health), _started, timeout, 0.1)
    _answered = True
    _without_heartbeats()


def _without_heartbeats() -> None:
    """This command's flows send no heartbeats. Prefect sends them (every 180 s by default since 3.8) so that a
    server can mark Crashed a run whose process died; this server dies with the command, so nothing would read them.
    They also make each flow end up to a second late: Prefect's heartbeat thread sleeps in 1 s steps, and the flow
    waits for it when it ends. (An environment variable cannot turn them off: Prefect reads it as an integer.)"""
    from prefect.settings import temporary_settings

    _settings.enter_context(temporary_settings(updates={HEARTBEAT_SETTING: None}))


def stop() -> None:
    """Stop the temporary API (at the command's end)."""
    global _started, _answered
    if _started is not None:
        stop_process(_started, grace=5.0)
        if os.environ.get("PREFECT_API_URL") == f"{_started.url}/api":
            del os.environ["PREFECT_API_URL"]
        _started, _answered = None, False
        _settings.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
