"""Logging set-up: every line about a dispatch, message or client carries its id as a field.

Callers pass ids through `extra` (`log.info("sent", extra=ids(message_id=7))`); the formatters
print them as `key=value` pairs, or as JSON keys when LOG_JSON is set, so that one grep or one
log query finds everything about one dispatch id, message id or client id.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

ID_FIELDS = (
    "dispatch_id",
    "message_id",
    "client_id",
    "workflow_id",
    "run_id",
    "attempt",
    "request_id",
)

# The API request being served (set by the API's middleware), for every line it logs.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def ids(**values: Any) -> dict[str, Any]:
    """The `extra` for a log call; ids left None are dropped."""
    return {key: value for key, value in values.items() if value is not None}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    found = {key: getattr(record, key) for key in ID_FIELDS if hasattr(record, key)}
    # The Temporal SDK puts the workflow or activity info in these extras (workflow.logger).
    for source in ("temporal_workflow", "temporal_activity"):
        info = getattr(record, source, None)
        if isinstance(info, dict) and "workflow_id" in info:
            found.setdefault("workflow_id", info["workflow_id"])
            run_id = info.get("run_id") or info.get("workflow_run_id")
            if run_id:
                found.setdefault("run_id", run_id)
            if source == "temporal_activity" and "attempt" in info:
                found.setdefault("attempt", info["attempt"])
    return found


_make_record = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record, whatever its logger, learns where it was made: inside an activity, its
    workflow, run and attempt; inside an API request, the request id."""
    record = _make_record(*args, **kwargs)
    if activity.in_activity():
        info = activity.info()
        record.workflow_id = info.workflow_id
        record.run_id = info.workflow_run_id
        record.attempt = info.attempt
    request_id = REQUEST_ID.get()
    if request_id is not None:
        record.request_id = request_id
    return record


def install_context() -> None:
    """Idempotent: the record factory that adds the context ids."""
    if logging.getLogRecordFactory() is not _record_with_context:
        logging.setLogRecordFactory(_record_with_context)


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
    install_context()
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
