"""The frequency cap end to end: two dispatches to the same clients, started together and sent
by two workers, get each client exactly one message under a cap of 1/24h (the other ends
`capped`); a transactional dispatch then goes to every one of them anyway."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.contracts.dispatch import DispatchInput
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database
from core.models import Dispatch, Message
from core.settings import Settings
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, running_workers, settings_for, target_of
from workflows.dispatch import DispatchWorkflow

pytestmark = pytest.mark.slow

CLIENTS = 50


async def test_a_cap_of_one_lets_one_message_through_per_client(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    # Small batches, so that the two dispatches' batches interleave on the two workers.
    s = settings_for(settings, dev_env.client, queues, frequency_cap="1/24h", send_batch_size=5)
    clients = [await make_client(db) for _ in range(CLIENTS)]
    first, second, confirmation = [await make_dispatch(db, text=t) for t in ("A", "B", "C")]
    async with db.sessions() as session:
        await session.execute(
            sa.update(Dispatch).where(Dispatch.id == confirmation.id).values(transactional=True)
        )
        await session.commit()

    async def run(dispatch: Dispatch) -> str:
        assert dispatch.id is not None
        handle = await dev_env.client.start_workflow(
            DispatchWorkflow.run,
            DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(s)),
            id=dispatch_workflow_id(dispatch.id),
            task_queue=s.temporal_task_queue,
        )
        return (await handle.result()).status

    # A worker of its own connection, as a second process would have.
    other = await Client.connect(target_of(dev_env.client), namespace=dev_env.client.namespace)
    async with running_workers(s, dev_env.client, db), running_workers(s, other, db):
        async with asyncio.timeout(90):
            assert await asyncio.gather(run(first), run(second)) == ["completed"] * 2
            assert await run(confirmation) == "completed"

    async with db.sessions() as session:
        rows = (
            await session.execute(sa.select(Message.dispatch_id, Message.client_id, Message.status))
        ).all()
    capped_pair = Counter(
        (client_id, status)
        for dispatch_id, client_id, status in rows
        if dispatch_id != confirmation.id
    )
    for client in clients:
        assert (capped_pair[(client.id, "sent")], capped_pair[(client.id, "capped")]) == (1, 1)
    assert Counter(status for dispatch_id, _, status in rows if dispatch_id == confirmation.id) == {
        "sent": CLIENTS
    }
    # At the gateway: one message per client of the two, and every confirmation.
    sent_ids = {
        message_id
        for message_id in (await _sent_ids(db))
        if simulator.state.message(message_id) is not None
    }
    assert len(sent_ids) == 2 * CLIENTS
    assert simulator.state.stats()["accepted"] == 2 * CLIENTS


async def _sent_ids(db: Database) -> list[int]:
    async with db.sessions() as session:
        return [int(i) for i in (await session.execute(sa.select(Message.id))).scalars()]


async def test_transactional_is_set_at_creation_only(
    api: httpx.AsyncClient,
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    body = {
        "start_at": later.isoformat(),
        "end_at": (later + timedelta(hours=2)).isoformat(),
        "text": "Ваш код 1234",
        "filter": {"all": True},
        "transactional": True,
    }
    created = await api.post("/api/v1/dispatches", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["transactional"] is True
    plain = await api.post("/api/v1/dispatches", json={**body, "transactional": False})
    assert plain.json()["transactional"] is False
    edit = await api.patch(
        f"/api/v1/dispatches/{created.json()['id']}", json={"transactional": False}
    )
    assert edit.status_code == 422  # creation only: an unknown field of an edit
