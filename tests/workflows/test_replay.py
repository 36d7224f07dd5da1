"""Workflow code never breaks running workflows: histories recorded from earlier code replay on
today's workers without non-determinism.

`histories/` holds JSON histories (`temporal workflow show --output json`, or
`WorkflowHistory.to_json()`), each named after the code that recorded it. Some are complete, some
stop mid-way (sleeping until start, waiting for a window): a worker deployed over running
workflows resumes them from exactly such histories. Record new ones from the code in force
before every change of workflow code, and keep the old ones.
"""

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from core.contracts.dispatch import DispatchInput, DispatchResult
from core.contracts.shared import SendOptions, delivery_workflow_id, dispatch_workflow_id
from core.db import Database
from core.models import Message
from core.settings import Settings
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, running_workers, settings_for
from worker import WORKFLOWS

HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent / "histories").glob("*.json"))
}


def test_histories_are_recorded() -> None:
    assert len(HISTORIES) >= 6


@pytest.mark.parametrize("name", list(HISTORIES))
async def test_recorded_history_replays_on_todays_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, HISTORIES[name])
    await Replayer(workflows=WORKFLOWS).replay_workflow(history)


async def test_dispatch_of_the_first_shape_finishes_on_todays_worker(
    time_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    """A dispatch started before the upgrade (type "DispatchWorkflow", waiting for a client's
    window) runs to the end on today's worker, in its own shape."""
    now = await time_env.get_current_time()
    opens = (now + timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    client = await make_client(db, timezone="UTC")
    dispatch = await make_dispatch(
        db,
        start_at=now,
        end_at=now + timedelta(days=1),
        window=(opens.time(), (opens + timedelta(hours=1)).time()),
        delivery="per_client",
    )
    assert dispatch.id is not None and client.id is not None
    s = settings_for(settings, time_env.client, queues)
    async with running_workers(s, time_env.client, db):
        handle = await time_env.client.start_workflow(
            "DispatchWorkflow",
            DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(s)),
            id=dispatch_workflow_id(dispatch.id),
            task_queue=s.temporal_task_queue,
            result_type=DispatchResult,
        )
        result = await handle.result()
    assert (result.status, result.messages) == ("completed", 1)
    child = await time_env.client.get_workflow_handle(
        delivery_workflow_id(dispatch.id, client.id)
    ).describe()
    assert child.workflow_type == "DeliveryWorkflow"
    async with db.sessions() as session:
        message = (
            await session.execute(sa.select(Message).where(Message.dispatch_id == dispatch.id))
        ).scalar_one()
    assert message.status == "sent" and message.sent_at is not None
    assert opens <= message.sent_at < opens + timedelta(minutes=1)
    assert simulator.state.stats()["unique_accepted"] == 1
