"""Session-wide real things: PostgreSQL (migrated), the simulator over TCP, Temporal servers.

Each test that touches the database gets clean tables; each workflow test its own task queues.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database, migrate
from core.logging import install_context
from core.search import dev_server_flags, ensure_search_attributes
from core.settings import Settings
from devstack.embedded import EmbeddedPostgres, bin_path, dynamic_config_flags
from simulator.app import SimulatorConfig, SimulatorState
from simulator.app import create_app as create_simulator
from tests.support import Queues, api_client, new_queues, serving, settings_for

TOKEN = "test-token"

# Log records carry the ids of their activity and request, in the tests as in the services.
install_context()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.ensure_database("mailing_test")
    migrate(server.url("mailing_test"))
    yield server
    server.stop()


@dataclass
class RunningSimulator:
    state: SimulatorState
    port: int
    # Its named gateways: `app.state.gateways.get(name)`.
    app: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="session")
async def simulator_server() -> AsyncIterator[RunningSimulator]:
    app = create_simulator(token=TOKEN)
    async with serving(app, lifespan="off") as port:
        yield RunningSimulator(state=app.state.simulator, port=port, app=app)


@pytest.fixture
async def simulator(simulator_server: RunningSimulator) -> RunningSimulator:
    """The simulator, healthy and with zeroed counters."""
    state = simulator_server.state
    state.set_config(SimulatorConfig())
    # A request an earlier test left hanging would be counted in this test's figures.
    async with asyncio.timeout(30):
        while state.stats()["in_flight"]:
            await asyncio.sleep(0.05)
    state.reset_counters()
    return simulator_server


@pytest.fixture(scope="session")
def settings(
    postgres: EmbeddedPostgres,
    simulator_server: RunningSimulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return Settings(
        environment="test",
        auth_signing_key_file=tmp_path_factory.mktemp("auth") / "signing-key.pem",
        # Worker processes of the tests serve no metrics unless a test asks (ports collide).
        worker_metrics_port=0,
        worker_sdk_metrics_port=0,
        database_url=postgres.url("mailing_test"),
        send_api_url=simulator_server.base_url,
        send_api_token=TOKEN,
        send_timeout_seconds=2.0,
        send_retry_initial_seconds=1.0,
        send_retry_max_seconds=60.0,
        audience_page_size=50,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    yield database
    await database.dispose()


@pytest.fixture
async def db(database: Database) -> AsyncIterator[Database]:
    """The database, emptied after the test."""
    yield database
    async with database.sessions() as session:
        await session.execute(
            sa.text(
                "TRUNCATE message, message_count, message_sent_minute, message_route_count, "
                "send_route, dispatch, client CASCADE"
            )
        )
        await session.commit()


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=bin_path("temporal-test-server")
    )
    await ensure_search_attributes(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture
async def clock_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own.

    For the few tests that leave the test server in a state where later tests' timers no
    longer skip (seen with continue-as-new and abandoned children), or that move its clock
    by hand while activities come and go. Every other workflow test shares `time_env`.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=bin_path("temporal-test-server")
    )
    await ensure_search_attributes(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=bin_path("temporal"),
        dev_server_extra_args=[*dynamic_config_flags(), *dev_server_flags()],
    )
    yield env
    await env.shutdown()


@pytest.fixture
def queues() -> Queues:
    """Task queues of this test alone."""
    return new_queues()


@pytest.fixture
async def api_app(
    settings: Settings, dev_env: WorkflowEnvironment, queues: Queues, db: Database
) -> AsyncIterator[FastAPI]:
    """The API app with its lifespan entered, against the dev server and no worker.

    Not the time-skipping server: workflow tasks waiting there for a worker would stop time
    from skipping for the workflow tests that share it.
    """
    # No worker takes a control update here: the API applies it itself after this long.
    app = create_app(settings_for(settings, dev_env.client, queues, control_timeout_seconds=1.0))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(api_app) as client:
        yield client


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
