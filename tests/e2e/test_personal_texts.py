"""Personal texts end to end: a dispatch whose text names client attributes, sent through a real
worker to the simulator over HTTP. Each client's rendered text is what the gateway receives and
what its message records, with its own segments; an attribute changed before the send is the
one that goes; a client lacking a key without a default gets nothing and ends `unrendered`."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.contracts.dispatch import DispatchInput
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database
from core.models import Client, Message
from core.segments import measure
from core.settings import Settings
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, api_client, running_workers, settings_for
from workflows.dispatch import DispatchWorkflow

pytestmark = pytest.mark.slow

TEXT = 'Здравствуйте, {{ name | default("друг") }}! Ваш заказ {{ order }} готов к выдаче.'
LONG_NAME = "Александра-Виктория Константиновна"


def rendered(name: str, order: str) -> str:
    return f"Здравствуйте, {name}! Ваш заказ {order} готов к выдаче."


async def test_each_client_gets_its_own_text(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    s = settings_for(settings, dev_env.client, queues)
    named = await make_client(db, attributes={"name": "Анна", "order": "1234"})
    unnamed = await make_client(db, attributes={"order": "55"})
    long = await make_client(db, attributes={"name": LONG_NAME, "order": "7"})
    lacking = await make_client(db, attributes={"name": "Пётр"})
    changed = await make_client(db, attributes={"name": "Олег", "order": "1"})
    expected = {
        named.id: rendered("Анна", "1234"),
        unnamed.id: rendered("друг", "55"),
        long.id: rendered(LONG_NAME, "7"),
        changed.id: rendered("Олег", "2"),
    }
    assert [measure(expected[c.id]).segments for c in (named, long)] == [1, 2]
    dispatch = await make_dispatch(db, text=TEXT, start_at=datetime.now(UTC) + timedelta(seconds=2))
    assert dispatch.id is not None
    # After the dispatch is created and before it sends: the new value is the one that goes.
    async with db.sessions() as session:
        await session.execute(
            sa.update(Client)
            .where(Client.id == changed.id)
            .values(attributes={"name": "Олег", "order": "2"})
        )
        await session.commit()
    async with running_workers(s, dev_env.client, db):
        handle = await dev_env.client.start_workflow(
            DispatchWorkflow.run,
            DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(s)),
            id=dispatch_workflow_id(dispatch.id),
            task_queue=s.temporal_task_queue,
        )
        async with asyncio.timeout(60):
            result = await handle.result()
    assert (result.status, result.messages) == ("completed", 5)

    async with db.sessions() as session:
        messages = {
            m.client_id: m
            for m in (
                await session.execute(sa.select(Message).where(Message.dispatch_id == dispatch.id))
            ).scalars()
        }
    for client_id, text in expected.items():
        message = messages[client_id]
        assert message.id is not None
        assert (message.status, message.text) == ("sent", text)
        assert message.segments == measure(text).segments
        received = simulator.state.message(message.id)
        assert received is not None and received["text"] == text
    skipped = messages[lacking.id]
    assert skipped.status == "unrendered"
    assert skipped.last_error is not None and "`order`" in skipped.last_error
    assert skipped.id is not None and simulator.state.message(skipped.id) is None

    app = create_app(s)
    async with app.router.lifespan_context(app), api_client(app) as api:
        stats = (await api.get(f"/api/v1/dispatches/{dispatch.id}/stats")).json()
        page = (await api.get(f"/api/v1/dispatches/{dispatch.id}/messages")).json()
    assert (stats["messages"]["sent"], stats["messages"]["unrendered"]) == (4, 1), stats
    texts = {item["client_id"]: item["text"] for item in page["items"]}
    assert texts[long.id] == expected[long.id]
    assert texts[lacking.id] == TEXT  # nothing went: the dispatch's text as it stands
