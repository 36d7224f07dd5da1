"""Delivery guarantees on the time-skipping server: end time, windows across retries,
permanent failures, continue-as-new without duplicates, and replay."""

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from core.contracts.dispatch import DispatchInput, DispatchResult
from core.contracts.shared import (
    SendOptions,
    cohort_workflow_id,
    delivery_workflow_id,
    dispatch_workflow_id,
)
from core.db import Database
from core.models import Message
from core.settings import Settings
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, RunningWorkers, running_workers, settings_for
from worker import WORKFLOWS
from workflows.dispatch import DispatchWorkflow


@pytest.fixture
async def rig(
    time_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[tuple[Settings, RunningWorkers]]:
    s = settings_for(settings, time_env.client, queues)
    async with running_workers(s, time_env.client, db) as workers:
        yield s, workers


async def start(
    env: WorkflowEnvironment, s: Settings, dispatch_id: int, **send: float
) -> WorkflowHandle[DispatchWorkflow, DispatchResult]:
    return await env.client.start_workflow(
        DispatchWorkflow.run,
        DispatchInput(dispatch_id=dispatch_id, send=replace(SendOptions.from_settings(s), **send)),
        id=dispatch_workflow_id(dispatch_id),
        task_queue=s.temporal_task_queue,
    )


async def messages(db: Database, dispatch_id: int) -> list[Message]:
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(Message).where(Message.dispatch_id == dispatch_id).order_by(Message.id)
        )
        return list(rows.scalars())


def hour_floor(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def test_rejected_message_fails_without_retry(
    time_env: WorkflowEnvironment,
    rig: tuple[Settings, RunningWorkers],
    db: Database,
    simulator: RunningSimulator,
) -> None:
    s, _ = rig
    now = await time_env.get_current_time()
    await make_client(db)
    dispatch = await make_dispatch(db, start_at=now, end_at=now + timedelta(hours=1))
    assert dispatch.id is not None
    simulator.state.set_config(SimulatorConfig(reject_rate=1.0))
    result = await (await start(time_env, s, dispatch.id)).result()
    assert result.status == "completed"
    [message] = await messages(db, dispatch.id)
    assert message.status == "failed"
    assert message.attempts == 1
    assert simulator.state.stats()["received"] == 1


async def test_window_that_never_opens_expires_unsent(
    time_env: WorkflowEnvironment,
    rig: tuple[Settings, RunningWorkers],
    db: Database,
    simulator: RunningSimulator,
) -> None:
    s, _ = rig
    now = await time_env.get_current_time()
    opens = hour_floor(now) + timedelta(hours=3)
    await make_client(db, timezone="UTC")
    dispatch = await make_dispatch(
        db,
        start_at=now,
        end_at=now + timedelta(hours=2),
        window=(opens.time(), (opens + timedelta(hours=1)).time()),
    )
    assert dispatch.id is not None
    result = await (await start(time_env, s, dispatch.id)).result()
    assert result.status == "completed"
    [message] = await messages(db, dispatch.id)
    assert message.status == "expired"
    assert simulator.state.stats()["received"] == 0


async def test_outage_past_end_time_expires_and_stops_sending(
    clock_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    time_env = clock_env
    s = settings_for(settings, time_env.client, queues)
    now = await time_env.get_current_time()
    await make_client(db)
    end_at = now + timedelta(minutes=30)
    dispatch = await make_dispatch(db, start_at=now, end_at=end_at)
    assert dispatch.id is not None
    simulator.state.set_config(SimulatorConfig(outage=True))
    async with running_workers(s, time_env.client, db):
        result = await (await start(time_env, s, dispatch.id)).result()
    assert result.status == "completed"
    [message] = await messages(db, dispatch.id)
    assert message.status == "expired"
    assert message.attempts >= 5
    assert message.last_error is not None and "503" in message.last_error
    received = simulator.state.stats()["received"]
    # Retries back off to at most a minute: about 30 attempts fit in 30 minutes, no more.
    assert 5 <= received <= 40
    await time_env.sleep(timedelta(hours=3))
    assert simulator.state.stats()["received"] == received


async def test_retry_that_leaves_the_window_waits_for_the_next_opening(
    clock_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    time_env = clock_env
    s = settings_for(settings, time_env.client, queues)
    now = await time_env.get_current_time()
    # A one-hour window in UTC that is open now and closes at the next full hour.
    opened = hour_floor(now)
    closes = opened + timedelta(hours=1)
    await make_client(db, timezone="UTC")
    dispatch = await make_dispatch(
        db,
        start_at=now,
        end_at=now + timedelta(days=3),
        window=(opened.time(), closes.time()),
    )
    assert dispatch.id is not None
    simulator.state.set_config(SimulatorConfig(outage=True))
    async with running_workers(s, time_env.client, db):
        handle = await start(time_env, s, dispatch.id)
        while await time_env.get_current_time() < closes + timedelta(hours=2):
            await time_env.sleep(timedelta(minutes=20))
        failed_attempts = simulator.state.stats()["received"]
        assert failed_attempts >= 1
        # The remote is back, but the window is closed: nothing goes until it reopens.
        simulator.state.set_config(SimulatorConfig())
        await time_env.sleep(timedelta(hours=10))
        assert simulator.state.stats()["accepted"] == 0
        result = await handle.result()
    assert result.status == "completed"
    [message] = await messages(db, dispatch.id)
    assert message.status == "sent"
    assert message.sent_at is not None
    reopened = opened + timedelta(days=1)
    assert reopened <= message.sent_at < reopened + timedelta(minutes=1)
    assert simulator.state.stats()["received"] == failed_attempts + 1


async def test_cohorts_continue_as_new_and_send_each_message_once(
    clock_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    time_env = clock_env
    s = settings_for(settings, time_env.client, queues)
    now = await time_env.get_current_time()
    for _ in range(30):
        await make_client(db)
    dispatch = await make_dispatch(db, start_at=now, end_at=now + timedelta(hours=2))
    assert dispatch.id is not None
    async with running_workers(s, time_env.client, db):
        # Pages of 4 and batches of 3, and runs cut after 25 events: the dispatch and its cohort
        # both continue as new several times.
        handle = await start(
            time_env, s, dispatch.id, layout_page_size=4, batch_size=3, history_limit=25
        )
        result = await handle.result()
    assert (result.status, result.messages) == ("completed", 30)
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (30, 0)
    assert {m.status for m in await messages(db, dispatch.id)} == {"sent"}
    assert {m.cohort for m in await messages(db, dispatch.id)} == {"all"}
    cohort = time_env.client.get_workflow_handle(cohort_workflow_id(dispatch.id, "all"))
    description = await cohort.describe()
    first_cohort_run = await time_env.client.get_workflow_handle(
        cohort.id, run_id=description.raw_description.workflow_execution_info.first_run_id
    ).fetch_history()
    assert (
        first_cohort_run.events[-1].event_type
        == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )
    first_run = await time_env.client.get_workflow_handle(
        handle.id, run_id=handle.first_execution_run_id
    ).fetch_history()
    assert (
        first_run.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )
    replayer = Replayer(workflows=WORKFLOWS)
    await replayer.replay_workflow(first_run)
    await replayer.replay_workflow(first_cohort_run)
    await replayer.replay_workflow(await cohort.fetch_history())


async def test_continue_as_new_starts_each_delivery_once(
    clock_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    # Its own server: on the shared one, abandoned children of continued-as-new runs were
    # seen to stop time from skipping for later tests (a quirk of the test server).
    time_env = clock_env
    s = settings_for(settings, time_env.client, queues)
    async with running_workers(s, time_env.client, db):
        await _continue_as_new_once(time_env, s, db, simulator)


async def _continue_as_new_once(
    time_env: WorkflowEnvironment, s: Settings, db: Database, simulator: RunningSimulator
) -> None:
    now = await time_env.get_current_time()
    clients = [await make_client(db) for _ in range(25)]
    dispatch = await make_dispatch(
        db, start_at=now, end_at=now + timedelta(hours=2), delivery="per_client"
    )
    assert dispatch.id is not None
    handle = await start(time_env, s, dispatch.id, page_size=4, children_per_run=8)
    result = await handle.result()
    assert (result.status, result.messages) == ("completed", 25)
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (25, 0)
    assert {m.status for m in await messages(db, dispatch.id)} == {"sent"}
    # The first run handed over to a new one: the audience never sat in one history.
    first_run = await time_env.client.get_workflow_handle(
        handle.id, run_id=handle.first_execution_run_id
    ).fetch_history()
    assert (
        first_run.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )

    # The whole workflow once more, as after a reset: every delivery is refused as already
    # run, nothing is sent again.
    again = await (
        await time_env.client.start_workflow(
            DispatchWorkflow.run,
            DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(s)),
            id=dispatch_workflow_id(dispatch.id) + "-again",
            task_queue=s.temporal_task_queue,
        )
    ).result()
    assert again.messages == 25
    assert simulator.state.stats()["received"] == 25

    # The recorded histories replay on today's code: no non-determinism.
    replayer = Replayer(workflows=WORKFLOWS)
    await replayer.replay_workflow(first_run)
    child = time_env.client.get_workflow_handle(
        delivery_workflow_id(dispatch.id, clients[0].id or 0)
    )
    await replayer.replay_workflow(await child.fetch_history())


async def test_dispatch_started_after_its_end_sends_nothing(
    time_env: WorkflowEnvironment,
    rig: tuple[Settings, RunningWorkers],
    db: Database,
    simulator: RunningSimulator,
) -> None:
    s, _ = rig
    now = await time_env.get_current_time()
    for _ in range(3):
        await make_client(db)
    dispatch = await make_dispatch(
        db, start_at=now - timedelta(hours=2), end_at=now - timedelta(hours=1)
    )
    assert dispatch.id is not None
    result = await (await start(time_env, s, dispatch.id)).result()
    assert result.messages == 3
    assert {m.status for m in await messages(db, dispatch.id)} == {"expired"}
    assert simulator.state.stats()["received"] == 0


async def test_cohort_sleeps_through_a_closed_window_and_sends_at_the_next_opening(
    clock_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    """The remote is down while the window is open; the batch's breaker stops it, the cohort
    backs off, the window closes, and the cohort sleeps until it reopens: nothing is sent in
    between, even once the remote is back, and the cohort sends its messages at the opening."""
    time_env = clock_env
    # One request at a time, the breaker opens at the first failure, and probes come ten
    # minutes apart: each probe hands one message off, the others stay in the cohort.
    s = settings_for(settings, time_env.client, queues, send_concurrency=1)
    now = await time_env.get_current_time()
    opened = hour_floor(now)
    closes = opened + timedelta(hours=1)
    clients = 10
    for _ in range(clients):
        await make_client(db, timezone="UTC")
    dispatch = await make_dispatch(
        db,
        start_at=now,
        end_at=now + timedelta(days=3),
        window=(opened.time(), closes.time()),
    )
    assert dispatch.id is not None
    simulator.state.set_config(SimulatorConfig(outage=True))
    async with running_workers(s, time_env.client, db):
        handle = await start(
            time_env,
            s,
            dispatch.id,
            breaker_failures=1,
            retry_initial_seconds=600,
            retry_max_seconds=3600,
        )
        while await time_env.get_current_time() < closes + timedelta(hours=2):
            await time_env.sleep(timedelta(minutes=20))
        assert simulator.state.stats()["accepted"] == 0
        stored = await messages(db, dispatch.id)
        in_cohort = [m for m in stored if m.sender == "cohort"]
        handed_off = [m for m in stored if m.sender == "delivery"]
        assert in_cohort and handed_off, stored
        assert {(m.status, m.attempts) for m in in_cohort} == {("pending", 0)}
        assert {m.status for m in handed_off} == {"retrying"}
        simulator.state.set_config(SimulatorConfig())
        await time_env.sleep(timedelta(hours=10))
        assert simulator.state.stats()["accepted"] == 0
        result = await handle.result()
    assert (result.status, result.messages) == ("completed", clients)
    reopened = opened + timedelta(days=1)
    stored = await messages(db, dispatch.id)
    assert {m.status for m in stored} == {"sent"}
    for message in stored:
        assert message.sent_at is not None
        assert reopened <= message.sent_at < reopened + timedelta(minutes=1)
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (clients, 0)
