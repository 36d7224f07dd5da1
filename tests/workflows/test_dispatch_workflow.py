"""The dispatch and delivery workflows on the time-skipping server, with real PostgreSQL and
the simulator over HTTP: hours of waiting pass in seconds."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from core.contracts.dispatch import DispatchInput, DispatchResult
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database
from core.models import Message
from core.settings import Settings
from core.windows import SendWindow, is_open, next_send_instant
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, running_workers, settings_for
from workflows.dispatch import DispatchWorkflow


async def statuses(db: Database, dispatch_id: int) -> dict[int | None, str]:
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(Message.client_id, Message.status).where(Message.dispatch_id == dispatch_id)
        )
        return {client_id: status for client_id, status in rows}


async def sent_times(db: Database, dispatch_id: int) -> dict[int | None, datetime]:
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(Message.client_id, Message.sent_at).where(Message.dispatch_id == dispatch_id)
        )
        return {client_id: sent_at for client_id, sent_at in rows if sent_at is not None}


async def start_dispatch(
    env: WorkflowEnvironment, settings: Settings, dispatch_id: int
) -> WorkflowHandle[DispatchWorkflow, DispatchResult]:
    return await env.client.start_workflow(
        DispatchWorkflow.run,
        DispatchInput(dispatch_id=dispatch_id, send=SendOptions.from_settings(settings)),
        id=dispatch_workflow_id(dispatch_id),
        task_queue=settings.temporal_task_queue,
    )


async def test_window_ten_hours_away_completes_in_seconds(
    time_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    now = await time_env.get_current_time()
    moscow = await make_client(db, timezone="Europe/Moscow")
    tokyo = await make_client(db, timezone="Asia/Tokyo")
    # A two-hour window that opens at a full hour 9-10 hours from now in Moscow; Tokyo is six
    # hours ahead, so the same local window opens there six hours earlier.
    opens_in_moscow = (now + timedelta(hours=10)).astimezone(ZoneInfo("Europe/Moscow"))
    window = (time(opens_in_moscow.hour, 0), time((opens_in_moscow.hour + 2) % 24, 0))
    dispatch = await make_dispatch(db, start_at=now, end_at=now + timedelta(days=2), window=window)
    assert dispatch.id is not None
    s = settings_for(settings, time_env.client, queues)
    async with running_workers(s, time_env.client, db):
        started = datetime.now(UTC)
        handle = await start_dispatch(time_env, s, dispatch.id)
        result = await handle.result()
        elapsed = datetime.now(UTC) - started
    assert result.status == "completed"
    assert result.messages == 2
    assert await statuses(db, dispatch.id) == {moscow.id: "sent", tokyo.id: "sent"}
    stats = simulator.state.stats()
    assert stats["unique_accepted"] == 2
    assert stats["duplicates"] == 0
    send_window = SendWindow(start=window[0], end=window[1])
    sent = await sent_times(db, dispatch.id)
    for client in (moscow, tokyo):
        expected = next_send_instant(
            now=now,
            start_at=now,
            end_at=now + timedelta(days=2),
            window=send_window,
            timezone=client.timezone,
        )
        assert expected is not None
        assert expected <= sent[client.id] < expected + timedelta(minutes=1)
        assert is_open(at=sent[client.id], window=send_window, timezone=client.timezone)
    assert sent[moscow.id] - sent[tokyo.id] > timedelta(hours=5, minutes=59)
    assert sent[moscow.id] - now >= timedelta(hours=9)
    assert elapsed < timedelta(seconds=60)


async def test_future_start_and_filter(
    time_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    now = await time_env.get_current_time()
    vip = await make_client(db, tag="vip", phone="79161234567")
    await make_client(db, tag="regular")
    other_operator = await make_client(db, tag="vip", phone="79031234567")
    dispatch = await make_dispatch(
        db,
        start_at=now + timedelta(days=3),
        end_at=now + timedelta(days=4),
        tags=["vip"],
        operator_codes=["916"],
    )
    assert dispatch.id is not None
    s = settings_for(settings, time_env.client, queues)
    async with running_workers(s, time_env.client, db):
        result = await (await start_dispatch(time_env, s, dispatch.id)).result()
    assert result.messages == 1
    assert await statuses(db, dispatch.id) == {vip.id: "sent"}
    assert other_operator.id not in await statuses(db, dispatch.id)
    assert await time_env.get_current_time() >= now + timedelta(days=3)


async def test_outage_is_ridden_out(
    clock_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    time_env = clock_env
    now = await time_env.get_current_time()
    client = await make_client(db)
    dispatch = await make_dispatch(db, start_at=now, end_at=now + timedelta(days=1))
    assert dispatch.id is not None
    simulator.state.set_config(SimulatorConfig(outage=True))
    s = settings_for(settings, time_env.client, queues)
    async with running_workers(s, time_env.client, db):
        handle = await start_dispatch(time_env, s, dispatch.id)
        # Let a few attempts fail, then bring the remote back.
        while simulator.state.stats()["received"] < 3:
            await time_env.sleep(timedelta(seconds=30))
        async with db.sessions() as session:
            message = (
                await session.execute(sa.select(Message).where(Message.client_id == client.id))
            ).scalar_one()
        assert message.status == "retrying"
        assert message.attempts >= 3
        assert message.last_error and "503" in message.last_error
        simulator.state.set_config(SimulatorConfig())
        result = await handle.result()
    assert result.status == "completed"
    assert await statuses(db, dispatch.id) == {client.id: "sent"}
    assert simulator.state.stats()["unique_accepted"] == 1
