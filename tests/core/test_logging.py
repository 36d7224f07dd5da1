import json
import logging

from core.logging import JsonFormatter, TextFormatter, ids


def record(message: str, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("test.logging")
    return logger.makeRecord(
        "test.logging", logging.INFO, __file__, 1, message, (), None, extra=extra
    )


def test_ids_are_json_keys() -> None:
    line = JsonFormatter().format(record("message sent", **ids(message_id=7, dispatch_id=3)))
    entry = json.loads(line)
    assert entry["message"] == "message sent"
    assert (entry["message_id"], entry["dispatch_id"]) == (7, 3)
    assert "client_id" not in entry


def test_ids_end_text_lines_and_workflow_info_is_picked_up() -> None:
    workflow = {"workflow_id": "dispatch-3-client-9", "run_id": "r"}
    line = TextFormatter("%(message)s").format(
        record("message expired", temporal_workflow=workflow, **ids(message_id=7))
    )
    assert line == "message expired message_id=7 workflow_id=dispatch-3-client-9 run_id=r"
