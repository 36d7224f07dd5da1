"""The rate cap counts messages across worker processes: two `worker.py` processes send one
dispatch's cohorts in batches, and together they stay under SEND_RATE_PER_SECOND."""

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from core.contracts.dispatch import DispatchInput
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database
from core.models import Message
from core.settings import Settings
from devstack.processes import WorkerProcess, service_env
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, settings_for
from workflows.dispatch import DispatchWorkflow

pytestmark = pytest.mark.slow

RATE = 20.0
CLIENTS = 90
ZONES = ["UTC", "Europe/Moscow", "Asia/Tokyo"]


@contextlib.contextmanager
def worker_processes(s: Settings, logs: list[Path]) -> Iterator[list[WorkerProcess]]:
    env = service_env(s, SEND_CONCURRENCY="10", SEND_RATE_PER_SECOND=str(RATE), LOG_LEVEL="INFO")
    workers = [WorkerProcess(env, log_file) for log_file in logs]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def window_open_everywhere(now: datetime) -> tuple[time, time]:
    """A local window open now in UTC, UTC+3 and UTC+9: from an hour ago in UTC to ten
    hours ahead (local times; the window crosses midnight where it must)."""
    start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=11)).time().replace(second=0, microsecond=0)
    return start, end


async def test_two_workers_share_the_rate_cap(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    tmp_path: Path,
) -> None:
    s = settings_for(settings, dev_env.client, queues, send_batch_size=10)
    for index in range(CLIENTS):
        await make_client(db, timezone=ZONES[index % len(ZONES)])
    now = datetime.now(UTC)
    dispatch = await make_dispatch(
        db, start_at=now, end_at=now + timedelta(hours=1), window=window_open_everywhere(now)
    )
    assert dispatch.id is not None
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with worker_processes(s, logs) as workers:
        handle = await dev_env.client.start_workflow(
            DispatchWorkflow.run,
            DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(s)),
            id=dispatch_workflow_id(dispatch.id),
            task_queue=s.temporal_task_queue,
        )
        async with asyncio.timeout(60):
            result = await handle.result()
    assert (result.status, result.messages) == ("completed", CLIENTS)
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (CLIENTS, 0)

    async with db.sessions() as session:
        ids = (
            await session.execute(sa.select(Message.id).where(Message.dispatch_id == dispatch.id))
        ).scalars()
        moments = sorted(
            datetime.fromisoformat(record["first_accepted_at"]).timestamp()
            for record in (simulator.state.message(message_id) for message_id in ids)
            if record is not None
        )
    # 90 sends at 20/s take 4.5 s, less the first reservation of each process.
    spread = moments[-1] - moments[0]
    assert spread >= (CLIENTS - 2 * RATE * 0.1) / RATE * 0.9, spread
    for index, moment in enumerate(moments):
        in_one_second = sum(1 for m in moments[index:] if m < moment + 1.0)
        assert in_one_second <= RATE + 2 * RATE * 0.1 + 1, (index, in_one_second)
    # Both processes sent batches: the cap held across them, not within one.
    for worker in workers:
        assert "batch of cohort" in worker.log(), worker.log()[-3000:]
