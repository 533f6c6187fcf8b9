"""The temporary Prefect API of a command run without a server (flowship/services/temporary_api.py), in processes of
their own: this one has Prefect imported and the session's test API set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowship.pids import running
from tests.helpers import environment, wait_until

SCRIPT = """
import json, os, socket, sys, urllib.request
from pathlib import Path
from flowship.errors import FlowshipError
from flowship.services import temporary_api

root = Path(sys.argv[1])
os.environ["PREFECT_HOME"] = str(root / ".prefect")
{setup}
temporary_api.start_soon(root)
url = os.environ.get("PREFECT_API_URL")
started = temporary_api._started
out = {{"url": url, "prefect_imported": "prefect" in sys.modules, "pid": started.pid if started else None}}
try:
    temporary_api.ready(root)
    from prefect import flow
    from prefect.settings import get_current_settings

    heartbeat = lambda: get_current_settings().flows.heartbeat_frequency
    out["heartbeat"] = heartbeat()
    if started is not None:
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:
            out["health"] = json.load(answer)
        out["flow_heartbeat"] = flow(name="probe")(heartbeat)()  # what a flow run on it reads
except FlowshipError as exc:
    out["error"] = str(exc)
temporary_api.stop()
out["url_after_stop"] = os.environ.get("PREFECT_API_URL")
if "prefect" in sys.modules:
    out["heartbeat_after_stop"] = heartbeat()
print(json.dumps(out))
"""


def run(root: Path, setup: str = "", **env: str) -> dict[str, object]:
    script = SCRIPT.format(setup=textwrap.dedent(setup))
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(300)
def test_a_command_without_a_server_gets_one_on_a_port_the_os_gives_and_stops_it(tmp_path: Path) -> None:
    out = run(tmp_path)
    url = str(out["url"])
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert url == f"http://127.0.0.1:{port}/api"
    assert not 8000 <= port < 9000  # where Prefect's own temporary server looks, and production may listen
    assert out["prefect_imported"] is False  # started before Prefect is imported, so Prefect reads the URL
    assert out["health"] is True
    # its flows send no heartbeats (nothing outlives the command to read them); Prefect's default comes back after
    assert out["heartbeat"] is None and out["flow_heartbeat"] is None and out["heartbeat_after_stop"] == 180
    assert out["url_after_stop"] is None and isinstance(out["pid"], int) and not running(out["pid"])
    log = tmp_path / "logs" / "services" / "prefect-temporary.log"
    assert f"--port {port}" in log.read_text()


@pytest.mark.timeout(300)
def test_a_server_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    # the port it is given is taken: the server exits, and the error says so with the end of its log
    setup = """
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    temporary_api._free_port = lambda: taken.getsockname()[1]
    """
    out = run(tmp_path, setup)
    error = str(out["error"])
    assert error.startswith("the temporary Prefect API exited while starting; from")
    assert "prefect-temporary.log" in error and "address already in use" in error.lower()


@pytest.mark.timeout(300)
def test_nothing_is_started_when_a_server_is_configured_or_prefect_is_already_in_use(tmp_path: Path) -> None:
    configured = run(tmp_path, PREFECT_API_URL="http://127.0.0.1:4200/api")
    assert configured["url"] == "http://127.0.0.1:4200/api" and configured["pid"] is None
    assert configured["heartbeat"] == 180  # a server that outlives the command gets the heartbeats
    imported = run(tmp_path, "import prefect")
    assert imported["url"] is None and imported["pid"] is None  # Prefect keeps its own temporary server then
    assert not (tmp_path / "logs" / "services" / "prefect-temporary.log").exists()


@pytest.mark.timeout(300)
def test_a_killed_command_takes_its_temporary_api_with_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from flowship.services import temporary_api
        root = Path(sys.argv[1])
        os.environ["PREFECT_HOME"] = str(root / ".prefect")
        temporary_api.start_soon(root)
        temporary_api.ready(root)
        print(temporary_api._started.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup of its own
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -9, done.stderr
    server = int(done.stdout.strip())
    wait_until(lambda: not running(server), 30, "the temporary API to end with the command that started it")
