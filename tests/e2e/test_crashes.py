"""Crash guarantees on real processes: kill -9 the worker, the Temporal server or PostgreSQL in
the middle of a dispatch, start it again, and every message still ends sent, each one accepted
by the remote, a second time only if its request was in flight at the crash (same msgId).

Each test has its own PostgreSQL (pgserver), its own `temporal server start-dev` over a SQLite
file and the worker as a subprocess, so that killing any of them touches nothing else of the
session; only the in-process simulator is shared (its counters are reset per test).
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from sqlmodel import col
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import TemporalError
from temporalio.service import RPCError

from core.contracts.dispatch import DispatchInput, DispatchResult
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database, migrate
from core.models import Message, MessageStatus
from core.settings import Settings
from devstack.processes import CrashablePostgres, TemporalServer, WorkerProcess, service_env
from simulator.app import SimulatorConfig
from tests.conftest import TOKEN, RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import new_queues
from workflows.dispatch import DispatchWorkflow

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

CLIENTS = 150
# Sends in flight per worker: the most a kill of the worker can leave half-done.
SEND_CONCURRENCY = 5
# Small pages and runs, so that the crashes also meet continue-as-new of the dispatch; small
# batches, so that a crash lands between batches as well as inside one.
PAGE_SIZE = 20
CHILDREN_PER_RUN = 40
BATCH_SIZE = 20
# Dispatch and cohort runs continue as new after this many events.
HISTORY_LIMIT = 60
# With 5 sends of 50 ms at a time, 150 messages take a few seconds: kills land mid-way.
LATENCY_MS = 50
KILL_AFTER_ACCEPTED = 30
# After a kill, the requests already on the wire still get their answers within this.
IN_FLIGHT_GRACE = 1.0
# How long the Temporal server or PostgreSQL stays down.
OUTAGE_SECONDS = 2.0
DISPATCH_TIMEOUT = 120.0
# A worker stopped by SIGTERM exits within its grace (WORKER_SHUTDOWN_SECONDS) and this much.
SHUTDOWN_BOUND = 40.0
DATABASE = "mailing_crash"


def _kill_leftovers(marker: str) -> None:
    """Kills any process whose command line names this test's directory (a postgres started
    by a restart that failed half-way, say): nothing outlives the test."""
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == os.getpid():
            continue
        if any(marker in part for part in process.info["cmdline"] or []):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@dataclass
class Rig:
    tmp: Path
    postgres: CrashablePostgres
    temporal: TemporalServer
    client: Client
    settings: Settings
    db: Database
    simulator: RunningSimulator
    workers: list[WorkerProcess] = dataclasses.field(default_factory=list)

    def worker_env(self) -> dict[str, str]:
        return service_env(self.settings, LOG_LEVEL="INFO")

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.worker_env(), self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def logs(self) -> str:
        """The tails of every log, for a failure's message."""
        parts = [f"--- {w.log_file.name}\n{w.log()[-3000:]}" for w in self.workers]
        temporal = self.temporal.log_file.read_text(errors="replace")[-2000:]
        return "\n".join([*parts, f"--- temporal\n{temporal}"])


async def connect_when_ready(address: str) -> Client:
    """A client of the server once its namespace answers (the port opens earlier)."""
    async with asyncio.timeout(60):
        while True:
            try:
                client = await Client.connect(address)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace="default")
                )
                return client
            except (RuntimeError, RPCError):
                await asyncio.sleep(0.2)


@pytest.fixture
async def rig(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Rig]:
    # Blocking starts run in threads: the simulator serves from this event loop.
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.callback(_kill_leftovers, str(tmp_path))
        cleanup.callback(simulator.state.set_config, SimulatorConfig())
        (tmp_path / "pg").mkdir()
        postgres = await asyncio.to_thread(CrashablePostgres, tmp_path / "pg" / "data")
        cleanup.push_async_callback(asyncio.to_thread, postgres.stop)
        await asyncio.to_thread(postgres.server.ensure_database, DATABASE)
        await asyncio.to_thread(migrate, postgres.url(DATABASE))

        temporal = TemporalServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
        cleanup.push_async_callback(asyncio.to_thread, temporal.stop)
        await asyncio.to_thread(temporal.start)
        client = await connect_when_ready(temporal.address)

        queues = new_queues()
        settings = Settings(
            environment="test",
            database_url=postgres.url(DATABASE),
            temporal_address=temporal.address,
            temporal_task_queue=queues.main,
            temporal_send_task_queue=queues.send,
            send_api_url=simulator.base_url,
            send_api_token=TOKEN,
            send_concurrency=SEND_CONCURRENCY,
            # The attempt's start-to-close is this + 5 s: a send lost with its worker is
            # retried after about 7 s.
            send_timeout_seconds=2.0,
            send_retry_initial_seconds=0.5,
            send_retry_max_seconds=2.0,
            audience_page_size=PAGE_SIZE,
            send_batch_size=BATCH_SIZE,
            # A restarted worker must not wait for its predecessor's metrics ports.
            worker_metrics_port=0,
            worker_sdk_metrics_port=0,
            _env_file=None,
        )
        db = Database(settings)
        cleanup.push_async_callback(db.dispose)
        simulator.state.set_config(SimulatorConfig(latency_ms=LATENCY_MS))

        rig = Rig(tmp_path, postgres, temporal, client, settings, db, simulator)
        cleanup.push_async_callback(asyncio.to_thread, rig.stop_workers)
        yield rig


@dataclass
class DispatchRun:
    dispatch_id: int
    phones: dict[int, str]  # client id -> phone
    handle: WorkflowHandle[DispatchWorkflow, DispatchResult]


async def begin_dispatch(rig: Rig, delivery: str = "cohorts", **send: Any) -> DispatchRun:
    """CLIENTS clients, a dispatch to all of them starting now, and its workflow started
    (`send`: SendOptions fields to change)."""
    phones: dict[int, str] = {}
    for _ in range(CLIENTS):
        client = await make_client(rig.db)
        assert client.id is not None
        phones[client.id] = client.phone
    dispatch = await make_dispatch(rig.db, text="Crash test", delivery=delivery)
    assert dispatch.id is not None
    send_options = dataclasses.replace(
        SendOptions.from_settings(rig.settings),
        children_per_run=CHILDREN_PER_RUN,
        layout_page_size=PAGE_SIZE,
        history_limit=HISTORY_LIMIT,
    )
    send_options = dataclasses.replace(send_options, **send)
    handle = await rig.client.start_workflow(
        DispatchWorkflow.run,
        DispatchInput(dispatch_id=dispatch.id, send=send_options),
        id=dispatch_workflow_id(dispatch.id),
        task_queue=rig.settings.temporal_task_queue,
    )
    return DispatchRun(dispatch.id, phones, handle)


async def wait_for_accepted(rig: Rig, count: int) -> None:
    """Until the remote has accepted `count` sends: the moment to crash something."""
    try:
        async with asyncio.timeout(60):
            while rig.simulator.state.accepted < count:
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{count} sends never came\n{rig.logs()}") from None


async def wait_for_result(rig: Rig, run: DispatchRun) -> DispatchResult:
    """The dispatch's result, asking again across the outages of the server."""
    try:
        async with asyncio.timeout(DISPATCH_TIMEOUT):
            while True:
                try:
                    return await run.handle.result()
                except RPCError:
                    await asyncio.sleep(0.5)
    except TimeoutError:
        statuses = await status_counts(rig.db, run.dispatch_id)
        # The latest run's phase tells a stuck audience from deliveries never awaited to the end.
        latest = rig.client.get_workflow_handle(dispatch_workflow_id(run.dispatch_id))
        try:
            progress: object = await latest.query(
                DispatchWorkflow.progress, rpc_timeout=timedelta(seconds=5)
            )
        except TemporalError as error:
            progress = error
        raise AssertionError(
            f"dispatch not done in {DISPATCH_TIMEOUT}s: messages {statuses}, "
            f"workflow {progress}, remote {rig.simulator.state.stats()}\n{rig.logs()}"
        ) from None


async def status_counts(db: Database, dispatch_id: int) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(col(Message.status), sa.func.count())
            .where(col(Message.dispatch_id) == dispatch_id)
            .group_by(col(Message.status))
        )
        return {status: count for status, count in rows}


async def sent_ids(db: Database, dispatch_id: int) -> set[int]:
    """Messages the database has as sent: no later attempt sends them again."""
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(col(Message.id)).where(
                col(Message.dispatch_id) == dispatch_id, col(Message.status) == MessageStatus.SENT
            )
        )
        return {message_id for message_id in rows.scalars() if message_id is not None}


def accepted_ids(simulator: RunningSimulator) -> set[int]:
    return {msg_id for msg_id, record in simulator.state.messages.items() if record[1] > 0}


def duplicated_ids(simulator: RunningSimulator) -> set[int]:
    return {msg_id for msg_id, record in simulator.state.messages.items() if record[1] > 1}


async def assert_each_message_sent(rig: Rig, run: DispatchRun, result: DispatchResult) -> None:
    """Every client's message is sent, and the remote accepted each, under its own id."""
    assert result.status == "completed"
    assert result.messages == CLIENTS
    async with rig.db.sessions() as session:
        rows = (
            await session.execute(
                sa.select(col(Message.id), col(Message.client_id), col(Message.status)).where(
                    col(Message.dispatch_id) == run.dispatch_id
                )
            )
        ).all()
    assert len(rows) == CLIENTS
    assert {row.client_id for row in rows} == set(run.phones)
    assert {row.status for row in rows} == {MessageStatus.SENT}

    state = rig.simulator.state
    stats = state.stats()
    assert stats["unique_accepted"] == CLIENTS, stats
    assert stats["by_outcome"] == {"ok": stats["accepted"]}, stats
    # Nothing reached the remote but our messages, each to its own client's phone.
    assert set(state.messages) == {row.id for row in rows}
    for row in rows:
        record = state.message(row.id)
        assert record is not None
        assert record["phone"] == int(run.phones[row.client_id])
        assert 1 <= record["accepted"] <= 2, record
    assert stats["duplicates"] == len(duplicated_ids(rig.simulator))


def note(rig: Rig, event: str) -> None:
    """One line of the crash's timeline (shown with --log-cli-level=INFO)."""
    log.info("%s: remote %s", event, rig.simulator.state.stats())


async def test_worker_killed_mid_dispatch_resends_only_what_was_in_flight(rig: Rig) -> None:
    worker = rig.start_worker()
    run = await begin_dispatch(rig)
    await wait_for_accepted(rig, KILL_AFTER_ACCEPTED)
    await asyncio.to_thread(worker.kill)
    note(rig, "worker killed")
    # The dead worker's requests still get their answers; then nothing changes until the
    # restart: what the remote accepted and the database does not have as sent was in flight.
    await asyncio.sleep(IN_FLIGHT_GRACE)
    assert rig.simulator.state.stats()["unique_accepted"] < CLIENTS, "the kill came too late"
    in_flight = accepted_ids(rig.simulator) - await sent_ids(rig.db, run.dispatch_id)
    assert len(in_flight) <= SEND_CONCURRENCY

    rig.start_worker()
    note(rig, f"worker started again; {len(in_flight)} sends were in flight")
    result = await wait_for_result(rig, run)
    note(rig, "dispatch completed")

    await assert_each_message_sent(rig, run, result)
    # Exactly those are sent again, under the same msgId; nothing else twice.
    assert duplicated_ids(rig.simulator) == in_flight


async def test_temporal_server_killed_mid_dispatch(rig: Rig) -> None:
    worker = rig.start_worker()
    run = await begin_dispatch(rig)
    await wait_for_accepted(rig, KILL_AFTER_ACCEPTED)
    sent_before = await sent_ids(rig.db, run.dispatch_id)
    await asyncio.to_thread(rig.temporal.kill)
    note(rig, "temporal killed")
    await asyncio.sleep(OUTAGE_SECONDS)
    assert rig.simulator.state.stats()["unique_accepted"] < CLIENTS, "the kill came too late"
    # A send can be repeated only if the remote had it and the database did not say sent.
    suspects = accepted_ids(rig.simulator) - sent_before
    await asyncio.to_thread(rig.temporal.start)
    note(rig, "temporal started again")

    result = await wait_for_result(rig, run)
    note(rig, "dispatch completed")

    await assert_each_message_sent(rig, run, result)
    assert worker.alive, "the worker should have reconnected by itself"
    assert len(rig.workers) == 1
    duplicated = duplicated_ids(rig.simulator)
    assert duplicated <= suspects
    assert len(duplicated) <= SEND_CONCURRENCY


async def test_postgres_killed_mid_dispatch(rig: Rig) -> None:
    worker = rig.start_worker()
    run = await begin_dispatch(rig)
    await wait_for_accepted(rig, KILL_AFTER_ACCEPTED)
    sent_before = await sent_ids(rig.db, run.dispatch_id)
    await asyncio.to_thread(rig.postgres.kill)
    note(rig, "postgres killed")
    # Activities fail meanwhile: sends cannot read their message, so nothing new goes out.
    await asyncio.sleep(OUTAGE_SECONDS)
    assert rig.simulator.state.stats()["unique_accepted"] < CLIENTS, "the kill came too late"
    suspects = accepted_ids(rig.simulator) - sent_before
    await asyncio.to_thread(rig.postgres.restart)
    note(rig, "postgres started again")

    result = await wait_for_result(rig, run)
    note(rig, "dispatch completed")

    await assert_each_message_sent(rig, run, result)
    assert worker.alive
    assert "Completing activity as failed" in worker.log(), "no activity saw the outage"
    duplicated = duplicated_ids(rig.simulator)
    assert duplicated <= suspects
    assert len(duplicated) <= SEND_CONCURRENCY


async def test_worker_stopped_by_sigterm_leaves_nothing_half_sent(rig: Rig) -> None:
    """What Kubernetes does on a rolling update: SIGTERM, then the grace period. The worker
    stops taking work, its sends in flight finish and are written, it exits 0; another worker
    finishes the dispatch and nothing reaches the remote twice."""
    worker = rig.start_worker()
    run = await begin_dispatch(rig)
    await wait_for_accepted(rig, KILL_AFTER_ACCEPTED)
    stopping = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.process.wait, SHUTDOWN_BOUND)
    took = time.monotonic() - stopping
    note(rig, f"worker exited {code} after SIGTERM in {took:.1f} s")
    assert code == 0, worker.log()[-3000:]
    assert "worker stopped" in worker.log()
    assert rig.simulator.state.stats()["unique_accepted"] < CLIENTS, "the stop came too late"
    # Every request that went out has its outcome in the database: none was left in flight.
    assert accepted_ids(rig.simulator) == await sent_ids(rig.db, run.dispatch_id)

    rig.start_worker()
    result = await wait_for_result(rig, run)
    await assert_each_message_sent(rig, run, result)
    assert duplicated_ids(rig.simulator) == set()
