"""The old shape's ceiling: bare child workflows per client, on the same server, worker in here."""

import asyncio
import logging
import time
import uuid

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from bench.ceiling_activities import CeilingActivities
from bench.ceiling_workflows import CeilingChildWorkflow, CeilingInput, CeilingParentWorkflow
from bench.figures import CeilingFigures
from bench.history import describe, largest
from bench.remote import SimulatorControl
from simulator.app import DEFAULT_TOKEN

log = logging.getLogger(__name__)

# As the service's dispatch workflow: a run starts at most this many children.
CHILDREN_PER_RUN = 2000


async def run_ceiling(
    *,
    temporal: Client,
    simulator: SimulatorControl,
    send_api_url: str,
    children: int,
    latency_ms: float,
    concurrency: int,
    timeout_s: float,
) -> CeilingFigures:
    await simulator.prepare(latency_ms=latency_ms)
    prefix = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        activities = CeilingActivities(http=http, base_url=send_api_url, token=DEFAULT_TOKEN)
        # A task queue of its own: the service's worker never sees these workflows.
        worker = Worker(
            temporal,
            task_queue=prefix,
            workflows=[CeilingParentWorkflow, CeilingChildWorkflow],
            activities=[activities.post_once],
            max_concurrent_activities=concurrency,
        )
        running = asyncio.create_task(worker.run())
        try:
            elapsed, completed = await _run_parent(
                temporal, prefix=prefix, children=children, timeout_s=timeout_s
            )
        finally:
            await worker.shutdown()
            await asyncio.gather(running, return_exceptions=True)
    parent_sizes = [
        await describe(temporal, w.id, w.run_id)
        async for w in temporal.list_workflows(f'WorkflowId = "{prefix}"')
    ]
    return CeilingFigures(
        children=children,
        latency_ms=latency_ms,
        children_per_run=CHILDREN_PER_RUN,
        elapsed_s=round(elapsed, 2),
        children_per_s=round(children / elapsed, 2) if completed else None,
        completed=completed,
        largest_parent_history=largest(parent_sizes),
        remote=await simulator.figures(),
    )


async def _run_parent(
    temporal: Client, *, prefix: str, children: int, timeout_s: float
) -> tuple[float, bool]:
    """Seconds from the parent's start to its last run's result, and whether it got there."""
    log.info("ceiling: %d children on task queue %s", children, prefix)
    started = time.monotonic()
    handle = await temporal.start_workflow(
        CeilingParentWorkflow.run,
        CeilingInput(prefix=prefix, children=children, per_run=CHILDREN_PER_RUN),
        id=prefix,
        task_queue=prefix,
    )
    try:
        # The handle follows continue-as-new runs to the last one's result.
        await asyncio.wait_for(handle.result(), timeout_s)
    except TimeoutError:
        log.warning("ceiling: not done after %.0f s; terminating it", timeout_s)
        await handle.terminate("bench timeout")
        return time.monotonic() - started, False
    return time.monotonic() - started, True
