"""The Temporal worker process: dispatch, cohort and delivery workflows, database and send
activities.

Three workers share one connection: the main task queue runs the workflows and the database
activities; the send task queue runs the sends (attempts of a delivery, and the batches of
cohorts started before parallel batches), so that they never wait behind the workflows' own
work, nor hold it up; its `-batches` queue runs a cohort's parallel batches, a few per
process. Sends share SEND_CONCURRENCY per process and one router: an HTTP connection pool per
send route (gateway), each route's cap across every worker through PostgreSQL, and each
route's circuit (SEND_ROUTES, or the one route of SEND_API_URL).
"""

import asyncio
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.budget import ErrorBudget
from activities.dispatch import DispatchActivities
from activities.routing import Router
from activities.schedules import ScheduleActivities
from activities.send import SendActivities
from activities.test_send import TestSendActivities
from core import tracing
from core.db import Database, SessionFactory
from core.logging import configure_logging
from core.routes import covers_everyone
from core.search import ensure_search_attributes
from core.settings import Settings, batch_task_queue, get_settings
from core.temporal import connect
from report.activities import ReportActivities
from report.schedule import ensure_report_schedule
from report.workflow import DailyReportWorkflow
from upkeep.loops import run_upkeep
from upkeep.probes import serve_probes
from workflows.cohort import CohortWorkflow
from workflows.delivery import DeliveryWorkflow
from workflows.dispatch import DispatchWorkflow
from workflows.legacy import LegacyDeliveryWorkflow, LegacyDispatchWorkflow
from workflows.schedule import ScheduledDispatchWorkflow
from workflows.test_send import TestSendWorkflow

log = logging.getLogger("worker")

# Every workflow type a worker runs: today's, and the first shape's for the dispatches it
# started before an upgrade (they finish on their own code).
WORKFLOWS = [
    DispatchWorkflow,
    DailyReportWorkflow,
    CohortWorkflow,
    DeliveryWorkflow,
    TestSendWorkflow,
    ScheduledDispatchWorkflow,
    LegacyDispatchWorkflow,
    LegacyDeliveryWorkflow,
]


def runtime_of(settings: Settings) -> Runtime:
    """The SDK's runtime, exporting its own metrics in Prometheus format when a port is set."""
    if not settings.worker_sdk_metrics_port:
        return Runtime.default()
    address = f"{settings.metrics_host}:{settings.worker_sdk_metrics_port}"
    # Counters with `_total` and durations in seconds, as Prometheus conventions (and promtool)
    # want them.
    exporter = PrometheusConfig(
        bind_address=address, counters_total_suffix=True, durations_as_seconds=True
    )
    return Runtime(telemetry=TelemetryConfig(metrics=exporter))


def build_workers(
    *,
    client: Client,
    settings: Settings,
    sessions: SessionFactory,
    router: Router,
    task_queue: str | None = None,
    send_task_queue: str | None = None,
) -> Sequence[Worker]:
    """The main worker, the send worker and the batches' worker; queues default to the
    settings' ones (the batches' queue is the send queue's, `-batches`)."""
    dispatch_activities = DispatchActivities(sessions=sessions, temporal=client)
    send_activities = SendActivities(
        sessions=sessions,
        router=router,
        concurrency=settings.send_concurrency,
        budget=ErrorBudget(share=settings.error_budget_share, window=settings.error_budget_window),
        cap=settings.cap,
    )
    # Test sends share the sends' router and request slots: each route's cap and circuit.
    test_activities = TestSendActivities(sessions=sessions, sender=send_activities.sender)
    # A schedule's run makes its dispatch as the API does: a session, this client, settings.
    schedule_activities = ScheduleActivities(sessions=sessions, temporal=client, settings=settings)
    # On SIGTERM (what Kubernetes sends) a worker stops polling, lets what runs finish within
    # this grace (a batch stops at its next message and writes what it sent), then exits.
    grace = timedelta(seconds=settings.worker_shutdown_seconds)
    main = Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        graceful_shutdown_timeout=grace,
        workflows=WORKFLOWS,
        activities=[
            dispatch_activities.load_dispatch,
            dispatch_activities.set_dispatch_status,
            dispatch_activities.lay_out_audience,
            dispatch_activities.next_audience_page,
            dispatch_activities.count_open_messages,
            dispatch_activities.finish_message,
            dispatch_activities.finish_cohort,
            dispatch_activities.confirm_handoffs,
            dispatch_activities.control_dispatch,
            dispatch_activities.wake_deliveries,
            ReportActivities(sessions=sessions, settings=settings).send_report,
            test_activities.fail_test_message,
            schedule_activities.make_scheduled_dispatch,
        ],
    )
    sends = Worker(
        client,
        task_queue=send_task_queue or settings.temporal_send_task_queue,
        activities=[
            send_activities.send_message,
            send_activities.send_batch,
            test_activities.send_test_message,
        ],
        graceful_shutdown_timeout=grace,
        # Each attempt or batch holds one; requests in flight are bounded per process by
        # SendActivities itself. Twice as many as that, so that long batches of many cohorts
        # never keep a failed message's next attempt from starting.
        max_concurrent_activities=2 * settings.send_concurrency,
    )
    batches = Worker(
        client,
        task_queue=batch_task_queue(send_task_queue or settings.temporal_send_task_queue),
        activities=[send_activities.send_batch],
        graceful_shutdown_timeout=grace,
        # Full, the worker polls for no more: the next batch goes to a worker with room.
        max_concurrent_activities=settings.send_batches_per_worker,
    )
    return [main, sends, batches]


async def run_workers(workers: Sequence[Worker], stop: asyncio.Event) -> None:
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    await stop.wait()
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*tasks, return_exceptions=True)


async def main() -> None:
    settings = get_settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    # Before connecting: the client (and so every worker on it) takes the tracing interceptor.
    traces = tracing.configure(service_name="mailing-worker")
    client = await connect(settings, runtime_of(settings))
    try:
        await ensure_search_attributes(client, settings.temporal_namespace)
    except RPCError as error:
        # Workflows of dispatches cannot start without them: say what to do, and stop.
        log.error(
            "search attributes DispatchId and ClientId (Int) are not registered and this "
            "worker cannot register them (%s); see the README, Deployment",
            error,
        )
        raise SystemExit(1) from error
    database = Database(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if not covers_everyone(settings.routes):
        log.warning(
            "no send route serves every number: a message to a number none serves fails "
            "(routes: %s)",
            ", ".join(route.name for route in settings.routes),
        )
    async with Router.from_settings(settings, database.sessions) as router:
        workers = build_workers(
            client=client, settings=settings, sessions=database.sessions, router=router
        )
        log.info(
            "worker polling %s, %s and %s at %s",
            settings.temporal_task_queue,
            settings.temporal_send_task_queue,
            settings.temporal_batch_task_queue,
            settings.temporal_target,
        )
        try:
            await ensure_report_schedule(client, settings)
        except RPCError as error:
            # Sending must not wait for the report: say so and go on.
            log.error("report schedule not created or updated: %s", error)
        upkeep = asyncio.create_task(
            run_upkeep(sessions=database.sessions, temporal=client, settings=settings, stop=stop)
        )
        probes = await serve_probes(settings, database.sessions, client, stop)
        try:
            await run_workers(workers, stop)
            await upkeep
        finally:
            if probes is not None:
                await probes.cleanup()
    await database.dispose()
    if traces is not None:
        # The spans not yet exported go out now (blocking: in a thread).
        await asyncio.to_thread(traces.shutdown)
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
