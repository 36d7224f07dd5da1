"""Pause, resume and cancel of a running dispatch on the dev server, through the API and as raw
signals from a Temporal client (what the Temporal UI and CLI send)."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.contracts.control import ControlSignal
from core.contracts.shared import cohort_workflow_id, dispatch_workflow_id
from core.db import Database
from core.settings import Settings
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.factories import make_client
from tests.support import Queues, api_client, running_workers, settings_for

pytestmark = pytest.mark.slow

DISPATCHES = "/api/v1/dispatches"


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    # Five requests at a time of 50 ms each: about 100 sends a second, slow enough to pause.
    s = settings_for(settings, dev_env.client, queues, send_concurrency=5, send_batch_size=50)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with api_client(app) as api:
            yield api


async def create(api: httpx.AsyncClient, **fields: object) -> int:
    now = datetime.now(UTC)
    body: dict[str, object] = {
        "start_at": now.isoformat(),
        "end_at": (now + timedelta(hours=1)).isoformat(),
        "text": "Control",
        "filter": {"all": True},
        **fields,
    }
    response = await api.post(DISPATCHES, json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def until(api: httpx.AsyncClient, dispatch_id: int, status: str, seconds: float = 60) -> dict:  # type: ignore[type-arg]
    async with asyncio.timeout(seconds):
        while True:
            body = (await api.get(f"{DISPATCHES}/{dispatch_id}")).json()
            if body["status"] == status:
                return body  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


async def waiting_for_its_window(api: httpx.AsyncClient, db: Database, *, clients: int) -> int:
    """A running dispatch to `clients` clients in UTC whose window opens about three hours
    from now: its messages are laid out and its cohort sleeps."""
    for _ in range(clients):
        await make_client(db, timezone="UTC")
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    dispatch_id = await create(
        api,
        end_at=(now + timedelta(days=1)).isoformat(),
        window={
            "start": opens.strftime("%H:%M"),
            "end": (opens + timedelta(hours=1)).strftime("%H:%M"),
        },
    )
    body = await until(api, dispatch_id, "running")
    async with asyncio.timeout(10):
        while body["messages"]["pending"] < clients:
            body = (await api.get(f"{DISPATCHES}/{dispatch_id}")).json()
            await asyncio.sleep(0.1)
    return dispatch_id


async def test_pause_stops_requests_within_a_second_and_resume_sends_the_rest_once(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = stack
    clients = 300
    for _ in range(clients):
        await make_client(db)
    simulator.state.set_config(SimulatorConfig(latency_ms=50))
    dispatch_id = await create(api)
    async with asyncio.timeout(30):
        while simulator.state.stats()["received"] < 50:
            await asyncio.sleep(0.01)
    paused = await api.post(f"{DISPATCHES}/{dispatch_id}/pause", json={"reason": "typo"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    answered = time.monotonic()
    await asyncio.sleep(1.0)
    after_a_second = simulator.state.stats()["received"]
    await asyncio.sleep(2.0)
    assert simulator.state.stats()["received"] == after_a_second
    assert time.monotonic() - answered >= 3.0
    assert after_a_second < clients
    # Pausing again is harmless.
    again = await api.post(f"{DISPATCHES}/{dispatch_id}/pause")
    assert (again.status_code, again.json()["status"]) == (200, "paused")

    resumed = await api.post(f"{DISPATCHES}/{dispatch_id}/resume")
    assert (resumed.status_code, resumed.json()["status"]) == (200, "running")
    done = await until(api, dispatch_id, "completed")
    assert done["messages"]["sent"] == clients
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (clients, 0)

    refused = await api.post(f"{DISPATCHES}/{dispatch_id}/resume")
    assert refused.status_code == 409
    assert "completed" in refused.json()["detail"]


async def test_a_dispatch_paused_as_its_last_sends_finish_completes(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    """Found by the soak run: paused while its last requests were in flight, a dispatch had
    every message final, its workflow completed and its row stayed paused; a resume then moved
    the row to running for good, with no workflow left to finish it. Now it completes."""
    api = stack
    clients = 5  # the stack's send concurrency: every request in flight at once
    for _ in range(clients):
        await make_client(db)
    # Under the send timeout (2 s), long enough to pause while the requests are out.
    simulator.state.set_config(SimulatorConfig(latency_ms=1200))
    dispatch_id = await create(api)
    async with asyncio.timeout(30):
        while simulator.state.stats()["received"] < clients:
            await asyncio.sleep(0.01)
    paused = await api.post(f"{DISPATCHES}/{dispatch_id}/pause")
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    done = await until(api, dispatch_id, "completed", seconds=30)
    assert done["messages"]["sent"] == clients
    refused = await api.post(f"{DISPATCHES}/{dispatch_id}/resume")
    assert refused.status_code == 409
    assert "completed" in refused.json()["detail"]
    assert (await api.get(f"{DISPATCHES}/{dispatch_id}")).json()["status"] == "completed"


async def test_cancel_wakes_a_cohort_waiting_for_its_window(
    stack: httpx.AsyncClient,
    db: Database,
    dev_env: WorkflowEnvironment,
    simulator: RunningSimulator,
) -> None:
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=3)
    cancelled = await api.post(f"{DISPATCHES}/{dispatch_id}/cancel", json={"reason": "wrong day"})
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert cancelled.json()["messages"]["cancelled"] == 3
    # The cohort sleeping until its window wakes and finishes, and so does the dispatch.
    temporal = dev_env.client
    cohort = temporal.get_workflow_handle(cohort_workflow_id(dispatch_id, "UTC"))
    parent = temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id))
    async with asyncio.timeout(20):
        for handle in (cohort, parent):
            while (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
                await asyncio.sleep(0.1)
    assert (await api.get(f"{DISPATCHES}/{dispatch_id}")).json()["status"] == "cancelled"
    repeat = await api.post(f"{DISPATCHES}/{dispatch_id}/cancel")
    assert (repeat.status_code, repeat.json()["status"]) == (200, "cancelled")
    assert simulator.state.stats()["received"] == 0


async def test_scheduled_dispatch_cannot_pause_and_unknown_is_404(
    stack: httpx.AsyncClient, db: Database
) -> None:
    api = stack
    await make_client(db)
    later = datetime.now(UTC) + timedelta(days=2)
    dispatch_id = await create(
        api, start_at=later.isoformat(), end_at=(later + timedelta(hours=1)).isoformat()
    )
    refused = await api.post(f"{DISPATCHES}/{dispatch_id}/pause")
    assert refused.status_code == 409
    assert "not started" in refused.json()["detail"]
    assert (await api.post(f"{DISPATCHES}/999999/cancel")).status_code == 404
    long_reason = await api.post(f"{DISPATCHES}/{dispatch_id}/cancel", json={"reason": "x" * 201})
    assert long_reason.status_code == 422
    cancelled = await api.post(f"{DISPATCHES}/{dispatch_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"


async def test_pause_and_resume_as_raw_signals(
    stack: httpx.AsyncClient,
    db: Database,
    dev_env: WorkflowEnvironment,
    simulator: RunningSimulator,
) -> None:
    api = stack
    clients = 300
    for _ in range(clients):
        await make_client(db)
    simulator.state.set_config(SimulatorConfig(latency_ms=50))
    dispatch_id = await create(api)
    async with asyncio.timeout(30):
        while simulator.state.stats()["received"] < 50:
            await asyncio.sleep(0.01)
    handle = dev_env.client.get_workflow_handle(dispatch_workflow_id(dispatch_id))
    await handle.signal("pause", ControlSignal(reason="from the CLI"))
    await until(api, dispatch_id, "paused", seconds=10)
    await asyncio.sleep(1.0)
    held = simulator.state.stats()["received"]
    await asyncio.sleep(1.5)
    assert simulator.state.stats()["received"] == held < clients
    await handle.signal("resume", ControlSignal())
    done = await until(api, dispatch_id, "completed")
    assert done["messages"]["sent"] == clients
    assert simulator.state.stats()["duplicates"] == 0


async def test_a_cancellation_request_from_temporal_acts_as_cancel(
    stack: httpx.AsyncClient,
    db: Database,
    dev_env: WorkflowEnvironment,
    simulator: RunningSimulator,
) -> None:
    """The Temporal UI's "Cancel" on the dispatch workflow: the row and its messages end
    cancelled, the sleeping cohort finishes, and the workflow ends cancelled."""
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=3)
    temporal = dev_env.client
    parent = temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id))
    cohort = temporal.get_workflow_handle(cohort_workflow_id(dispatch_id, "UTC"))
    await parent.cancel()
    done = await until(api, dispatch_id, "cancelled", seconds=20)
    assert done["messages"]["cancelled"] == 3
    async with asyncio.timeout(20):
        while (await parent.describe()).status != WorkflowExecutionStatus.CANCELED:
            await asyncio.sleep(0.1)
        # Woken and finished, or cancelled with the dispatch if the request came while the
        # dispatch was still starting it.
        closed = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED}
        while (await cohort.describe()).status not in closed:
            await asyncio.sleep(0.1)
    assert simulator.state.stats()["received"] == 0


async def test_deleting_a_dispatch_ends_its_waiting_cohort(
    stack: httpx.AsyncClient, db: Database, dev_env: WorkflowEnvironment
) -> None:
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=1)
    cohort = dev_env.client.get_workflow_handle(cohort_workflow_id(dispatch_id, "UTC"))
    async with asyncio.timeout(10):
        while True:
            try:
                await cohort.describe()
                break
            except RPCError:
                await asyncio.sleep(0.1)
    assert (await api.delete(f"{DISPATCHES}/{dispatch_id}")).status_code == 204
    # It finishes once woken (COMPLETED), or, when the deletion's cancellation reached the
    # dispatch while it was still starting the cohort, with it (CANCELED): either way, closed.
    closed = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED}
    try:
        async with asyncio.timeout(20):
            while (await cohort.describe()).status not in closed:
                await asyncio.sleep(0.1)
    except TimeoutError:
        events = [e.event_type for e in (await cohort.fetch_history()).events]
        parent = dev_env.client.get_workflow_handle(dispatch_workflow_id(dispatch_id))
        parent_events = [e.event_type for e in (await parent.fetch_history()).events]
        raise AssertionError(f"cohort still open: {events}; dispatch: {parent_events}") from None


@pytest.mark.parametrize(
    ("delivery", "refusal"), [("cohorts", 401), ("per_client", 401), ("per_client", 403)]
)
async def test_refused_credentials_pause_the_dispatch_until_resumed(
    stack: httpx.AsyncClient,
    db: Database,
    simulator: RunningSimulator,
    delivery: str,
    refusal: Literal[401, 403],
) -> None:
    """A 401 means our token is wrong (a 403, our account): the dispatch pauses with the reason
    instead of failing its messages; once the token is fixed, resume sends them all. In both
    shapes: a cohort's batches and each client's own delivery judge the answer alike."""
    api = stack
    clients = 20
    for _ in range(clients):
        await make_client(db)
    simulator.state.set_config(SimulatorConfig(refuse_credentials=refusal))
    dispatch_id = await create(api, delivery=delivery)
    paused = await until(api, dispatch_id, "paused", seconds=20)
    assert paused["status_reason"] is not None and str(refusal) in paused["status_reason"]
    assert paused["messages"]["failed"] == 0
    assert paused["messages"]["pending"] == clients
    # Requests stop with the pause: the refusals counted now are all there will be.
    refused = simulator.state.stats()["by_status"].get(str(refusal), 0)
    assert refused >= 1
    await asyncio.sleep(1.5)
    assert simulator.state.stats()["by_status"].get(str(refusal), 0) == refused

    simulator.state.set_config(SimulatorConfig())
    resumed = await api.post(f"{DISPATCHES}/{dispatch_id}/resume")
    assert (resumed.json()["status"], resumed.json()["status_reason"]) == ("running", None)
    done = await until(api, dispatch_id, "completed")
    assert done["messages"]["sent"] == clients
    assert simulator.state.stats()["unique_accepted"] == clients


async def test_a_retried_command_with_its_idempotency_key_acts_once(
    stack: httpx.AsyncClient, db: Database
) -> None:
    """A pause retried after a timeout, once someone has resumed meanwhile, must not pause the
    dispatch again."""
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=1)
    url = f"{DISPATCHES}/{dispatch_id}"
    key = {"Idempotency-Key": "pause-1"}
    first = await api.post(f"{url}/pause", json={"reason": "check"}, headers=key)
    assert (first.status_code, first.json()["status"]) == (200, "paused")
    assert "Idempotent-Replayed" not in first.headers
    assert (await api.post(f"{url}/resume")).json()["status"] == "running"
    retried = await api.post(f"{url}/pause", json={"reason": "check"}, headers=key)
    assert (retried.status_code, retried.json()["status"]) == (200, "running")
    assert retried.headers["Idempotent-Replayed"] == "true"
    reused = await api.post(f"{url}/cancel", headers=key)
    assert reused.status_code == 422
    assert "different request" in reused.json()["detail"]
    assert (await api.get(url)).json()["status"] == "running"
