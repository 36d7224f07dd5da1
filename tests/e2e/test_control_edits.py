"""Running dispatches changed while they run, on the dev server: the events kept of every
control action, edits of end_at, text and window, a client moving zone, a cancel reaching
per-client deliveries that retry, and the error budget."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.contracts.control import ControlSignal
from core.contracts.shared import delivery_workflow_id, dispatch_workflow_id
from core.db import Database
from core.settings import Settings
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.e2e.test_control import DISPATCHES, create, stack, until, waiting_for_its_window
from tests.factories import make_client
from tests.support import Queues, api_client, running_workers, settings_for

pytestmark = pytest.mark.slow

__all__ = ["stack"]  # the fixture, shared with the control tests


async def at_least(api: httpx.AsyncClient, dispatch_id: int, status: str, count: int) -> None:
    """Until `count` of the dispatch's messages have this status."""
    async with asyncio.timeout(30):
        while (await api.get(f"{DISPATCHES}/{dispatch_id}")).json()["messages"][status] < count:
            await asyncio.sleep(0.2)


def hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


async def messages_of(api: httpx.AsyncClient, dispatch_id: int) -> list[dict]:  # type: ignore[type-arg]
    page = (await api.get(f"{DISPATCHES}/{dispatch_id}/messages")).json()
    return page["items"]  # type: ignore[no-any-return]


async def test_every_control_action_is_an_event_kept_after_delete(
    stack: httpx.AsyncClient, db: Database, dev_env: WorkflowEnvironment
) -> None:
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=2)
    # Pause while the cohort sleeps; resume as a raw signal (the Temporal UI or CLI).
    paused = await api.post(f"{DISPATCHES}/{dispatch_id}/pause", json={"reason": "check text"})
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    handle = dev_env.client.get_workflow_handle(dispatch_workflow_id(dispatch_id))
    await handle.signal("resume", ControlSignal(reason="text checked"))
    await until(api, dispatch_id, "running", seconds=10)
    assert (await api.post(f"{DISPATCHES}/{dispatch_id}/cancel")).status_code == 200
    assert (await api.delete(f"{DISPATCHES}/{dispatch_id}")).status_code == 204

    events = (await api.get(f"{DISPATCHES}/{dispatch_id}/events")).json()
    seen = [(e["action"], e["actor"], e["reason"]) for e in events["items"]]
    assert seen == [
        ("created", "tester", None),
        ("paused", "tester", "check text"),
        ("resumed", "temporal", "text checked"),
        ("cancelled", "tester", None),
        ("deleted", "tester", None),
    ]
    assert events["items"][3]["details"] == {"messages_cancelled": 2}
    assert (await api.get(f"{DISPATCHES}/424242/events")).status_code == 404


async def test_edit_of_window_and_text_reaches_a_sleeping_cohort(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=3)
    waiting = await messages_of(api, dispatch_id)
    assert all(m["waiting_until"] is not None and m["phone"] for m in waiting)
    assert simulator.state.stats()["received"] == 0
    now = datetime.now(UTC)
    edited = await api.patch(
        f"{DISPATCHES}/{dispatch_id}",
        json={
            "text": "Fixed typo",
            "window": {
                "start": hhmm(now - timedelta(hours=1)),
                "end": hhmm(now + timedelta(hours=2)),
            },
        },
    )
    assert edited.status_code == 200, edited.text
    done = await until(api, dispatch_id, "completed", seconds=30)
    assert done["messages"]["sent"] == 3
    for message in await messages_of(api, dispatch_id):
        record = simulator.state.message(message["id"])
        assert record is not None and record["text"] == "Fixed typo"
        assert message["waiting_until"] is None


async def test_earlier_end_at_expires_a_sleeping_cohort_and_later_one_is_kept(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=2)
    url = f"{DISPATCHES}/{dispatch_id}"
    later = datetime.now(UTC) + timedelta(days=2)
    assert (await api.patch(url, json={"end_at": later.isoformat()})).status_code == 200
    assert (await api.get(url)).json()["messages"]["pending"] == 2
    # The window opens in about three hours: an end in one hour leaves no opening.
    earlier = datetime.now(UTC) + timedelta(hours=1)
    assert (await api.patch(url, json={"end_at": earlier.isoformat()})).status_code == 200
    done = await until(api, dispatch_id, "completed", seconds=30)
    assert done["messages"]["expired"] == 2
    assert simulator.state.stats()["received"] == 0
    assert (await api.patch(url, json={"end_at": later.isoformat()})).status_code == 409


async def test_a_client_moving_zone_reaches_its_waiting_message(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    """Both clients wait in the UTC cohort for a window three hours away; one moves to a zone
    three hours ahead, where the window is open now: its message goes, the other waits."""
    api = stack
    dispatch_id = await waiting_for_its_window(api, db, clients=2)
    first, second = sorted(await messages_of(api, dispatch_id), key=lambda m: m["id"])
    moved = await api.patch(
        f"/api/v1/clients/{first['client_id']}", json={"timezone": "Europe/Moscow"}
    )
    assert moved.status_code == 200, moved.text
    await at_least(api, dispatch_id, "sent", 1)
    after = {m["id"]: m for m in await messages_of(api, dispatch_id)}
    assert after[first["id"]]["status"] == "sent"
    assert after[second["id"]]["status"] == "pending"
    assert after[second["id"]]["waiting_until"] is not None
    assert simulator.state.stats()["received"] == 1


async def test_cancel_ends_per_client_deliveries_that_retry(
    stack: httpx.AsyncClient,
    db: Database,
    dev_env: WorkflowEnvironment,
    simulator: RunningSimulator,
) -> None:
    api = stack
    clients = [await make_client(db) for _ in range(5)]
    simulator.state.set_config(SimulatorConfig(outage=True))
    dispatch_id = await create(api, delivery="per_client")
    await at_least(api, dispatch_id, "retrying", 5)
    cancelled = await api.post(f"{DISPATCHES}/{dispatch_id}/cancel", json={"reason": "outage"})
    assert cancelled.json()["messages"]["cancelled"] == 5
    received = simulator.state.stats()["received"]
    # Each delivery waits between attempts (up to minutes); woken, each ends now.
    async with asyncio.timeout(20):
        for client in clients:
            assert client.id is not None
            handle = dev_env.client.get_workflow_handle(
                delivery_workflow_id(dispatch_id, client.id)
            )
            while (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
                await asyncio.sleep(0.2)
    await until(api, dispatch_id, "cancelled")
    # At most an attempt in flight when the cancel came.
    assert simulator.state.stats()["received"] <= received + 5


@pytest.fixture
async def budgeted(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    s = settings_for(
        settings,
        dev_env.client,
        queues,
        send_concurrency=5,
        send_batch_size=50,
        error_budget_share=0.5,
        error_budget_window=20,
    )
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with api_client(app) as api:
            yield api


async def test_error_budget_pauses_a_dispatch_failing_most_sends(
    budgeted: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = budgeted
    for _ in range(60):
        await make_client(db)
    simulator.state.set_config(SimulatorConfig(reject_rate=0.8, seed=7))
    dispatch_id = await create(api)
    paused = await until(api, dispatch_id, "paused", seconds=30)
    assert paused["status_reason"].startswith("error budget spent")
    assert paused["messages"]["pending"] > 0
    events = (await api.get(f"{DISPATCHES}/{dispatch_id}/events")).json()["items"]
    assert (events[-1]["action"], events[-1]["actor"]) == ("paused", "worker")
    # Fixed at the remote, resumed: the rest goes.
    simulator.state.set_config(SimulatorConfig())
    assert (await api.post(f"{DISPATCHES}/{dispatch_id}/resume")).status_code == 200
    done = await until(api, dispatch_id, "completed", seconds=30)
    assert done["messages"]["pending"] == 0
    assert done["messages"]["sent"] + done["messages"]["failed"] == 60


async def test_pause_during_an_outage_holds_every_request_until_resume(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    """The remote is down; the operator pauses: the cohort's probes and the deliveries'
    retries stop. The remote comes back, the operator resumes: everything goes, once."""
    api = stack
    clients = 30
    for _ in range(clients):
        await make_client(db)
    simulator.state.set_config(SimulatorConfig(outage=True))
    dispatch_id = await create(api)
    await at_least(api, dispatch_id, "retrying", 5)
    paused = await api.post(f"{DISPATCHES}/{dispatch_id}/pause", json={"reason": "provider down"})
    assert paused.json()["status"] == "paused"
    await asyncio.sleep(1.0)
    held = simulator.state.stats()["received"]
    await asyncio.sleep(3.0)
    assert simulator.state.stats()["received"] == held
    simulator.state.set_config(SimulatorConfig())
    await asyncio.sleep(1.0)
    assert simulator.state.stats()["received"] == held  # back up, but still paused
    assert (await api.post(f"{DISPATCHES}/{dispatch_id}/resume")).status_code == 200
    done = await until(api, dispatch_id, "completed", seconds=60)
    assert done["messages"]["sent"] == clients
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (clients, 0)


async def test_deleting_a_dispatch_ends_its_sleeping_deliveries(
    stack: httpx.AsyncClient, db: Database, dev_env: WorkflowEnvironment
) -> None:
    """Per-client deliveries asleep until a window hours away: DELETE leaves none running."""
    api = stack
    clients = [await make_client(db, timezone="UTC") for _ in range(3)]
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    dispatch_id = await create(
        api,
        delivery="per_client",
        end_at=(now + timedelta(days=1)).isoformat(),
        window={"start": hhmm(opens), "end": hhmm(opens + timedelta(hours=1))},
    )
    handles = []
    for client in clients:
        assert client.id is not None
        handles.append(
            dev_env.client.get_workflow_handle(delivery_workflow_id(dispatch_id, client.id))
        )
    async with asyncio.timeout(20):
        for handle in handles:
            while True:
                try:
                    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                        break
                except RPCError:
                    pass
                await asyncio.sleep(0.2)
    assert (await api.delete(f"{DISPATCHES}/{dispatch_id}")).status_code == 204
    closed = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED}
    async with asyncio.timeout(20):
        for handle in handles:
            while (await handle.describe()).status not in closed:
                await asyncio.sleep(0.2)
    actions = [
        e["action"] for e in (await api.get(f"{DISPATCHES}/{dispatch_id}/events")).json()["items"]
    ]
    assert actions == ["created", "cancelled", "deleted"]
