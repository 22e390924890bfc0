"""JSON log lines for the service's own loggers, each carrying the ids of the request it is about:
its request id, and its trace and span ids where a trace records it (edge/context.py)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The request being answered (edge/context.py's RequestContext): the edge sets it once at the door.
REQUEST: ContextVar[Any] = ContextVar("request", default=None)
IDS = ("request_id", "trace_id", "span_id")
LOGGERS = ("pyramidnet", "model_store")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the request's ids, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if (request := REQUEST.get()) is not None:
            for name in IDS:
                if name not in line and (value := getattr(request, name)):
                    line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the service's loggers to stderr as JSON lines at `level` (BentoML's own stay as they are)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
