"""Helpers the tests share: settings aimed at one server, workers run inside a test."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.routing import Router
from core.auth import ALL_PERMISSIONS, embedded_tokens
from core.contracts.shared import delivery_workflow_id
from core.db import Database
from core.models import Message
from core.settings import Settings
from devstack.embedded import free_port
from worker import build_workers


def target_of(client: Client) -> str:
    return client.service_client.config.target_host


@dataclass
class Queues:
    main: str
    send: str


def new_queues() -> Queues:
    suffix = uuid.uuid4().hex[:8]
    return Queues(main=f"mailing-{suffix}", send=f"mailing-send-{suffix}")


def settings_for(settings: Settings, client: Client, queues: Queues, **changes: object) -> Settings:
    """The session settings aimed at one Temporal server and this test's queues."""
    return settings.model_copy(
        update={
            "temporal_address": target_of(client),
            "temporal_task_queue": queues.main,
            "temporal_send_task_queue": queues.send,
            **changes,
        }
    )


def router_to(
    base_url: str, sessions: Any, *, token: str, timeout_seconds: float = 1.0, **changes: Any
) -> Router:
    """A router of one route to this base URL (settings `changes` as the worker reads them)."""
    settings = Settings(
        environment="test",
        send_api_url=base_url,
        send_api_token=token,
        send_timeout_seconds=timeout_seconds,
        send_concurrency=10,
        _env_file=None,
        **changes,
    )
    return Router.from_settings(settings, sessions)


class RunningWorkers:
    def __init__(
        self, workers: list[Worker], router: Router, client: Client, database: Database
    ) -> None:
        self.workers = workers
        self.router = router
        self.client = client
        self.database = database
        self.tasks = [asyncio.create_task(w.run()) for w in workers]

    async def drain(self) -> None:
        """Waits for the deliveries of every message in the database to close.

        A dispatch completes once its messages are final, which can be a moment before its
        last delivery workflow closes. A delivery left open without a worker would stop the
        shared time-skipping server from skipping time for every later test.
        """
        async with self.database.sessions() as session:
            pairs = (
                await session.execute(
                    sa.select(Message.dispatch_id, Message.client_id).where(
                        Message.client_id.is_not(None)  # type: ignore[union-attr]
                    )
                )
            ).all()

        # One at a time: on the time-skipping server every result() unlocks and relocks the
        # clock, and concurrent unlocks leave it locked for good.
        async with asyncio.timeout(30):
            for dispatch_id, client_id in pairs:
                handle = self.client.get_workflow_handle(
                    delivery_workflow_id(dispatch_id, client_id)
                )
                with contextlib.suppress(WorkflowFailureError, RPCError):
                    await handle.result()

    async def stop(self) -> None:
        try:
            await self.drain()
        finally:
            await asyncio.gather(*(w.shutdown() for w in self.workers))
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.router.aclose()


@contextlib.asynccontextmanager
async def running_workers(
    settings: Settings, client: Client, database: Database
) -> AsyncIterator[RunningWorkers]:
    """Workers for the test's queues, drained and stopped when the block ends."""
    workers = await start_workers(settings, client, database)
    try:
        yield workers
    finally:
        await workers.stop()


async def start_workers(settings: Settings, client: Client, database: Database) -> RunningWorkers:
    router = Router.from_settings(settings, database.sessions)
    workers = build_workers(
        client=client, settings=settings, sessions=database.sessions, router=router
    )
    return RunningWorkers(list(workers), router, client, database)


def auth_headers(
    settings: Settings, permissions: frozenset[str] = ALL_PERMISSIONS, subject: str = "tester"
) -> dict[str, str]:
    """A bearer token of the embedded mode, signed with the test settings' key."""
    token = embedded_tokens(settings).mint(subject=subject, permissions=permissions)
    return {"Authorization": f"Bearer {token}"}


def api_client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    """An HTTP client of the app in process, authenticated with every permission."""
    settings: Settings = app.state.settings
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api",
        headers={**auth_headers(settings), **headers},
    )


@contextlib.asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """Serves an ASGI app over real HTTP on a free port, for the test's length."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
