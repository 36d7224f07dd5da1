"""Logging set-up: every line about a dispatch, message or client carries its id as a field.

Callers pass ids through `extra` (`log.info("sent", extra=ids(message_id=7))`); the formatters
print them as `key=value` pairs, or as JSON keys when LOG_JSON is set, so that one grep or one
log query finds everything about one dispatch id, message id or client id.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ID_FIELDS = ("dispatch_id", "message_id", "client_id", "workflow_id", "attempt")


def ids(**values: Any) -> dict[str, Any]:
    """The `extra` for a log call; ids left None are dropped."""
    return {key: value for key, value in values.items() if value is not None}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    found = {key: getattr(record, key) for key in ID_FIELDS if hasattr(record, key)}
    # The Temporal SDK puts the workflow or activity info in these extras.
    for source in ("temporal_workflow", "temporal_activity"):
        info = getattr(record, source, None)
        if isinstance(info, dict) and "workflow_id" in info:
            found.setdefault("workflow_id", info["workflow_id"])
    return found


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        return f"{line} {pairs}" if pairs else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(*, level: str = "INFO", json_output: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Request lines of the HTTP client would drown the ids we care about.
    logging.getLogger("httpx").setLevel(logging.WARNING)
