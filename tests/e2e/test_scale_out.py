"""Scale-out on real processes: three workers against one Temporal server and one PostgreSQL
share a dispatch with no code change, the global rate cap holds across all of them, nothing is
sent twice; one killed mid-dispatch, the others finish its work. Two API processes on one
database serve the same state (nothing the API needs lives in a process's memory)."""

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import IO

import httpx
import pytest
import sqlalchemy as sa

from core.auth import embedded_tokens
from core.models import Message
from devstack.embedded import free_port, wait_for_port
from devstack.processes import WorkerProcess, service_env, stop_process
from tests.e2e.test_crashes import (
    CLIENTS,
    SEND_CONCURRENCY,
    Rig,
    accepted_ids,
    assert_each_message_sent,
    begin_dispatch,
    duplicated_ids,
    rig,
    sent_ids,
    wait_for_result,
)

pytestmark = pytest.mark.slow

__all__ = ["rig"]  # the fixture, shared with the crash tests

# Below what three workers of SEND_CONCURRENCY sends of 50 ms would reach (about 300/s).
RATE = 40.0


async def test_three_workers_share_one_cohort_under_one_rate_cap(rig: Rig) -> None:
    """The default shape: one cohort (no window) whose parallel batches every worker polling
    the send queue takes a share of."""
    env = service_env(rig.settings, LOG_LEVEL="INFO", SEND_RATE_PER_SECOND=str(RATE))
    workers = [WorkerProcess(env, rig.tmp / f"scale-{n}.log") for n in range(3)]
    rig.workers.extend(workers)
    # Eight lanes of batches of five: 30 batch activities, so that matching hands each worker
    # some (a worker missing all 30 is a (2/3)^30 chance) while the cap keeps each one long.
    run = await begin_dispatch(rig, parallel_batches=8, batch_size=5)

    def shares() -> list[int]:
        return [worker.log().count("remote accepted: message sent") for worker in workers]

    # Once each has sent, one of them dies mid-dispatch: the other two finish its work.
    async with asyncio.timeout(60):
        while not all(shares()):
            await asyncio.sleep(0.05)
    assert rig.simulator.state.stats()["unique_accepted"] < CLIENTS, "the kill came too late"
    await asyncio.to_thread(workers[0].kill)
    await asyncio.sleep(1.0)  # the dead worker's requests still get their answers
    in_flight = accepted_ids(rig.simulator) - await sent_ids(rig.db, run.dispatch_id)
    assert len(in_flight) <= SEND_CONCURRENCY
    result = await wait_for_result(rig, run)
    await assert_each_message_sent(rig, run, result)
    assert duplicated_ids(rig.simulator) <= in_flight

    # Every worker sent a share. (Lines, not a total: the killed worker can have recorded a
    # send and died before logging it; every message being sent is checked above.)
    final = shares()
    assert all(final), final

    # The cap held across the three: no second of sends above the rate (one slot of slack
    # for a second's edges).
    async with rig.db.sessions() as session:
        instants = (
            await session.execute(
                sa.select(Message.sent_at).where(Message.dispatch_id == run.dispatch_id)
            )
        ).scalars()
        per_second = Counter(instant.replace(microsecond=0) for instant in instants if instant)
    assert max(per_second.values()) <= RATE + 1, per_second.most_common(3)
    elapsed = (max(per_second) - min(per_second)).total_seconds() + 1
    assert elapsed >= CLIENTS / RATE - 1, "the cap was not what slowed them"


def start_api(env: dict[str, str], port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "api.main:create_configured_app", "--factory"]
    return subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


async def test_two_api_processes_serve_one_state(rig: Rig) -> None:
    """Whatever one API process did, the other sees and continues: a dispatch created on one,
    paused on the other; an Idempotency-Key replayed on the other; a token checked by both."""
    ports = [free_port(), free_port()]
    # No worker here: a command is applied by the API itself after this long.
    env = service_env(rig.settings, CONTROL_TIMEOUT_SECONDS="1")
    logs = [(rig.tmp / f"api-{n}.log").open("wb") for n in range(2)]
    processes = [
        await asyncio.to_thread(start_api, env | {"DATA_DIR": str(rig.tmp / "data")}, port, log)
        for port, log in zip(ports, logs, strict=True)
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            await asyncio.to_thread(
                lambda p=port, q=process: wait_for_port("127.0.0.1", p, timeout=60, process=q)
            )
        token = embedded_tokens(rig.settings.model_copy(update={"data_dir": rig.tmp / "data"}))
        headers = {"Authorization": f"Bearer {token.mint(subject='ops')}"}
        one, two = (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)
            for port in ports
        )
        async with one, two:
            created = await one.post("/api/v1/clients", json={"phone": "79161234567"})
            assert created.status_code == 201, created.text
            assert (await two.get(f"/api/v1/clients/{created.json()['id']}")).status_code == 200
            now = datetime.now(UTC)
            body = {
                "start_at": (now + timedelta(days=1)).isoformat(),
                "end_at": (now + timedelta(days=2)).isoformat(),
                "text": "Two APIs",
                "filter": {"all": True},
            }
            key = {"Idempotency-Key": "two-apis"}
            first = await one.post("/api/v1/dispatches", json=body, headers=key)
            again = await two.post("/api/v1/dispatches", json=body, headers=key)
            assert first.status_code == again.status_code == 201
            assert again.json()["id"] == first.json()["id"]
            assert again.headers.get("Idempotent-Replayed") == "true"
            dispatch_id = first.json()["id"]
            cancelled = await two.post(f"/api/v1/dispatches/{dispatch_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            seen = (await one.get(f"/api/v1/dispatches/{dispatch_id}")).json()
            assert seen["status"] == "cancelled"
            events = (await one.get(f"/api/v1/dispatches/{dispatch_id}/events")).json()
            assert [e["action"] for e in events["items"]] == ["created", "cancelled"]
            # The admin page's session made on one process works on the other.
            signed = await one.post("/admin/login", data={"token": headers["Authorization"][7:]})
            cookie = signed.cookies.get("mailing_admin")
            assert cookie
            two.cookies.set("mailing_admin", cookie, path="/admin")
            page = await two.get("/admin/dispatches")
            assert page.status_code == 200 and "Two APIs" in page.text
    finally:
        for process in processes:
            await asyncio.to_thread(stop_process, process)
        for log in logs:
            log.close()
