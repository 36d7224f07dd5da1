"""The remote's troubles stay with the sends: the API and other dispatches go on at full
speed, and sends respect the configured concurrency and global rate."""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database
from core.settings import Settings
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.factories import make_client
from tests.support import Queues, RunningWorkers, api_client, settings_for, start_workers

pytestmark = pytest.mark.slow


async def start_stack(
    s: Settings, env: WorkflowEnvironment, db: Database
) -> tuple[RunningWorkers, httpx.AsyncClient, Callable[[], Awaitable[None]]]:
    workers = await start_workers(s, env.client, db)
    app = create_app(s)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    api = api_client(app)

    async def stop() -> None:
        await api.aclose()
        await lifespan.__aexit__(None, None, None)

    return workers, api, stop


async def create_dispatch(api: httpx.AsyncClient, tag: str) -> int:
    now = datetime.now(UTC)
    response = await api.post(
        "/api/v1/dispatches",
        json={
            "start_at": now.isoformat(),
            "end_at": (now + timedelta(hours=1)).isoformat(),
            "text": f"To {tag}",
            "filter": {"tags": [tag]},
        },
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def latencies(api: httpx.AsyncClient, rounds: int = 40) -> list[float]:
    """Seconds per request of a mix of reads and writes."""
    taken = []
    for index in range(rounds):
        started = time.perf_counter()
        if index % 4 == 0:
            phone = f"7916{time.monotonic_ns() % 10_000_000:07d}"
            response = await api.post("/api/v1/clients", json={"phone": phone, "tag": "probe"})
            assert response.status_code in (201, 409), response.text
        else:
            assert (await api.get("/api/v1/stats")).status_code == 200
        taken.append(time.perf_counter() - started)
    return taken


async def test_api_and_other_dispatches_unaffected_by_a_hanging_remote(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    s = settings_for(settings, dev_env.client, queues, send_timeout_seconds=1.0)
    workers, api, stop = await start_stack(s, dev_env, db)
    dispatch_ids: list[int] = []
    try:
        for _ in range(20):
            await make_client(db, tag="hung")
        for _ in range(5):
            await make_client(db, tag="later")
        baseline = await latencies(api)

        # The remote now takes every request and never answers in time.
        simulator.state.set_config(SimulatorConfig(outage=True, outage_mode="hang", hang_seconds=5))
        hung = await create_dispatch(api, "hung")
        dispatch_ids.append(hung)
        # Its first requests hang (two batches of a few messages per worker at once) until
        # their timeouts open the route's circuit; from then on the messages wait.
        async with asyncio.timeout(20):
            while simulator.state.stats()["in_flight"] < 5:
                await asyncio.sleep(0.05)
        during = await latencies(api)

        # Another dispatch starts and lays out its messages while the first one's sends hang.
        other = await create_dispatch(api, "later")
        dispatch_ids.append(other)
        async with asyncio.timeout(10):
            while True:
                detail = (await api.get(f"/api/v1/dispatches/{other}")).json()
                if detail["status"] == "running" and detail["messages"]["total"] == 5:
                    break
                await asyncio.sleep(0.05)
        first = (await api.get(f"/api/v1/dispatches/{hung}")).json()
        assert first["messages"]["sent"] == 0
    finally:
        # Delete both so that their deliveries stop retrying against the hanging remote.
        for dispatch_id in dispatch_ids:
            await api.delete(f"/api/v1/dispatches/{dispatch_id}")
        simulator.state.set_config(SimulatorConfig())
        await stop()
        await asyncio.gather(*(w.shutdown() for w in workers.workers))
        await asyncio.gather(*workers.tasks, return_exceptions=True)
        await workers.router.aclose()

    base_p50, during_p50 = statistics.median(baseline), statistics.median(during)
    base_p95 = statistics.quantiles(baseline, n=20)[-1]
    during_p95 = statistics.quantiles(during, n=20)[-1]
    # Sends hang for seconds; the API must not: generous bounds that a blocked API would
    # break by orders of magnitude.
    assert during_p50 < base_p50 * 3 + 0.02, (base_p50, during_p50)
    assert during_p95 < base_p95 * 3 + 0.05, (base_p95, during_p95)
    assert max(during) < 1.0, max(during)


async def test_sends_respect_concurrency_and_global_rate(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    rate, concurrency, clients = 5.0, 3, 20
    s = settings_for(
        settings,
        dev_env.client,
        queues,
        send_rate_per_second=rate,
        send_concurrency=concurrency,
    )
    for _ in range(clients):
        await make_client(db, tag="paced")
    simulator.state.set_config(SimulatorConfig(latency_ms=100))
    workers, api, stop = await start_stack(s, dev_env, db)
    try:
        dispatch_id = await create_dispatch(api, "paced")
        async with asyncio.timeout(60):
            while (await api.get(f"/api/v1/dispatches/{dispatch_id}")).json()[
                "status"
            ] != "completed":
                await asyncio.sleep(0.1)
        messages = (
            await api.get(f"/api/v1/dispatches/{dispatch_id}/messages", params={"limit": 100})
        ).json()["items"]
    finally:
        await stop()
        await workers.stop()
    stats = simulator.state.stats()
    assert stats["unique_accepted"] == clients
    assert stats["max_in_flight"] <= concurrency
    accepted = sorted(
        datetime.fromisoformat(record["first_accepted_at"])
        for record in (simulator.state.message(m["id"]) for m in messages)
        if record is not None
    )
    spread = (accepted[-1] - accepted[0]).total_seconds()
    # 20 sends at 5 per second take about 4 s; allow the limiter a burst of one second.
    assert spread >= (clients - rate) / rate * 0.8, spread
