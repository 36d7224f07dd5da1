"""The test send workflow: a dispatch's text, rendered and stored by the API as test messages,
sent now to a few numbers, each under a retry policy that rides out the remote's outages for
a bounded time; those that never went end failed."""

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.test_send import TestSendActivities
    from core.contracts.shared import DB_TIMEOUT, ERROR_MAX_LENGTH, REMOTE_REJECTED
    from core.contracts.test_send import (
        TEST_RETRY_MAX_SECONDS,
        FailTestMessageInput,
        SendTestMessageInput,
        TestSendInput,
        TestSendResult,
    )
    from core.models import TestMessageStatus


@workflow.defn(name="TestSendWorkflow")
class TestSendWorkflow:
    """One per test send (id `test-send-<first message id>`): every message at once, on the
    send queue, each retried until it goes or its deadline passes."""

    @workflow.run
    async def run(self, input: TestSendInput) -> TestSendResult:
        statuses = await asyncio.gather(
            *(self._send(input, message_id) for message_id in input.message_ids)
        )
        result = TestSendResult()
        for message_id, status in zip(input.message_ids, statuses, strict=True):
            if status == TestMessageStatus.SENT:
                result.sent.append(message_id)
            elif status == TestMessageStatus.FAILED:
                result.failed.append(message_id)
        return result

    async def _send(self, input: TestSendInput, message_id: int) -> str:
        options = input.send
        try:
            outcome = await workflow.execute_activity_method(
                TestSendActivities.send_test_message,
                SendTestMessageInput(message_id=message_id),
                task_queue=options.task_queue,
                start_to_close_timeout=timedelta(seconds=options.attempt_timeout_seconds),
                # Temporal itself stops retrying at the deadline.
                schedule_to_close_timeout=timedelta(seconds=input.deadline_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=options.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(
                        seconds=min(options.retry_max_seconds, TEST_RETRY_MAX_SECONDS)
                    ),
                    non_retryable_error_types=[REMOTE_REJECTED],
                ),
            )
            return outcome.status
        except ActivityError as error:
            if is_cancelled_exception(error):
                raise
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == REMOTE_REJECTED:
                why = str(cause.message)
            else:
                why = f"not sent within {_duration(input.deadline_seconds)}"
        await workflow.execute_activity_method(
            TestSendActivities.fail_test_message,
            FailTestMessageInput(message_id=message_id, reason=why[:ERROR_MAX_LENGTH]),
            start_to_close_timeout=DB_TIMEOUT,
        )
        workflow.logger.info(
            "test message failed: %s",
            why,
            extra={"dispatch_id": input.dispatch_id, "message_id": message_id},
        )
        return TestMessageStatus.FAILED


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} seconds"
    return f"{seconds / 60:g} minutes"
