"""Reconciliation: PostgreSQL and Temporal brought back in step after a crash between the two.

Creating a dispatch commits its row, then starts its workflow; deleting cancels the dispatch,
commits the deletion, then cancels the workflow. A crash between the steps leaves a dispatch
whose workflow never started (or was terminated from the Temporal UI), or workflows of a
dispatch that no longer exists; and a command applied by the API after a workflow closed can
leave a row unfinished behind a completed workflow. The worker runs `reconcile` when it starts
and every RECONCILE_INTERVAL (upkeep.loops); every repair is idempotent by workflow id, so
several workers may run it.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.contracts.dispatch import DispatchInput
from core.contracts.shared import SendOptions, dispatch_workflow_id
from core.db import SessionFactory
from core.logging import ids
from core.models import (
    OPEN_MESSAGE_STATUSES,
    UNFINISHED_DISPATCH_STATUSES,
    DispatchStatus,
    dispatch_t,
    message_t,
    utcnow,
)
from core.search import DISPATCH_ID, of_dispatch
from core.settings import Settings
from workflows.dispatch import DispatchWorkflow

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = timedelta(minutes=5)
# A row younger than this may be a create whose workflow is starting right now.
GRACE = timedelta(minutes=1)
# Closed states a dispatch's workflow cannot be in while its row is unfinished.
BROKEN = {
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT,
}


@dataclass
class Repairs:
    started: list[int] = field(default_factory=list)  # workflow missing or broken: (re)started
    cancelled: list[str] = field(default_factory=list)  # workflows of deleted dispatches
    # Rows left unfinished behind a workflow that completed, every message final: completed.
    completed: list[int] = field(default_factory=list)


class Reconciler:
    def __init__(self, *, sessions: SessionFactory, temporal: Client, settings: Settings) -> None:
        self.sessions = sessions
        self.temporal = temporal
        self.settings = settings

    async def reconcile(self) -> Repairs:
        repairs = Repairs()
        await self._start_missing(repairs)
        await self._cancel_orphans(repairs)
        if repairs.started or repairs.cancelled or repairs.completed:
            log.warning(
                "reconciled: started %s, cancelled %s, completed %s",
                repairs.started,
                repairs.cancelled,
                repairs.completed,
            )
        return repairs

    async def _start_missing(self, repairs: Repairs) -> None:
        """Unfinished dispatches whose workflow does not exist, or ended without finishing
        them (terminated, failed, timed out): their workflow starts (again)."""
        async with self.sessions() as session:
            dispatch_ids = list(
                (
                    await session.execute(
                        sa.select(dispatch_t.c.id)
                        .where(
                            dispatch_t.c.status.in_(UNFINISHED_DISPATCH_STATUSES),
                            dispatch_t.c.created_at < utcnow() - GRACE,
                        )
                        .order_by(dispatch_t.c.id)
                    )
                ).scalars()
            )
        for dispatch_id in dispatch_ids:
            handle = self.temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id))
            try:
                status = (await handle.describe()).status
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                status = None
            if status == WorkflowExecutionStatus.COMPLETED:
                if await self._complete(dispatch_id):
                    repairs.completed.append(dispatch_id)
                continue
            if status is not None and status not in BROKEN:
                continue
            await self._start(dispatch_id, status)
            repairs.started.append(dispatch_id)

    async def _complete(self, dispatch_id: int) -> bool:
        """A row still unfinished whose workflow completed: a command applied by the API after
        the workflow closed (a resume of a dispatch that had completed while paused, before
        `dispatch-completes-when-paused`). With every message final it is completed; with
        messages still open it is left as it is and said loudly: no run may follow a completed
        one, and an operator must look."""
        async with self.sessions() as session:
            open_messages = (
                await session.execute(
                    sa.select(sa.func.count())
                    .select_from(message_t)
                    .where(
                        message_t.c.dispatch_id == dispatch_id,
                        message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
                    )
                )
            ).scalar_one()
            if open_messages:
                log.error(
                    "dispatch workflow completed with %d messages open: left as it is",
                    open_messages,
                    extra=ids(dispatch_id=dispatch_id),
                )
                return False
            result = await session.execute(
                sa.update(dispatch_t)
                .where(
                    dispatch_t.c.id == dispatch_id,
                    dispatch_t.c.status.in_(UNFINISHED_DISPATCH_STATUSES),
                )
                .values(status=DispatchStatus.COMPLETED)
            )
            await session.commit()
        changed = bool(result.rowcount)  # type: ignore[attr-defined]
        if changed:
            log.warning(
                "dispatch left unfinished behind its completed workflow: completed",
                extra=ids(dispatch_id=dispatch_id),
            )
        return changed

    async def _start(self, dispatch_id: int, status: WorkflowExecutionStatus | None) -> None:
        log.warning(
            "dispatch workflow %s: starting it",
            "missing" if status is None else status.name.lower(),
            extra=ids(dispatch_id=dispatch_id),
        )
        try:
            await self.temporal.start_workflow(
                DispatchWorkflow.run,
                DispatchInput(
                    dispatch_id=dispatch_id, send=SendOptions.from_settings(self.settings)
                ),
                id=dispatch_workflow_id(dispatch_id),
                task_queue=self.settings.temporal_task_queue,
                search_attributes=of_dispatch(dispatch_id),
                # A terminated, failed or timed-out run may be followed; a running or
                # completed one never.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            log.info("another worker started it first", extra=ids(dispatch_id=dispatch_id))

    async def _cancel_orphans(self, repairs: Repairs) -> None:
        """Open workflows whose dispatch row is gone (deleted, then a crash before the
        workflows heard): each is asked to cancel, dispatch, cohorts and deliveries alike."""
        # This deployment's workflows only (its task queue): another one's rows are elsewhere.
        query = (
            f"{DISPATCH_ID.name} IS NOT NULL AND ExecutionStatus = 'Running' "
            f"AND TaskQueue = '{self.settings.temporal_task_queue}'"
        )
        open_by_dispatch: dict[int, list[str]] = {}
        async for execution in self.temporal.list_workflows(query):
            dispatch_id = execution.typed_search_attributes.get(DISPATCH_ID)
            if dispatch_id is not None:
                open_by_dispatch.setdefault(dispatch_id, []).append(execution.id)
        if not open_by_dispatch:
            return
        async with self.sessions() as session:
            existing = set(
                (
                    await session.execute(
                        sa.select(dispatch_t.c.id).where(
                            dispatch_t.c.id.in_(list(open_by_dispatch))
                        )
                    )
                ).scalars()
            )
        for dispatch_id, workflow_ids in open_by_dispatch.items():
            if dispatch_id in existing:
                continue
            for workflow_id in workflow_ids:
                try:
                    await self.temporal.get_workflow_handle(workflow_id).cancel()
                except RPCError as error:
                    if error.status != RPCStatusCode.NOT_FOUND:
                        raise
                    continue
                log.warning(
                    "workflow %s of a deleted dispatch cancelled",
                    workflow_id,
                    extra=ids(dispatch_id=dispatch_id),
                )
                repairs.cancelled.append(workflow_id)
