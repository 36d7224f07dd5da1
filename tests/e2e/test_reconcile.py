"""Reconciliation on the dev server: the states a crash between a database step and a Temporal
step leaves behind are found and repaired, idempotently."""

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core.contracts.shared import cohort_workflow_id, dispatch_workflow_id
from core.db import Database
from core.models import dispatch_t, message_t
from core.settings import Settings
from tests.conftest import RunningSimulator
from tests.e2e.test_control import DISPATCHES, create, stack, until, waiting_for_its_window
from tests.factories import make_client, make_dispatch
from tests.support import Queues, settings_for
from upkeep.reconcile import Reconciler

pytestmark = pytest.mark.slow

__all__ = ["stack"]

CLOSED = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED}


async def age(db: Database, dispatch_id: int) -> None:
    """Older than the grace a create gets to start its workflow."""
    async with db.sessions() as session:
        await session.execute(
            sa.update(dispatch_t)
            .where(dispatch_t.c.id == dispatch_id)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        await session.commit()


async def test_reconciliation_starts_missing_workflows_and_cancels_orphans(
    stack: httpx.AsyncClient,
    db: Database,
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    simulator: RunningSimulator,
) -> None:
    api = stack
    temporal = dev_env.client
    # The API killed after committing a create, before starting its workflow.
    await make_client(db, timezone="UTC")
    never_started = await make_dispatch(db)
    assert never_started.id is not None
    await age(db, never_started.id)
    # A workflow terminated from the Temporal UI while its dispatch waits for its start.
    later = datetime.now(UTC) + timedelta(days=1)
    terminated = await create(
        api, start_at=later.isoformat(), end_at=(later + timedelta(hours=1)).isoformat()
    )
    await temporal.get_workflow_handle(dispatch_workflow_id(terminated)).terminate("by hand")
    await age(db, terminated)
    # The API killed after committing a delete, before its workflows heard of it.
    deleted = await waiting_for_its_window(api, db, clients=1)
    async with db.sessions() as session:
        await session.execute(sa.delete(dispatch_t).where(dispatch_t.c.id == deleted))
        await session.commit()
    # A young row is left alone: its create may be starting the workflow right now.
    young = await make_dispatch(db, start_at=later)

    s = settings_for(settings, temporal, queues)
    reconciler = Reconciler(sessions=db.sessions, temporal=temporal, settings=s)
    orphans = {dispatch_workflow_id(deleted), cohort_workflow_id(deleted, "UTC")}
    async with asyncio.timeout(60):
        repairs = await reconciler.reconcile()
        # Visibility lags a moment behind the workflows it lists.
        while not orphans <= set(repairs.cancelled):
            await asyncio.sleep(0.5)
            repairs.cancelled += (await reconciler.reconcile()).cancelled
    assert sorted(repairs.started) == sorted([never_started.id, terminated])
    assert young.id not in repairs.started

    done = await until(api, never_started.id, "completed", seconds=30)
    assert done["messages"]["sent"] == done["messages"]["total"] == 2  # both clients
    restarted = temporal.get_workflow_handle(dispatch_workflow_id(terminated))
    assert (await restarted.describe()).status == WorkflowExecutionStatus.RUNNING
    async with asyncio.timeout(20):
        for workflow_id in orphans:
            handle = temporal.get_workflow_handle(workflow_id)
            while (await handle.describe()).status not in CLOSED:
                await asyncio.sleep(0.2)
    # Idempotent: a second round finds nothing to repair.
    again = await reconciler.reconcile()
    assert again.started == []
    assert not orphans & set(again.cancelled)
    assert (await api.get(f"{DISPATCHES}/{terminated}")).json()["status"] == "scheduled"


async def test_a_row_left_running_behind_its_completed_workflow_is_completed(
    stack: httpx.AsyncClient,
    db: Database,
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    simulator: RunningSimulator,
) -> None:
    """What a resume did to a dispatch that had completed while paused, before
    `dispatch-completes-when-paused` (found by the soak run): its row moved to running with no
    workflow left to finish it. Reconciliation completes it; with a message still open it
    leaves it alone."""
    api = stack
    await make_client(db, timezone="UTC")
    revived = await create(api)
    await until(api, revived, "completed", seconds=30)
    stranded = await create(api)
    await until(api, stranded, "completed", seconds=30)
    async with db.sessions() as session:
        await session.execute(
            sa.update(dispatch_t)
            .where(dispatch_t.c.id.in_([revived, stranded]))
            .values(status="running")
        )
        await session.execute(
            sa.update(message_t).where(message_t.c.dispatch_id == stranded).values(status="pending")
        )
        await session.commit()
    await age(db, revived)
    await age(db, stranded)

    s = settings_for(settings, dev_env.client, queues)
    reconciler = Reconciler(sessions=db.sessions, temporal=dev_env.client, settings=s)
    repairs = await reconciler.reconcile()
    assert repairs.completed == [revived]
    assert revived not in repairs.started and stranded not in repairs.started
    assert (await api.get(f"{DISPATCHES}/{revived}")).json()["status"] == "completed"
    assert (await api.get(f"{DISPATCHES}/{stranded}")).json()["status"] == "running"
    again = await reconciler.reconcile()
    assert again.completed == [] and again.started == []
