"""PostgreSQL down or restarting: the API answers 503 with Retry-After (the admin pages their
error page), quickly, writes nothing half-way, keeps its background appliers running, and
answers 200 again by itself once the database is back (pool_pre_ping drops the dead
connections). A statement's own fault (a duplicate, bad data) is no outage and keeps its answer.

The API app runs in process against a PostgreSQL of each test's own (killed with -9 and started
again over the same data: devstack.processes.CrashablePostgres, as in tests/e2e/test_crashes.py),
so that nothing else of the session is touched; Temporal is the session's dev server.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.auth import ProviderUnavailable, embedded_tokens
from core.db import Database, database_unavailable, migrate
from core.errors import EngineUnavailable
from core.settings import Settings
from devstack.processes import CrashablePostgres
from tests.support import auth_headers, new_queues, target_of

DATABASE = "mailing_outage"
# Each answer during the outage comes within this (a refused connection fails at once).
QUICK_SECONDS = 3.0
# After the restart every request answers 200 again within this.
RECOVERY_SECONDS = 5.0
RECEIPT = {"id": 1, "status": "delivered", "at": "2026-12-01T09:00:00+00:00"}


@dataclass
class Outage:
    postgres: CrashablePostgres
    app: FastAPI
    api: httpx.AsyncClient
    admin: httpx.AsyncClient


def outage_settings(tmp: Path, env: WorkflowEnvironment, database_url: str) -> Settings:
    queues = new_queues()
    return Settings(
        environment="test",
        auth_signing_key_file=tmp / "signing-key.pem",
        worker_metrics_port=0,
        worker_sdk_metrics_port=0,
        database_url=database_url,
        temporal_address=target_of(env.client),
        temporal_task_queue=queues.main,
        temporal_send_task_queue=queues.send,
        _env_file=None,
    )


@contextlib.asynccontextmanager
async def clients_of(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The API with every permission, and a browser signed in to the admin pages. An error the
    app leaves unhandled is a 500 answer here, as a server would send it."""
    settings: Settings = app.state.settings

    def client(**headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers)

    cookie = embedded_tokens(settings).mint(subject="ann")
    async with (
        client(**auth_headers(settings)) as api,
        client(Cookie=f"mailing_admin={cookie}") as admin,
    ):
        yield api, admin


@pytest.fixture
async def outage(tmp_path: Path, dev_env: WorkflowEnvironment) -> AsyncIterator[Outage]:
    (tmp_path / "pg").mkdir()
    postgres = await asyncio.to_thread(CrashablePostgres, tmp_path / "pg" / "data")
    try:
        await asyncio.to_thread(postgres.server.ensure_database, DATABASE)
        await asyncio.to_thread(migrate, postgres.url(DATABASE))
        app = create_app(outage_settings(tmp_path, dev_env, postgres.url(DATABASE)))
        async with app.router.lifespan_context(app), clients_of(app) as (api, admin):
            yield Outage(postgres, app, api, admin)
    finally:
        await asyncio.to_thread(postgres.stop)


async def timed(outage: Outage, method: str, url: str, **kwargs: Any) -> httpx.Response:
    client = outage.admin if url.startswith("/admin") else outage.api
    started = time.monotonic()
    response = await client.request(method, url, **kwargs)
    took = time.monotonic() - started
    assert took < QUICK_SECONDS, f"{method} {url} took {took:.1f} s"
    return response


# What each request answers while PostgreSQL serves (a dispatch that does not exist: 404).
READS = {
    "/api/v1/clients": 200,
    "/api/v1/stats": 200,
    "/api/v1/dispatches/1": 404,
    "/admin": 200,
    "/readyz": 200,
}


async def answers(outage: Outage) -> dict[str, int]:
    found = {url: (await timed(outage, "GET", url)).status_code for url in READS}
    receipt = await timed(outage, "POST", "/api/v1/receipts", json=RECEIPT)
    return {**found, "/api/v1/receipts": receipt.status_code}


NORMAL = {**READS, "/api/v1/receipts": 200}


async def recovered(outage: Outage) -> float:
    """Seconds until every request answers as before the outage."""
    started = time.monotonic()
    while (found := await answers(outage)) != NORMAL:
        assert time.monotonic() - started < RECOVERY_SECONDS, found
        await asyncio.sleep(0.2)
    return time.monotonic() - started


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["retry-after"] == "5"
    if response.request.url.path.startswith("/admin"):
        assert response.headers["content-type"].startswith("text/html")
        assert "database is unavailable" in response.text
        return
    body = response.json()
    assert "database is unavailable" in body["detail"], body
    assert body["errors"] == [{"field": None, "message": body["detail"]}]


async def client_count(outage: Outage) -> int:
    async with outage.app.state.database.sessions() as session:
        return int(await session.scalar(sa.text("SELECT count(*) FROM client")) or 0)


# Idle connections left in a pool before a restart: each use after it meets a dead one.
POOLED = 8


async def fill_pool(database: Database, count: int) -> None:
    sessions = [database.sessions() for _ in range(count)]
    for session in sessions:  # each holds a connection of its own until closed
        await session.execute(sa.text("SELECT 1"))
    for session in sessions:
        await session.close()


def background_tasks() -> list[asyncio.Task[Any]]:
    """The API's background loops: waiting receipts, and the receipt appliers."""
    names = {"apply_waiting_receipts", "ReceiptBatches.run"}
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", None) in names
    ]


async def test_a_database_outage_answers_503_and_the_api_recovers_by_itself(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    created = await outage.api.post("/api/v1/clients", json={"phone": "79161234567"})
    assert created.status_code == 201, created.text
    # A statement's own fault is no outage: the duplicate is still the 409 it was.
    again = await outage.api.post("/api/v1/clients", json={"phone": "79161234567"})
    assert again.status_code == 409, again.text
    assert await answers(outage) == NORMAL
    loops = background_tasks()
    assert len(loops) == 2
    schema = (await outage.api.get("/openapi.json")).json()
    assert "Retry-After" in schema["paths"]["/api/v1/clients"]["get"]["responses"]["503"]["headers"]

    caplog.clear()
    await asyncio.to_thread(outage.postgres.kill)
    for url in READS:
        response = await timed(outage, "GET", url)
        if url == "/readyz":
            assert response.status_code == 503, response.text
            assert response.json()["database"].startswith("unavailable")
        else:
            assert_unavailable(response)
    assert_unavailable(await timed(outage, "POST", "/api/v1/receipts", json=RECEIPT))
    other = {"phone": "79161234568", "tag": "during"}
    assert_unavailable(await timed(outage, "POST", "/api/v1/clients", json=other))
    # Its queued receipts and the waiting ones are retried each second: let both loops fail.
    await asyncio.sleep(2.5)
    assert not any(task.done() for task in loops)
    # Warnings, one line each, no traceback; nothing logged as an error.
    assert all(record.exc_info is None for record in caplog.records), caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    waiting = [r for r in warnings if "waiting receipts" in r.getMessage()]
    assert len(waiting) == 1, caplog.text

    await asyncio.to_thread(outage.postgres.restart)
    assert await recovered(outage) < RECOVERY_SECONDS
    assert not any(task.done() for task in loops)
    # Only the client made before the outage: the one posted during it left nothing.
    assert await client_count(outage) == 1
    # The waiting receipts' loop says once that it works again (it tries each second).
    async with asyncio.timeout(3):
        while not any("applied again" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.1)

    # A restart between two uses of the pool is not seen at all: its dead connections are
    # dropped on checkout (pre-ping) and new ones made. On an engine of its own: in the app's,
    # the background loops could meet a dead connection first, which drops the whole pool.
    database = Database(outage.app.state.settings)
    try:
        await fill_pool(database, POOLED)
        await asyncio.to_thread(outage.postgres.kill)
        await asyncio.to_thread(outage.postgres.restart)
        for _ in range(POOLED):
            async with database.sessions() as session:
                assert await session.scalar(sa.text("SELECT 1")) == 1
    finally:
        await database.dispose()
    assert await answers(outage) == NORMAL


async def silent_server() -> tuple[asyncio.Server, int]:
    """A TCP port that accepts connections and never says a word (a database host that
    hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_database_that_never_answers_gets_503_within_the_connect_timeout(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    server, port = await silent_server()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"
    app = create_app(outage_settings(tmp_path, dev_env, url))
    async with server, app.router.lifespan_context(app), clients_of(app) as (api, _):
        started = time.monotonic()
        response = await api.get("/api/v1/clients")
        took = time.monotonic() - started
        assert_unavailable(response)
        # The connect timeout (5 s), not asyncpg's 60 s.
        assert 4.0 < took < 8.0, took


def test_only_a_connection_failure_is_an_outage() -> None:
    def wrapped(kind: type[DBAPIError], orig: Exception, **kwargs: Any) -> DBAPIError:
        error = kind("SELECT 1", {}, orig, **kwargs)
        error.__cause__ = orig
        return error

    def raised_here(error: Exception) -> Exception:
        try:
            raise error
        except Exception as caught:
            return caught

    assert database_unavailable(wrapped(DBAPIError, Exception("gone"), connection_invalidated=True))
    assert database_unavailable(wrapped(DBAPIError, asyncpg.CannotConnectNowError("starting")))
    assert database_unavailable(wrapped(DBAPIError, asyncpg.ConnectionDoesNotExistError("x")))
    assert database_unavailable(PoolTimeout("QueuePool limit reached"))
    unique = asyncpg.UniqueViolationError("duplicate key")
    assert not database_unavailable(wrapped(IntegrityError, unique))
    assert not database_unavailable(wrapped(DataError, asyncpg.DataError("bad input")))
    assert not database_unavailable(wrapped(DBAPIError, asyncpg.QueryCanceledError("cancel")))
    # An OSError counts only when it comes out of the driver (a refused connection), not when
    # the request's own code raised it (a file it reads, say).
    assert not database_unavailable(raised_here(ConnectionRefusedError(111, "refused")))
    assert not database_unavailable(raised_here(FileNotFoundError(2, "no such file")))


async def test_a_unix_socket_with_no_server_is_an_outage(tmp_path: Path) -> None:
    """No socket file at all (a server stopped cleanly removes it): asyncpg's own
    FileNotFoundError, which counts, raised by the driver."""
    settings = Settings(
        environment="test",
        database_url=f"postgresql+asyncpg://postgres@/{DATABASE}?host={tmp_path}",
        _env_file=None,
    )
    database = Database(settings)
    try:
        with pytest.raises(OSError) as raised:
            async with database.sessions() as session:
                await session.execute(sa.text("SELECT 1"))
    finally:
        await database.dispose()
    assert database_unavailable(raised.value), repr(raised.value)


async def test_every_unavailable_dependency_says_when_to_try_again(tmp_path: Path) -> None:
    """Temporal away (EngineUnavailable) and the identity provider away are 503s with the same
    Retry-After as the database's; a statement's fault or a file's is not an outage (no
    lifespan: nothing is reached)."""
    app = create_app(Settings(environment="test", auth_signing_key_file=tmp_path / "key.pem"))

    async def engine_away() -> None:
        raise EngineUnavailable("Temporal is unavailable")

    async def provider_away() -> None:
        raise ProviderUnavailable("the identity provider is unavailable")

    async def statement_fault() -> None:
        raise DataError("INSERT ...", {}, asyncpg.DataError("value out of range"))

    async def file_fault() -> None:
        raise FileNotFoundError(2, "No such file or directory")

    app.add_api_route("/engine-away", engine_away)
    app.add_api_route("/provider-away", provider_away)
    app.add_api_route("/statement-fault", statement_fault)
    app.add_api_route("/file-fault", file_fault)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path in ("/engine-away", "/provider-away"):
            response = await client.get(path)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert response.json()["errors"][0]["field"] is None
        # Not an outage: what no service expected stays the 500 (and traceback) it was.
        for path in ("/statement-fault", "/file-fault"):
            assert (await client.get(path)).status_code == 500
