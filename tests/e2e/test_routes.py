"""Several send routes on the real stack (PostgreSQL, the Temporal dev server, simulated
gateways over HTTP): routes by operator code, a cap in segments across two worker processes,
failover when a gateway goes down and back, a gateway that takes a message and never answers,
and a definition that refuses to start."""

import asyncio
import contextlib
import json
import subprocess
import sys
import time as clock
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from temporalio.testing import WorkflowEnvironment

from core.contracts.dispatch import DispatchInput
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import Database
from core.models import Message, message_route_count_t
from core.segments import measure
from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import free_port
from devstack.processes import WorkerProcess, service_env
from simulator.app import SimulatorConfig, SimulatorState, create_app
from tests.conftest import TOKEN, RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import Queues, running_workers, settings_for
from workflows.dispatch import DispatchWorkflow

pytestmark = pytest.mark.slow

TOKEN_ENV = "TEST_GATEWAY_TOKEN"


def route(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "token_env": TOKEN_ENV, **fields}


@pytest.fixture(autouse=True)
def gateway_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def gateway(simulator: RunningSimulator, name: str) -> tuple[str, SimulatorState]:
    """A named gateway of the session's simulator, healthy and with zeroed counters."""
    state: SimulatorState = simulator.app.state.gateways.get(name)
    state.set_config(SimulatorConfig())
    state.reset_counters()
    return f"http://127.0.0.1:{simulator.port}/gateways/{name}/v1", state


def accepted_ids(state: SimulatorState) -> Counter[int]:
    return Counter(message_id for _, message_id, _ in state.accepted_log())


async def run_dispatch(env: WorkflowEnvironment, s: Settings, dispatch_id: int) -> Any:
    handle = await env.client.start_workflow(
        DispatchWorkflow.run,
        DispatchInput(dispatch_id=dispatch_id, send=SendOptions.from_settings(s)),
        id=dispatch_workflow_id(dispatch_id),
        task_queue=s.temporal_task_queue,
    )
    return handle


async def stored(db: Database, dispatch_id: int) -> list[Message]:
    async with db.sessions() as session:
        found = await session.execute(
            sa.select(Message).where(Message.dispatch_id == dispatch_id).order_by(Message.id)
        )
        return list(found.scalars())


async def route_counts(db: Database, dispatch_id: int) -> dict[tuple[str, str], tuple[int, int]]:
    c = message_route_count_t.c
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(c.route, c.status, sa.func.sum(c.n), sa.func.sum(c.segments))
            .where(c.dispatch_id == dispatch_id)
            .group_by(c.route, c.status)
        )
        return {(r, s): (int(n), int(seg)) for r, s, n, seg in rows if n}


@pytest.mark.parametrize("delivery", ["cohorts", "per_client"])
async def test_routes_by_operator_code(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    delivery: str,
) -> None:
    url_a, a = gateway(simulator, "mts")
    url_b, b = gateway(simulator, "beeline")
    routes = [
        route("mts", url_a, operator_codes=["916"], priority=1),
        route("beeline", url_b, operator_codes=["903", "905"], priority=2),
    ]
    s = settings_for(settings, dev_env.client, queues, send_routes=json.dumps(routes))
    phones = {f"7916{n:07d}": "mts" for n in range(12)} | {
        f"790{3 + 2 * (n % 2)}{n:07d}": "beeline" for n in range(9)
    }
    for phone in phones:
        await make_client(db, phone=phone)
    text = "Привет! " * 20  # 160 characters of UCS-2: three segments each
    dispatch = await make_dispatch(db, text=text, delivery=delivery)
    assert dispatch.id is not None
    async with running_workers(s, dev_env.client, db):
        handle = await run_dispatch(dev_env, s, dispatch.id)
        async with asyncio.timeout(60):
            result = await handle.result()
    assert (result.status, result.messages) == ("completed", len(phones))
    messages = await stored(db, dispatch.id)
    assert {m.status for m in messages} == {"sent"}
    for message in messages:
        assert message.phone is not None
        assert message.route == phones[message.phone], message
        assert message.segments == measure(text).segments == 3
    assert {str(r[2]) for r in a.accepted_log()} == {text}
    got = {name: set(accepted_ids(state)) for name, state in (("mts", a), ("beeline", b))}
    for name in got:
        assert got[name] == {m.id for m in messages if m.route == name}
    # The counts per route add up to the dispatch's.
    counts = await route_counts(db, dispatch.id)
    assert counts == {("mts", "sent"): (12, 36), ("beeline", "sent"): (9, 27)}


@contextlib.contextmanager
def worker_processes(env: dict[str, str], logs: list[Path]) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(env, log_file) for log_file in logs]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


CAP = 20.0


async def test_a_cap_in_segments_holds_across_two_workers(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    tmp_path: Path,
) -> None:
    url, state = gateway(simulator, "capped")
    routes = [route("capped", url, rate_per_second=CAP, rate_unit="segments")]
    s = settings_for(
        settings, dev_env.client, queues, send_routes=json.dumps(routes), send_batch_size=10
    )
    clients = 36
    for index in range(clients):
        await make_client(db, timezone=["UTC", "Europe/Moscow", "Asia/Tokyo"][index % 3])
    text = "Сообщение " * 15  # 150 UCS-2 characters: three segments
    assert measure(text).segments == 3
    dispatch = await make_dispatch(db, text=text)
    assert dispatch.id is not None
    env = service_env(s, SEND_CONCURRENCY="10", LOG_LEVEL="INFO", **{TOKEN_ENV: TOKEN})
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with worker_processes(env, logs) as workers:
        handle = await run_dispatch(dev_env, s, dispatch.id)
        async with asyncio.timeout(90):
            result = await handle.result()
    assert (result.status, result.messages) == ("completed", clients)
    moments = sorted(at for at, _, _ in state.accepted_log())
    assert len(moments) == clients
    # No second of the gateway's clock holds more than 20 segments (six texts of three), nor
    # any window of one second.
    per_second = Counter(int(moment) for moment in moments)
    assert max(per_second.values()) * 3 <= CAP, per_second
    for index, moment in enumerate(moments):
        in_one_second = sum(1 for m in moments[index:] if m < moment + 1.0)
        assert in_one_second * 3 <= CAP, (index, in_one_second)
    # 36 texts at six a second: about six seconds (the cap was not merely met by slowness).
    assert 5.0 <= moments[-1] - moments[0] <= 9.0, moments[-1] - moments[0]
    for worker in workers:
        assert "batch of cohort" in worker.log(), worker.log()[-3000:]


class GatewayServer:
    """A gateway of its own on a fixed port, that can go away (connections refused) and come
    back with its records kept."""

    def __init__(self) -> None:
        self.app = create_app(token=TOKEN)
        self.state: SimulatorState = self.app.state.simulator
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


@pytest.fixture
async def first() -> AsyncIterator[GatewayServer]:
    server = GatewayServer()
    await server.start()
    yield server
    await server.stop()


async def wait_for(condition: Any, seconds: float) -> float:
    """Waits until condition() holds; the moment (monotonic) it did."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)
    return clock.monotonic()


async def test_failover_moves_traffic_and_sends_nothing_twice(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    first: GatewayServer,
) -> None:
    url_b, second = gateway(simulator, "second")
    first.state.set_config(SimulatorConfig(latency_ms=5))
    second.set_config(SimulatorConfig(latency_ms=5))
    routes = [route("first", first.url, priority=1), route("second", url_b, priority=2)]
    s = settings_for(
        settings,
        dev_env.client,
        queues,
        send_routes=json.dumps(routes),
        send_concurrency=10,
        send_batch_size=100,
        route_probe_initial_seconds=0.5,
        route_probe_max_seconds=1.0,
    )
    clients = 2000
    async with db.sessions() as session:
        await session.execute(
            sa.text(
                "INSERT INTO client (phone, operator_code, tag, timezone, opted_out) "
                "SELECT (79160000000 + n)::text, '916', '', 'Europe/Moscow', false "
                "FROM generate_series(1, :n) AS n"
            ),
            {"n": clients},
        )
        await session.commit()
    dispatch = await make_dispatch(db, text="Failover")
    assert dispatch.id is not None
    async with running_workers(s, dev_env.client, db):
        handle = await run_dispatch(dev_env, s, dispatch.id)
        await wait_for(lambda: first.state.stats()["accepted"] >= 300, 60)
        second_before = second.stats()["accepted"]
        await first.stop()
        down_at = clock.monotonic()
        moved_at = await wait_for(lambda: second.stats()["accepted"] > second_before, 10)
        await asyncio.sleep(1.0)
        first_while_down = first.state.stats()["accepted"]
        await first.start()
        back_at = clock.monotonic()
        await wait_for(lambda: first.state.stats()["accepted"] > first_while_down, 20)
        back_taken_at = clock.monotonic()
        async with asyncio.timeout(120):
            result = await handle.result()
    assert (result.status, result.messages) == ("completed", clients)
    messages = await stored(db, dispatch.id)
    assert {m.status for m in messages} == {"sent"}
    at_first, at_second = accepted_ids(first.state), accepted_ids(second)
    # Every message at one gateway only, and the one its record names.
    assert not set(at_first) & set(at_second)
    assert set(at_first) | set(at_second) == {m.id for m in messages}
    for message in messages:
        assert message.route == ("first" if message.id in at_first else "second")
    # Twice only at the first gateway, and only the messages in flight when it went away.
    twice = {message_id for message_id, n in at_first.items() if n > 1}
    assert len(twice) <= 10, twice
    assert not [n for n in at_second.values() if n > 1]
    assert moved_at - down_at < 5.0, moved_at - down_at
    assert back_taken_at - back_at < 5.0, back_taken_at - back_at
    counts = await route_counts(db, dispatch.id)
    assert sum(n for (_, status), (n, _) in counts.items() if status == "sent") == clients
    print(  # noqa: T201 (the figures, for the log of a slow run)
        f"failover: traffic moved in {moved_at - down_at:.2f} s, came back "
        f"{back_taken_at - back_at:.2f} s after the gateway; {len(twice)} sent twice at first"
    )


async def test_a_gateway_that_takes_and_never_answers_keeps_its_messages(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url_a, hanging = gateway(simulator, "hanging")
    url_b, healthy = gateway(simulator, "healthy")
    hanging.set_config(SimulatorConfig(accept_then_hang=True, hang_seconds=30))
    routes = [route("hanging", url_a, priority=1), route("healthy", url_b, priority=2)]
    s = settings_for(
        settings,
        dev_env.client,
        queues,
        send_routes=json.dumps(routes),
        send_concurrency=4,
        send_timeout_seconds=1.0,
        route_failures_to_open=3,
        route_probe_initial_seconds=0.5,
        route_probe_max_seconds=1.0,
    )
    for _ in range(30):
        await make_client(db)
    dispatch = await make_dispatch(db, text="Took it")
    assert dispatch.id is not None
    async with running_workers(s, dev_env.client, db):
        handle = await run_dispatch(dev_env, s, dispatch.id)
        await wait_for(lambda: healthy.stats()["accepted"] >= 10, 30)
        pinned = set(accepted_ids(hanging))
        assert pinned  # it took some before its circuit opened
        # The gateway answers again: the messages it may have are retried there, only there.
        hanging.set_config(SimulatorConfig())
        async with asyncio.timeout(90):
            result = await handle.result()
    assert result.status == "completed"
    messages = await stored(db, dispatch.id)
    assert {m.status for m in messages} == {"sent"}
    at_hanging, at_healthy = accepted_ids(hanging), accepted_ids(healthy)
    assert not set(at_hanging) & set(at_healthy)
    assert pinned <= set(at_hanging)
    for message in messages:
        assert message.route == ("hanging" if message.id in at_hanging else "healthy")
    # The healthy route was there all along: the timeouts never stopped the dispatch's batches.
    assert "every batch of the dispatch stops" not in caplog.text


def start_failure(env: dict[str, str], *command: str) -> str:
    """Runs a process that must refuse to start; its output."""
    run = subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    return run.stdout + run.stderr


@pytest.mark.parametrize(
    ("routes", "named"),
    [
        ([route("a", "http://127.0.0.1:1/v1", colour="red")], "route 'a': colour: Extra inputs"),
        (
            [{"name": "b", "url": "http://127.0.0.1:1/v1", "token_env": "NO_SUCH_TOKEN_VAR"}],
            "route 'b': token_env: the environment variable NO_SUCH_TOKEN_VAR is not set",
        ),
        (
            [route("c", "http://127.0.0.1:1/v1", prefixes=["7495"])],
            "route 'c': serves no client: prefixes match no client's number",
        ),
        (
            [route("d", "http://127.0.0.1:1/v1", operator_codes=[])],
            "route 'd': serves no client: operator_codes is empty",
        ),
    ],
    ids=["unknown-field", "missing-token", "prefix-of-no-mobile", "no-codes"],
)
def test_a_bad_definition_refuses_to_start(
    settings: Settings, routes: list[dict[str, Any]], named: str
) -> None:
    env = service_env(settings) | {"SEND_ROUTES": json.dumps(routes), TOKEN_ENV: TOKEN}
    env.pop("NO_SUCH_TOKEN_VAR", None)
    assert named in start_failure(env, "worker.py")
    api = ("-c", "from api.main import create_app; create_app()")
    assert named in start_failure(env, *api)


def test_a_routes_file_in_yaml(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "- name: main\n  url: http://127.0.0.1:1/v1\n  token_env: TEST_GATEWAY_TOKEN\n"
        "  rate_per_second: 50\n  operator_codes: ['916']\n  priority: 1\n"
        "- name: spare\n  url: http://127.0.0.1:2/v1\n  token_env: TEST_GATEWAY_TOKEN\n"
        "  rate_unit: messages\n"
    )
    read = settings.model_copy(update={"send_routes_file": path}).routes
    assert [(r.name, r.rate_per_second, r.rate_unit, r.token) for r in read] == [
        ("main", 50, "segments", TOKEN),
        ("spare", None, "messages", TOKEN),
    ]
    assert read[0].serves("79161234567", "916") and not read[0].serves("79031234567", "903")
