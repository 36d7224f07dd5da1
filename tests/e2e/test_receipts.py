"""Delivery receipts end to end: a dispatch of 200 clients sent through the simulator, which posts
its receipts back to the API over HTTP (a share undelivered, duplicates, parts out of order,
some before the send's answer), ends with every message delivered or undelivered exactly as the
gateway decided, counted alike in the statistics, the metrics and the report."""

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.auth import Permission
from core.contracts.dispatch import DispatchInput
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database
from core.models import Message
from core.segments import measure
from core.settings import Settings
from report.figures import gather
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, auth_headers, running_workers, serving, settings_for
from workflows.dispatch import DispatchWorkflow

pytestmark = pytest.mark.slow

CLIENTS = 200
TEXT = "Ваш заказ готов к выдаче в пункте на Тверской. " * 2  # 96 UCS-2 characters: 2 parts


async def test_receipts_decide_every_message_as_the_gateway_did(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    assert measure(TEXT).segments == 2
    s = settings_for(settings, dev_env.client, queues)
    for _ in range(CLIENTS):
        await make_client(db)
    dispatch = await make_dispatch(db, text=TEXT)
    assert dispatch.id is not None
    app = create_app(s)
    async with serving(app) as port:
        token = auth_headers(s, frozenset({Permission.RECEIPTS_WRITE}), subject="gateway")
        simulator.state.set_config(
            SimulatorConfig(
                seed=20,
                receipts_url=f"http://127.0.0.1:{port}/api/v1/receipts",
                receipts_token=token["Authorization"].removeprefix("Bearer "),
                receipt_delay_min_ms=0,
                receipt_delay_max_ms=300,
                undelivered_rate=0.2,
                receipt_duplicate_rate=0.1,
                receipt_before_answer_rate=0.2,
                receipt_batch_size=25,
            )
        )
        async with running_workers(s, dev_env.client, db):
            handle = await dev_env.client.start_workflow(
                DispatchWorkflow.run,
                DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(s)),
                id=dispatch_workflow_id(dispatch.id),
                task_queue=s.temporal_task_queue,
            )
            async with asyncio.timeout(60):
                result = await handle.result()
        assert (result.status, result.messages) == ("completed", CLIENTS)

        async def statuses() -> dict[int, str]:
            async with db.sessions() as session:
                rows = await session.execute(
                    sa.select(Message.id, Message.status).where(Message.dispatch_id == dispatch.id)
                )
                return {int(i): str(status) for i, status in rows}

        # Receipts come up to 300 ms after each send, and those that beat their send's record
        # are applied by the API's loop within a second.
        async with asyncio.timeout(30):
            while {"sent"} & set((found := await statuses()).values()):
                await asyncio.sleep(0.2)
        expected = {}
        for message_id in found:
            decided = simulator.state.receipt_outcome(message_id)
            assert decided is not None, message_id
            expected[message_id] = "delivered" if decided == "delivered" else "undelivered"
        assert found == expected
        stats = simulator.state.stats()
        undelivered = sum(1 for status in found.values() if status == "undelivered")
        assert 20 <= undelivered <= 60, undelivered  # a fifth of 200, seeded
        assert stats["receipts_failed_posts"] == 0, stats

        headers = auth_headers(s)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            counts = (await api.get(f"/api/v1/dispatches/{dispatch.id}/stats")).json()["messages"]
            metrics_text = (await api.get("/metrics")).text
        assert (counts["delivered"], counts["undelivered"], counts["sent"]) == (
            CLIENTS - undelivered,
            undelivered,
            0,
        )
        assert f'mailing_messages{{status="delivered"}} {float(CLIENTS - undelivered)}' in (
            metrics_text
        )
        assert f'mailing_messages{{status="undelivered"}} {float(undelivered)}' in metrics_text
        # Duplicates came, and receipts that beat their send's record waited for it.
        assert 'outcome="duplicate"' in metrics_text
        assert 'outcome="waiting"' in metrics_text
    async with db.sessions() as session:
        figures = await gather(session, day=datetime.now(UTC).date(), timezone="UTC")
    assert figures.totals.get("delivered") == CLIENTS - undelivered
    assert figures.totals.get("undelivered") == undelivered
    async with db.sessions() as session:
        reasons = (
            await session.execute(
                sa.select(Message.last_error).where(
                    Message.dispatch_id == dispatch.id, Message.status == "undelivered"
                )
            )
        ).scalars()
        assert all(
            reason and reason.split(":")[0] in {"undelivered", "expired", "rejected"}
            for reason in reasons
        )
