"""Helpers the tests share: settings aimed at one server, workers run inside a test."""

import asyncio
import uuid
from dataclasses import dataclass

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from core.db import Database
from core.settings import Settings
from worker import build_workers, create_http_client


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


class RunningWorkers:
    def __init__(self, workers: list[Worker], http: httpx.AsyncClient) -> None:
        self.workers = workers
        self.http = http
        self.tasks = [asyncio.create_task(w.run()) for w in workers]

    async def stop(self) -> None:
        await asyncio.gather(*(w.shutdown() for w in self.workers))
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.aclose()


async def start_workers(settings: Settings, client: Client, database: Database) -> RunningWorkers:
    http = create_http_client(settings)
    workers = build_workers(client=client, settings=settings, sessions=database.sessions, http=http)
    return RunningWorkers(list(workers), http)
