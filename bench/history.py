"""The largest workflow history of a dispatch, and how many workflow runs it took.

Visibility queries find the workflows (`WorkflowId STARTS_WITH "dispatch-5-"`); where the
server refuses them, the ids the service derives from the database are described instead.
"""

import logging
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.service import RPCError

from bench.figures import HistoryFigures, WorkflowSize

log = logging.getLogger(__name__)

# Delivery children all look alike: a sample is enough to know their size.
CLIENT_SAMPLE = 20


async def describe(client: Client, workflow_id: str, run_id: str | None = None) -> WorkflowSize:
    description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    info = description.raw_description.workflow_execution_info
    return WorkflowSize(
        workflow_id=workflow_id,
        run_id=description.run_id,
        history_length=int(info.history_length),
        history_size_bytes=int(info.history_size_bytes),
    )


async def _runs(client: Client, query: str, limit: int | None = None) -> list[tuple[str, str]]:
    return [(w.id, w.run_id) async for w in client.list_workflows(query, limit=limit)]


def largest(sizes: Sequence[WorkflowSize]) -> WorkflowSize | None:
    return max(sizes, key=lambda size: size.history_size_bytes, default=None)


async def dispatch_history(
    client: Client, *, dispatch_id: int, zones: Sequence[str], client_ids: Sequence[int]
) -> HistoryFigures:
    """`zones` and `client_ids` name the children to describe if visibility cannot list them."""
    try:
        return await _by_visibility(client, dispatch_id)
    except RPCError as error:
        log.warning("visibility query refused (%s); describing known ids instead", error)
        figures = await _by_known_ids(client, dispatch_id, zones, client_ids)
        figures.note = f"visibility query refused: {error}"
        return figures


async def _by_visibility(client: Client, dispatch_id: int) -> HistoryFigures:
    parent = f"dispatch-{dispatch_id}"
    # Every run of the parent: after continue-as-new an earlier run may hold the largest one.
    runs = await _runs(client, f'WorkflowId = "{parent}"')
    runs += await _runs(client, f'WorkflowId STARTS_WITH "{parent}-zone-"')
    runs += await _runs(client, f'WorkflowId STARTS_WITH "{parent}-client-"', CLIENT_SAMPLE)
    sizes = [await describe(client, workflow_id, run_id) for workflow_id, run_id in runs]
    total = await client.count_workflows(
        f'WorkflowId = "{parent}" OR WorkflowId STARTS_WITH "{parent}-"'
    )
    return HistoryFigures(
        largest=largest(sizes),
        longest_events=max((size.history_length for size in sizes), default=None),
        described=len(sizes),
        parent_runs=sum(1 for workflow_id, _ in runs if workflow_id == parent),
        executions=total.count,
        method="visibility",
    )


async def _by_known_ids(
    client: Client, dispatch_id: int, zones: Sequence[str], client_ids: Sequence[int]
) -> HistoryFigures:
    parent = f"dispatch-{dispatch_id}"
    candidates = [
        parent,
        *(f"{parent}-zone-{zone}" for zone in [*zones, "all"]),
        *(f"{parent}-client-{cid}" for cid in client_ids[:CLIENT_SAMPLE]),
    ]
    sizes: list[WorkflowSize] = []
    for workflow_id in candidates:
        try:
            sizes.append(await describe(client, workflow_id))
        except RPCError:
            continue  # not a workflow of this shape
    return HistoryFigures(
        largest=largest(sizes),
        longest_events=max((size.history_length for size in sizes), default=None),
        described=len(sizes),
        parent_runs=None,
        executions=None,
        method="known ids",
    )
