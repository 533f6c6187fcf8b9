"""The process of the temporary Prefect API (`temporary_api.py`): Prefect's server app under uvicorn and, for an API
that outlives its command, a thread that stops it once no command has used it for its idle time.

    python -m flowship.services.prefect_api_server --port PORT [--lease FILE --state FILE --idle SECONDS]

A command uses the API while it holds a shared lock on the lease file (`flock`; the kernel releases it however the
command ends). Every second the thread tries to take that lock exclusively: while it cannot, a command is using the
API; from the first time it can, the API is idle. After `--idle` seconds idle it keeps the lock until this process
ends (so no command picks the API while it stops), removes the state file when it still names this process, and
has uvicorn stop (Prefect's shutdown: the database closed). A lease file that is gone (the project removed) stops it
too.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
APP = "prefect.server.api.server:create_app"
POLL_S = 1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flowship.services.prefect_api_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lease", type=Path, help="the lease file of the commands that use this API")
    parser.add_argument("--state", type=Path, help="the state file that records this API")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds without a command before it stops")
    args = parser.parse_args(argv)
    import uvicorn

    config = uvicorn.Config(APP, factory=True, host=HOST, port=args.port, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    if args.lease is not None:
        watch = threading.Thread(
            target=stop_when_idle, args=(server, args.lease, args.state, args.idle), name="idle", daemon=True
        )
        watch.start()
    server.run()


def stop_when_idle(server: Any, lease: Path, state: Path | None, idle: float, poll: float = POLL_S) -> None:
    """Set `server.should_exit` once no command has held `lease` for `idle` seconds (see the module's docstring)."""
    idle_since: float | None = None
    while not server.should_exit:
        time.sleep(poll)
        try:
            fd = os.open(lease, os.O_RDWR)
        except FileNotFoundError:
            _log(f"{lease} is gone: stopping")
            server.should_exit = True
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a command holds its lease
            os.close(fd)
            idle_since = None
            continue
        now = time.monotonic()
        idle_since = now if idle_since is None else idle_since
        if now - idle_since < idle:
            os.close(fd)  # the lock goes with it
            continue
        # `fd` stays open, and the lock held, until this process ends.
        _log(f"no command used it for {idle:g} s: stopping")
        if state is not None:
            forget(state)
        server.should_exit = True
        return


def _log(line: str) -> None:
    """A line in the API's log (its standard error)."""
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def forget(state: Path) -> None:
    """Remove the state file when it records this process (a command may have recorded another API since)."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        recorded: dict[str, Any] = json.loads(state.read_text())
        if recorded["process"]["pid"] == os.getpid():
            state.unlink()


if __name__ == "__main__":
    main()
