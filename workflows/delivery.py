"""The delivery workflow: one message to one client, inside the client's window, under a retry
policy that rides out the remote's outages until the dispatch's end time.

Runs for every client of a per-client dispatch, and for each message a cohort's batch hands off
(its send failed transiently, or its client moved to another zone).
"""

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.dispatch import DispatchActivities
    from activities.send import SendActivities
    from core.contracts.delivery import (
        DeliveryInput,
        DeliveryResult,
        FinishMessageInput,
        SendInput,
        SendResult,
    )
    from core.contracts.dispatch import DELIVERY_FINISHED, DeliveryFinished
    from core.contracts.shared import (
        DB_TIMEOUT,
        DISPATCH_CHANGED,
        ERROR_MAX_LENGTH,
        REMOTE_REJECTED,
        DispatchChanged,
        delivery_workflow_id,
        dispatch_workflow_id,
    )
    from core.models import MessageStatus
    from core.search import of_dispatch
    from core.windows import SendWindow, next_send_instant
    from workflows.plan import load_plan

# Since this patch a delivery wakes on `dispatch_changed` (a resume, a cancel, an edit, its
# client moving zone), from a sleep or from an attempt waiting to be retried, and reads the
# dispatch again; runs that began before it keep sleeping as they did (workflow.patched).
WAKEABLE = "delivery-wakes-on-change"


@workflow.defn(name="DeliveryWorkflow.v2")
class DeliveryWorkflow:
    """Sleeps until the client's window opens, then sends under a retry policy until end_at."""

    @workflow.init
    def __init__(self, input: DeliveryInput) -> None:
        self._changed = False
        self._start_at, self._end_at = input.start_at, input.end_at
        self._window: SendWindow | None = input.window.send_window() if input.window else None

    @workflow.signal(name=DISPATCH_CHANGED)
    def dispatch_changed(self, input: DispatchChanged) -> None:
        """Its dispatch or client changed: stop waiting and judge the message again."""
        self._changed = True

    @workflow.run
    async def run(self, input: DeliveryInput) -> DeliveryResult:
        status = await self._deliver(input)
        try:
            await workflow.get_external_workflow_handle(
                dispatch_workflow_id(input.dispatch_id)
            ).signal(DELIVERY_FINISHED, DeliveryFinished(input.message_id, status))
        except Exception:
            # The dispatch may be gone (deleted); the message row already tells the outcome.
            workflow.logger.info(
                "dispatch did not take the finished signal",
                extra={"dispatch_id": input.dispatch_id, "message_id": input.message_id},
            )
        return DeliveryResult(message_id=input.message_id, status=status)

    async def _deliver(self, input: DeliveryInput) -> str:
        not_before: datetime | None = None
        # The activity's judgement (its zone and window as stored now) of when to try again.
        judged = False
        if input.delay_seconds > 0:
            not_before = workflow.now() + timedelta(seconds=input.delay_seconds)
        while True:
            now = workflow.now()
            lower = max(now, not_before or now)
            opens: datetime | None
            if judged and workflow.patched(WAKEABLE):
                opens = lower if lower < self._end_at else None
            else:
                opens = next_send_instant(
                    now=lower,
                    start_at=self._start_at,
                    end_at=self._end_at,
                    window=self._window,
                    timezone=input.timezone,
                )
            if opens is None:
                return await self._finish(input, MessageStatus.EXPIRED, "no window before end")
            if opens > now:
                if workflow.patched(WAKEABLE):
                    if await self._sleep(opens - now):
                        await self._reload(input)
                else:
                    await workflow.sleep(opens - now)
            result = await self._send(input)
            if result.next_open_at is None:
                return result.status
            # Outside the window (or paused) by the activity's clock: wait for what it saw.
            not_before, judged = result.next_open_at, True

    async def _sleep(self, duration: timedelta) -> bool:
        """Sleeps durably; True when a change woke it early."""
        self._changed = False
        try:
            await workflow.wait_condition(lambda: self._changed, timeout=duration)
        except TimeoutError:
            return False
        return True

    async def _reload(self, input: DeliveryInput) -> None:
        """Reads the dispatch's times and window again, after a change woke the delivery."""
        plan = await load_plan(input.dispatch_id)
        if plan.found:
            self._start_at, self._end_at = plan.start_at, plan.end_at
            self._window = plan.window.send_window() if plan.window else None

    async def _send(self, input: DeliveryInput) -> SendResult:
        if not workflow.patched(WAKEABLE):
            return await self._attempts(input)
        while True:
            self._changed = False
            attempts = asyncio.ensure_future(self._attempts(input, wakeable=True))
            await workflow.wait_condition(self._done_or_changed(attempts))
            if attempts.done():
                return await attempts
            # Woken while an attempt waits to be retried: stop it (one in flight finishes
            # first), read the dispatch again, and attempt anew; the attempt judges the
            # message as it is now stored (cancelled, paused, moved, edited).
            attempts.cancel()
            try:
                return await attempts
            except asyncio.CancelledError:
                pass
            await self._reload(input)

    def _done_or_changed(self, task: "asyncio.Future[SendResult]") -> Callable[[], bool]:
        return lambda: task.done() or self._changed

    async def _attempts(self, input: DeliveryInput, *, wakeable: bool = False) -> SendResult:
        remaining = self._end_at - workflow.now()
        if remaining <= timedelta(0):
            # A timer can fire late (no worker for a while): the message must still end final.
            status = await self._finish(input, MessageStatus.EXPIRED, "end time passed")
            return SendResult(input.message_id, status)
        options = input.send
        try:
            return await workflow.execute_activity_method(
                SendActivities.send_message,
                SendInput(message_id=input.message_id),
                task_queue=options.task_queue,
                start_to_close_timeout=timedelta(seconds=options.attempt_timeout_seconds),
                # Temporal itself stops retrying at the dispatch's end time.
                schedule_to_close_timeout=remaining,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=options.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=options.retry_max_seconds),
                    non_retryable_error_types=[REMOTE_REJECTED],
                ),
                # A request in flight is never abandoned to start another of the same message.
                cancellation_type=(
                    ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                    if wakeable
                    else ActivityCancellationType.TRY_CANCEL
                ),
            )
        except ActivityError as error:
            if wakeable and is_cancelled_exception(error):
                raise asyncio.CancelledError from error
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == REMOTE_REJECTED:
                return SendResult(input.message_id, MessageStatus.FAILED)
            reason = f"not sent before end time: {cause or error}"
            status = await self._finish(input, MessageStatus.EXPIRED, reason[:ERROR_MAX_LENGTH])
            return SendResult(input.message_id, status)

    async def _finish(
        self, input: DeliveryInput, status: MessageStatus, reason: str
    ) -> MessageStatus:
        await workflow.execute_activity_method(
            DispatchActivities.finish_message,
            FinishMessageInput(message_id=input.message_id, status=status, error=reason),
            start_to_close_timeout=DB_TIMEOUT,
        )
        workflow.logger.info(
            "message %s: %s",
            status,
            reason,
            extra={
                "dispatch_id": input.dispatch_id,
                "message_id": input.message_id,
                "client_id": input.client_id,
            },
        )
        return status


async def start_delivery(
    input: DeliveryInput,
) -> "workflow.ChildWorkflowHandle[DeliveryWorkflow, DeliveryResult] | None":
    """Starts the delivery of one message as a child of the calling workflow (a per-client
    dispatch, or a cohort handing a message off); None when it was started before."""
    try:
        return await workflow.start_child_workflow(
            DeliveryWorkflow.run,
            input,
            id=delivery_workflow_id(input.dispatch_id, input.client_id),
            search_attributes=of_dispatch(input.dispatch_id, input.client_id),
            # Deliveries outlive the run that started them (it finishes, or continues as new).
            parent_close_policy=ParentClosePolicy.ABANDON,
            # A delivery that ran once never runs again, whatever restarts above it.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        workflow.logger.info(
            "delivery already started",
            extra={"dispatch_id": input.dispatch_id, "message_id": input.message_id},
        )
        return None
