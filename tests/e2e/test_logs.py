"""One dispatch followed through the logs of the API and the worker (in one process here): by
its dispatch id, from the request that created it to its completion; by one message id, that
message's whole life; by the client id, what was done to the client."""

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from simulator.app import SimulatorConfig
from tests.conftest import TOKEN, RunningSimulator
from tests.e2e.test_control import until
from tests.e2e.test_end_to_end import stack

pytestmark = pytest.mark.slow

__all__ = ["stack"]  # the fixture, shared with the end-to-end test


def about(records: list[logging.LogRecord], **ids: int) -> list[logging.LogRecord]:
    return [r for r in records if all(getattr(r, k, None) == v for k, v in ids.items())]


def messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records]


async def test_one_dispatch_followed_by_its_ids(
    stack: httpx.AsyncClient, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    api = stack
    caplog.set_level(logging.INFO)
    created_clients = []
    for phone in ("79161234567", "79031234567"):
        response = await api.post("/api/v1/clients", json={"phone": phone})
        created_clients.append(response.json()["id"])
    simulator.state.set_config(SimulatorConfig(fail_first=1))
    now = datetime.now(UTC)
    response = await api.post(
        "/api/v1/dispatches",
        json={
            "start_at": now.isoformat(),
            "end_at": (now + timedelta(hours=1)).isoformat(),
            "text": "Followed",
            "filter": {"all": True},
        },
        headers={"X-Request-ID": "create-42"},
    )
    assert response.headers["X-Request-ID"] == "create-42"
    dispatch_id = response.json()["id"]
    await until(api, dispatch_id, "completed", seconds=60)
    records = caplog.records

    story = about(records, dispatch_id=dispatch_id)
    lines = messages(story)
    created = [r for r in story if r.getMessage() == "dispatch created"]
    assert [getattr(r, "request_id", None) for r in created] == ["create-42"]
    for expected in (
        "dispatch is running",
        "laid out 2 clients",
        "send failed, its delivery will retry: route default: HTTP 500",
        "remote accepted: message sent through route default",
        "dispatch is completed",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    # Lines from activities name their workflow run and attempt.
    running = next(r for r in story if r.getMessage() == "dispatch is running")
    assert getattr(running, "run_id", None) and getattr(running, "attempt", None) == 1

    # The message that failed once: its attempts and the remote's answers, in order.
    failed = next(r for r in story if r.getMessage().startswith("send failed"))
    life = messages(about(records, message_id=failed.message_id))
    assert life[0].startswith("send failed, its delivery will retry")
    assert life[-1] == "remote accepted: message sent through route default"
    delivered = about(records, message_id=failed.message_id)[-1]
    assert getattr(delivered, "workflow_id", "").startswith(f"dispatch-{dispatch_id}-client-")

    # A client: its creation, by id.
    assert "client created" in messages(about(records, client_id=created_clients[0]))
    # No secret in any line.
    secret = api.headers["Authorization"].removeprefix("Bearer ")
    assert not any(TOKEN in r.getMessage() or secret in r.getMessage() for r in records)
