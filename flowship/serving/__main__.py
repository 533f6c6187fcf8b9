"""`python -m flowship.serving`: settings from the environment, the bundle from FLOWSHIP_MODEL_DIR, uvicorn."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import tempfile
from types import FrameType

from flowship.errors import FlowshipError
from flowship.serving.logs import configure_logging
from flowship.serving.settings import ServingSettings

# uvicorn waits this long for in-flight requests on SIGTERM before it cancels them (below Docker's 10 s)
GRACEFUL_SHUTDOWN_SECONDS = 5
# new container objects between two young collections (the interpreter's default: 700); see `settle_collector`
YOUNG_COLLECTIONS_EVERY = 50_000

log = logging.getLogger("flowship.serving")


def main() -> int:
    configure_logging()
    try:
        settings = ServingSettings.from_env()
        _check_log_dir(settings)
        from flowship.serving.bundle import load_bundle

        bundle = load_bundle(settings.model_dir)
        from flowship.serving.app import create_app

        app = create_app(bundle, settings)  # a guardrail policy this model cannot follow stops it here
    except FlowshipError as exc:
        sys.stderr.write(f"flowship.serving: cannot start: {' '.join(str(exc).split())}\n")
        return 2

    import uvicorn

    settle_collector()

    # uvicorn handles SIGTERM/SIGINT while it serves (drain, lifespan shutdown), then restores these handlers
    # and raises the signal again: it ends here, as a clean exit, not a death by signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=False,  # the app writes one JSON line per request itself
        log_config=None,  # keep the JSON logging set up above
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )
    return 0


def settle_collector() -> None:
    """Set the garbage collector for serving, once everything the process keeps is loaded.

    What is loaded by now (libraries, the model, the app: some 170,000 objects) lives as long as the process: frozen,
    out of the collector's full passes, which big requests set off every few dozen requests and which took about
    100 ms each scanning it all (7 ms a 1,000-record request on average; 0.1 ms once frozen).

    A request's own objects die with it, by reference counting: the rows, the answers, the guardrails' events (a few
    thousand containers for 1,000 records). At the interpreter's default the young collection comes every 700 of
    them and scanned them several times a request (about 2.5 ms of a 1,000-record request's 17). It now comes every
    YOUNG_COLLECTIONS_EVERY: garbage with cycles (rare here: exceptions and their tracebacks) is still collected."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTIONS_EVERY, *gc.get_threshold()[1:])


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    log.info("stopped by %s", signal.Signals(signum).name)
    raise SystemExit(0)


def _check_log_dir(settings: ServingSettings) -> None:
    """Fail at start, in one line, when the inference log folder cannot be written."""
    from flowship.serving.errors import SettingsError

    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=settings.log_dir):
            pass
    except OSError as exc:
        raise SettingsError([f"FLOWSHIP_LOG_DIR={str(settings.log_dir)!r}: cannot write there ({exc})"]) from None


if __name__ == "__main__":
    sys.exit(main())
