"""The first shape of a dispatch, frozen: one delivery child workflow per client.

Dispatches started before the cohort shape existed run these workflow types ("DispatchWorkflow",
"DeliveryWorkflow") to the end, so their code must not change: a worker replays each running
workflow's history against it, and any difference in the commands it issues fails the workflow
task. tests/workflows/test_replay.py replays histories recorded from this code. New dispatches
run workflows/dispatch.py; its per-client shape runs workflows/delivery.py.
"""

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

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
    from core.contracts.dispatch import (
        CountOpenInput,
        DeliveryFinished,
        DispatchInput,
        DispatchProgress,
        DispatchResult,
        Recipient,
        SetDispatchStatusInput,
    )
    from core.contracts.legacy import AudiencePage, AudiencePageInput
    from core.contracts.shared import (
        DB_TIMEOUT,
        REMOTE_REJECTED,
        DispatchChanged,
        DispatchPlan,
        LoadDispatchInput,
        Window,
        delivery_workflow_id,
        dispatch_workflow_id,
    )
    from core.models import DispatchStatus, MessageStatus
    from core.windows import SendWindow, next_send_instant, parse_hhmm

# Deliveries signal when they finish; this is only the backstop for a lost wake-up.
COMPLETION_RECHECK = timedelta(minutes=10)
# Finished signals that arrive together are counted with one query.
COMPLETION_DEBOUNCE = timedelta(seconds=1)


@workflow.defn(name="DispatchWorkflow")
class LegacyDispatchWorkflow:
    """One per dispatch (id `dispatch-<id>`). The audience never enters its state or history:
    pages of clients are selected by an activity, and the run continues as new every
    `children_per_run` children, carrying only a cursor."""

    def __init__(self) -> None:
        self._changed = False
        self._finished = 0
        self._phase = "loading"
        self._started = 0
        self._cursor = 0

    @workflow.signal
    def dispatch_changed(self, input: DispatchChanged) -> None:
        self._changed = True

    @workflow.signal
    def delivery_finished(self, input: DeliveryFinished) -> None:
        self._finished += 1

    @workflow.query
    def progress(self) -> DispatchProgress:
        return DispatchProgress(
            phase=self._phase, started=self._started, after_client_id=self._cursor
        )

    @workflow.run
    async def run(self, input: DispatchInput) -> DispatchResult:
        self._started, self._cursor = input.started, input.after_client_id
        log_ids = {"dispatch_id": input.dispatch_id}
        plan = await self._load(input)
        if not plan.found:
            return DispatchResult(input.dispatch_id, "deleted", self._started)
        if not input.audience_done:
            plan = await self._wait_for_start(input, plan)
            if not plan.found:
                return DispatchResult(input.dispatch_id, "deleted", self._started)
            await self._set_status(input, DispatchStatus.RUNNING, [DispatchStatus.SCHEDULED])
            # An edit may have landed between the last read and the move to running, which
            # closes edits: read once more.
            plan = await self._load(input)
            workflow.logger.info("dispatch started", extra=log_ids)
            await self._start_deliveries(input, plan)
        self._phase = "awaiting deliveries"
        total = await self._await_deliveries(input)
        await self._set_status(input, DispatchStatus.COMPLETED, [DispatchStatus.RUNNING])
        workflow.logger.info("dispatch completed with %d messages", total, extra=log_ids)
        return DispatchResult(input.dispatch_id, DispatchStatus.COMPLETED, total)

    async def _load(self, input: DispatchInput) -> DispatchPlan:
        return await workflow.execute_activity_method(
            DispatchActivities.load_dispatch,
            LoadDispatchInput(input.dispatch_id),
            start_to_close_timeout=DB_TIMEOUT,
        )

    async def _set_status(
        self, input: DispatchInput, status: DispatchStatus, from_statuses: list[DispatchStatus]
    ) -> None:
        await workflow.execute_activity_method(
            DispatchActivities.set_dispatch_status,
            SetDispatchStatusInput(input.dispatch_id, status, [str(s) for s in from_statuses]),
            start_to_close_timeout=DB_TIMEOUT,
        )

    async def _wait_for_start(self, input: DispatchInput, plan: DispatchPlan) -> DispatchPlan:
        """Sleeps durably until start_at; an edit wakes it to read the new start_at."""
        self._phase = "waiting for start"
        while plan.found and plan.start_at > workflow.now():
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda: self._changed, timeout=plan.start_at - workflow.now()
                )
            except TimeoutError:
                pass
            plan = await self._load(input)
        return plan

    async def _start_deliveries(self, input: DispatchInput, plan: DispatchPlan) -> None:
        self._phase = "starting deliveries"
        started_this_run = 0
        while True:
            page: AudiencePage = await workflow.execute_activity_method(
                DispatchActivities.next_audience_page,
                AudiencePageInput(input.dispatch_id, self._cursor, input.send.page_size),
                start_to_close_timeout=DB_TIMEOUT,
            )
            await asyncio.gather(*(self._start_one(input, plan, r) for r in page.recipients))
            self._started += len(page.recipients)
            started_this_run += len(page.recipients)
            self._cursor = page.last_client_id
            if page.done:
                return
            if (
                started_this_run >= input.send.children_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(self._next_run(input, audience_done=False))

    def _next_run(self, input: DispatchInput, *, audience_done: bool) -> DispatchInput:
        """The input of the run that continues this one: the cursor, never the audience."""
        return DispatchInput(
            dispatch_id=input.dispatch_id,
            send=input.send,
            after_client_id=self._cursor,
            started=self._started,
            audience_done=audience_done,
        )

    async def _start_one(self, input: DispatchInput, plan: DispatchPlan, r: Recipient) -> None:
        try:
            await workflow.start_child_workflow(
                LegacyDeliveryWorkflow.run,
                DeliveryInput(
                    dispatch_id=input.dispatch_id,
                    client_id=r.client_id,
                    message_id=r.message_id,
                    timezone=r.timezone,
                    start_at=plan.start_at,
                    end_at=plan.end_at,
                    window=plan.window,
                    send=input.send,
                ),
                id=delivery_workflow_id(input.dispatch_id, r.client_id),
                # Deliveries outlive the run that started them (continue-as-new).
                parent_close_policy=ParentClosePolicy.ABANDON,
                # A delivery that ran once never runs again, whatever restarts above it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info(
                "delivery already started",
                extra={"dispatch_id": input.dispatch_id, "message_id": r.message_id},
            )

    async def _await_deliveries(self, input: DispatchInput) -> int:
        """Until every message is final; deliveries' signals wake it, the count decides."""
        while True:
            # Reset before counting, not after: a signal that arrives while the count runs
            # (from a message the count may have missed) must still wake the next wait.
            self._finished = 0
            counts = await workflow.execute_activity_method(
                DispatchActivities.count_open_messages,
                CountOpenInput(input.dispatch_id),
                start_to_close_timeout=DB_TIMEOUT,
            )
            if counts.open == 0:
                return counts.total
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(self._next_run(input, audience_done=True))
            try:
                await workflow.wait_condition(
                    lambda: self._finished > 0, timeout=COMPLETION_RECHECK
                )
                await workflow.sleep(COMPLETION_DEBOUNCE)
            except TimeoutError:
                pass


def _send_window(window: Window | None) -> SendWindow | None:
    if window is None:
        return None
    return SendWindow(start=parse_hhmm(window.start), end=parse_hhmm(window.end))


@workflow.defn(name="DeliveryWorkflow")
class LegacyDeliveryWorkflow:
    """Sleeps until the client's window opens, then sends under a retry policy until end_at."""

    @workflow.run
    async def run(self, input: DeliveryInput) -> DeliveryResult:
        status = await self._deliver(input)
        try:
            await workflow.get_external_workflow_handle(
                dispatch_workflow_id(input.dispatch_id)
            ).signal("delivery_finished", DeliveryFinished(input.message_id, status))
        except Exception:
            # The dispatch may be gone (deleted); the message row already tells the outcome.
            workflow.logger.info(
                "dispatch did not take the finished signal",
                extra={"dispatch_id": input.dispatch_id, "message_id": input.message_id},
            )
        return DeliveryResult(message_id=input.message_id, status=status)

    async def _deliver(self, input: DeliveryInput) -> str:
        window = _send_window(input.window)
        not_before: datetime | None = None
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
            status = await self._finish(input, MessageStatus.EXPIRED, reason[:500])
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
            extra={"dispatch_id": input.dispatch_id, "message_id": input.message_id},
        )
        return status
