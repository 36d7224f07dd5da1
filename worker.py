"""The Temporal worker process: dispatch and delivery workflows, database and send activities.

Two workers share one connection: the main task queue runs the workflows and the database
activities; the send task queue runs only the send activity, so that the server can cap the
rate of sends across every worker process (`SEND_RATE_PER_SECOND`).
"""

import asyncio
import logging
import signal
from collections.abc import Sequence

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.dispatch import DispatchActivities
from activities.send import SendActivities
from core.db import Database, SessionFactory
from core.logging import configure_logging
from core.settings import Settings, get_settings
from workflows.delivery import DeliveryWorkflow
from workflows.dispatch import DispatchWorkflow

log = logging.getLogger("worker")


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.send_timeout_seconds),
        limits=httpx.Limits(
            max_connections=settings.send_concurrency,
            max_keepalive_connections=settings.send_concurrency,
        ),
    )


def build_workers(
    *,
    client: Client,
    settings: Settings,
    sessions: SessionFactory,
    http: httpx.AsyncClient,
    task_queue: str | None = None,
    send_task_queue: str | None = None,
) -> Sequence[Worker]:
    """The main worker and the send worker; queues default to the settings' ones."""
    dispatch_activities = DispatchActivities(sessions=sessions)
    send_activities = SendActivities(
        sessions=sessions, http=http, base_url=settings.send_base_url, token=settings.send_api_token
    )
    main = Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=[DispatchWorkflow, DeliveryWorkflow],
        activities=[
            dispatch_activities.load_dispatch,
            dispatch_activities.set_dispatch_status,
            dispatch_activities.next_audience_page,
            dispatch_activities.count_open_messages,
            dispatch_activities.finish_message,
        ],
    )
    sends = Worker(
        client,
        task_queue=send_task_queue or settings.temporal_send_task_queue,
        activities=[send_activities.send_message],
        max_concurrent_activities=settings.send_concurrency,
        # Enforced by the server across all workers of the queue; eager execution would
        # hand activities to the worker directly and bypass it.
        max_task_queue_activities_per_second=settings.send_rate_per_second,
        disable_eager_activity_execution=True,
    )
    return [main, sends]


async def run_workers(workers: Sequence[Worker], stop: asyncio.Event) -> None:
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    await stop.wait()
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*tasks, return_exceptions=True)


async def main() -> None:
    settings = get_settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    client = await Client.connect(settings.temporal_target, namespace=settings.temporal_namespace)
    database = Database(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with create_http_client(settings) as http:
        workers = build_workers(
            client=client, settings=settings, sessions=database.sessions, http=http
        )
        log.info(
            "worker polling %s and %s at %s",
            settings.temporal_task_queue,
            settings.temporal_send_task_queue,
            settings.temporal_target,
        )
        await run_workers(workers, stop)
    await database.dispose()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
