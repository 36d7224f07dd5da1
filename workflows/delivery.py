"""The delivery workflow: one message to one client, inside the client's window, under a retry
policy that rides out the remote's outages until the dispatch's end time.

Runs for every client of a per-client dispatch, and for each message a cohort's batch hands off
(its send failed transiently, or its client moved to another zone).
"""

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.dispatch import DispatchActivities
    from activities.send import SendActivities
    from core.contracts import (
        DB_TIMEOUT,
        DELIVERY_FINISHED,
        ERROR_MAX_LENGTH,
        REMOTE_REJECTED,
        DeliveryFinished,
        DeliveryInput,
        DeliveryResult,
        FinishMessageInput,
        SendInput,
        SendResult,
        dispatch_workflow_id,
    )
    from core.models import MessageStatus
    from core.windows import next_send_instant


@workflow.defn(name="DeliveryWorkflow.v2")
class DeliveryWorkflow:
    """Sleeps until the client's window opens, then sends under a retry policy until end_at."""

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
        window = input.window.send_window() if input.window else None
        not_before: datetime | None = None
        if input.delay_seconds > 0:
            not_before = workflow.now() + timedelta(seconds=input.delay_seconds)
        while True:
            now = workflow.now()
            opens = next_send_instant(
                now=max(now, not_before or now),
                start_at=input.start_at,
                end_at=input.end_at,
                window=window,
                timezone=input.timezone,
            )
            if opens is None:
                return await self._finish(input, MessageStatus.EXPIRED, "no window before end")
            if opens > now:
                await workflow.sleep(opens - now)
            result = await self._send(input)
            if result.next_open_at is None:
                return result.status
            # Outside the window (or paused) by the activity's clock: wait for what it saw.
            not_before = result.next_open_at

    async def _send(self, input: DeliveryInput) -> SendResult:
        remaining = input.end_at - workflow.now()
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
            )
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == REMOTE_REJECTED:
                return SendResult(input.message_id, MessageStatus.FAILED)
            reason = f"not sent before end time: {cause or error}"
            status = await self._finish(input, MessageStatus.EXPIRED, reason[:ERROR_MAX_LENGTH])
            return SendResult(input.message_id, status)

    async def _finish(self, input: DeliveryInput, status: MessageStatus, reason: str) -> str:
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
