"""JSON logging: one object per line, for the access log and everything else the process logs."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from flowship.serving.encoding import dumps

ACCESS_LOGGER = "flowship.serving.access"


class JsonFormatter(logging.Formatter):
    """A record's `fields` (passed as `extra={"fields": {...}}`) or its message, with time, level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return dumps(line, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """Route every log record (ours and uvicorn's) to stdout as JSON lines; called by the entry point only."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
