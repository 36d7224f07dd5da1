"""The cohort workflow: the clients of one dispatch whose window opens at the same instant
(one time zone, or everyone when the dispatch has no window) wait and send together."""

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.dispatch import DispatchActivities
    from activities.send import SendActivities
    from core.contracts.cohort import (
        AUDIENCE_COMPLETE,
        COHORT_ALL,
        AudienceComplete,
        CohortInput,
        CohortProgress,
        CohortResult,
        ConfirmHandoffsInput,
        FinishCohortInput,
        Handoff,
        SendBatchInput,
        SendBatchResult,
    )
    from core.contracts.delivery import DeliveryInput, DeliveryResult
    from core.contracts.dispatch import COHORT_FINISHED, CohortFinished
    from core.contracts.shared import (
        DB_TIMEOUT,
        DISPATCH_CHANGED,
        DispatchChanged,
        DispatchPlan,
        SendOutcome,
        dispatch_workflow_id,
    )
    from core.models import MessageStatus
    from core.windows import next_send_instant
    from workflows.delivery import DeliveryWorkflow, start_delivery
    from workflows.plan import load_plan

# A batch's own limit: a batch at a low rate cap may take long; heartbeats tell a dead one.
BATCH_TIMEOUT = timedelta(hours=2)
# While the dispatch is still laying out messages, a cohort that ran out looks again after this
# long, doubling up to STARVED_POLL_MAX (a dispatch stopped mid-layout must not be polled for
# ever at full speed).
STARVED_POLL = timedelta(seconds=1)
STARVED_POLL_MAX = timedelta(minutes=1)
# Since this patch a cohort woken by a change reads the dispatch again (an edit of end_at or of
# the window applies to the sleep that follows).
RELOADS_ON_CHANGE = "cohort-reloads-on-change"


@workflow.defn(name="CohortWorkflow")
class CohortWorkflow:
    """One per zone of a dispatch (id `dispatch-<id>-zone-<zone>`): sleeps durably until the
    zone's window opens, then sends its messages in batch activities; sleeps again when the
    window closes; stops at end_at. Messages whose send failed go to delivery workflows of
    their own, whose retry policy rides out the remote's outage."""

    def __init__(self) -> None:
        self._audience_done = False
        # The dispatch changed (pause, resume, cancel): a sleep in progress ends early.
        self._changed = False
        self._phase = "loading"
        self._sent = 0
        self._handed_off = 0
        self._batches = 0
        self._waiting_until: datetime | None = None
        # Deliveries started by this run; it finishes after them, so that the Temporal UI shows
        # the cohort open while any of its messages is still being retried.
        self._deliveries: list[workflow.ChildWorkflowHandle[DeliveryWorkflow, DeliveryResult]] = []

    @workflow.signal(name=AUDIENCE_COMPLETE)
    def audience_complete(self, input: AudienceComplete) -> None:
        self._audience_done = True

    @workflow.signal(name=DISPATCH_CHANGED)
    def dispatch_changed(self, input: DispatchChanged) -> None:
        self._changed = True

    @workflow.query
    def progress(self) -> CohortProgress:
        return CohortProgress(
            phase=self._phase,
            sent=self._sent,
            handed_off=self._handed_off,
            waiting_until=self._waiting_until,
            batches=self._batches,
        )

    @workflow.run
    async def run(self, input: CohortInput) -> CohortResult:
        self._audience_done = self._audience_done or input.audience_done
        self._sent, self._handed_off = input.sent, input.handed_off
        log_ids = {"dispatch_id": input.dispatch_id}
        plan = await load_plan(input.dispatch_id)
        if plan.found:
            await self._send_all(input, plan)
        self._phase = "awaiting deliveries"
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        self._phase = "finished"
        workflow.logger.info(
            "cohort %s finished: %d sent, %d handed off",
            input.cohort,
            self._sent,
            self._handed_off,
            extra=log_ids,
        )
        try:
            await workflow.get_external_workflow_handle(
                dispatch_workflow_id(input.dispatch_id)
            ).signal(COHORT_FINISHED, CohortFinished(input.cohort))
        except Exception:
            workflow.logger.info("dispatch did not take the finished signal", extra=log_ids)
        return CohortResult(input.dispatch_id, input.cohort, self._sent, self._handed_off)

    async def _send_all(self, input: CohortInput, plan: DispatchPlan) -> None:
        window = plan.window.send_window() if plan.window else None
        zone = None if input.cohort == COHORT_ALL else input.cohort
        cursor = input.after_message_id
        not_before: datetime | None = None
        backoff = timedelta(0)
        starved = STARVED_POLL
        while True:
            now = workflow.now()
            lower = max(now, not_before or now)
            opens: datetime | None = lower if lower < plan.end_at else None
            if zone is not None:
                opens = next_send_instant(
                    now=lower,
                    start_at=plan.start_at,
                    end_at=plan.end_at,
                    window=window,
                    timezone=zone,
                )
            if opens is None:
                reason = "end time passed" if lower >= plan.end_at else "no window before end"
                await self._expire_rest(input, reason)
                return
            if opens > now:
                self._phase = "waiting for the window" if zone else "waiting"
                self._waiting_until = opens
                woken = await self._sleep(opens - now)
                self._waiting_until = None
                if woken:
                    # Woken by a change of the dispatch (a resume, a cancel, an edit): a batch
                    # judges every message now (outside the window it sends nothing and says
                    # so), and the next sleep follows the dispatch as it is now.
                    not_before = None
                    if workflow.patched(RELOADS_ON_CHANGE):
                        plan = await load_plan(input.dispatch_id)
                        if not plan.found:
                            return
                        window = plan.window.send_window() if plan.window else None
            self._phase = "sending"
            # A change that lands while the batch runs must still cut the next sleep short.
            self._changed = False
            audience_was_done = self._audience_done
            result = await self._batch(input, cursor)
            self._batches += 1
            await self._hand_off(input, plan, result.handoffs)
            self._sent += result.sent
            if result.stopped == SendOutcome.DELETED:
                return
            if result.stopped == SendOutcome.REMOTE_DOWN:
                # The remote fails everything: probe it again later instead of handing every
                # message to a delivery of its own.
                backoff = min(
                    max(backoff * 2, timedelta(seconds=input.send.retry_initial_seconds)),
                    timedelta(seconds=input.send.retry_max_seconds),
                )
                not_before = workflow.now() + backoff
            elif result.stopped is not None:
                not_before = result.not_before
            else:
                backoff, not_before = timedelta(0), None
                cursor = result.last_message_id
                if result.exhausted:
                    if audience_was_done:
                        return
                    if not self._audience_done:
                        self._phase = "waiting for the audience"
                        # More messages may still be laid out: look again shortly, less
                        # often while none come.
                        if result.sent:
                            starved = STARVED_POLL
                        await self._wait_for_audience(starved)
                        starved = min(starved * 2, STARVED_POLL_MAX)
            if workflow.info().get_current_history_length() > input.send.history_limit:
                workflow.continue_as_new(
                    CohortInput(
                        dispatch_id=input.dispatch_id,
                        cohort=input.cohort,
                        send=input.send,
                        after_message_id=cursor,
                        audience_done=self._audience_done,
                        sent=self._sent,
                        handed_off=self._handed_off,
                    )
                )

    async def _sleep(self, duration: timedelta) -> bool:
        """Sleeps durably; True when a change of the dispatch woke it early."""
        try:
            await workflow.wait_condition(lambda: self._changed, timeout=duration)
        except TimeoutError:
            return False
        self._changed = False
        return True

    async def _wait_for_audience(self, at_most: timedelta) -> None:
        try:
            await workflow.wait_condition(lambda: self._audience_done, timeout=at_most)
        except TimeoutError:
            pass

    async def _batch(self, input: CohortInput, cursor: int) -> SendBatchResult:
        options = input.send
        return await workflow.execute_activity_method(
            SendActivities.send_batch,
            SendBatchInput(
                dispatch_id=input.dispatch_id,
                cohort=input.cohort,
                after_message_id=cursor,
                limit=options.batch_size,
                breaker_failures=options.breaker_failures,
                retry_delay_seconds=options.retry_initial_seconds,
            ),
            task_queue=options.task_queue,
            start_to_close_timeout=BATCH_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=options.attempt_timeout_seconds),
        )

    async def _hand_off(
        self, input: CohortInput, plan: DispatchPlan, handoffs: list[Handoff]
    ) -> None:
        """A delivery workflow for each message the batch could not finish; then the database
        learns that the cohort owes them nothing more."""
        if not handoffs:
            return
        await asyncio.gather(*(self._start_delivery(input, plan, h) for h in handoffs))
        self._handed_off += len(handoffs)
        await workflow.execute_activity_method(
            DispatchActivities.confirm_handoffs,
            ConfirmHandoffsInput([h.message_id for h in handoffs]),
            start_to_close_timeout=DB_TIMEOUT,
        )

    async def _start_delivery(
        self, input: CohortInput, plan: DispatchPlan, handoff: Handoff
    ) -> None:
        handle = await start_delivery(
            DeliveryInput(
                dispatch_id=input.dispatch_id,
                client_id=handoff.client_id,
                message_id=handoff.message_id,
                timezone=handoff.timezone,
                start_at=plan.start_at,
                end_at=plan.end_at,
                window=plan.window,
                send=input.send,
                delay_seconds=handoff.delay_seconds,
            )
        )
        if handle is not None:
            self._deliveries.append(handle)

    async def _expire_rest(self, input: CohortInput, reason: str) -> None:
        """No opening is left before end_at: what is still pending in the cohort expires, now
        and, if the dispatch is still laying out, once the last messages are there."""
        self._phase = "expiring"
        while True:
            audience_was_done = self._audience_done
            await workflow.execute_activity_method(
                DispatchActivities.finish_cohort,
                FinishCohortInput(
                    dispatch_id=input.dispatch_id,
                    cohort=input.cohort,
                    status=MessageStatus.EXPIRED,
                    error=reason,
                ),
                start_to_close_timeout=DB_TIMEOUT,
            )
            if audience_was_done:
                return
            await self._wait_for_audience(STARVED_POLL_MAX)
            if not (await load_plan(input.dispatch_id)).found:
                return
