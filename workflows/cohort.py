"""The cohort workflow: the clients of one dispatch whose window opens at the same instant
(one time zone, or everyone when the dispatch has no window) wait and send together."""

import asyncio
from dataclasses import dataclass, field
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
        SendOptions,
        SendOutcome,
        dispatch_workflow_id,
    )
    from core.models import MessageStatus
    from core.windows import SendWindow, next_send_instant
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
# Since this patch a cohort keeps several batches in flight (SendOptions.parallel_batches).
PARALLEL_BATCHES = "cohort-parallel-batches"


@dataclass
class _Pace:
    """How a cohort's sending loop paces itself: the dispatch as last read, and when to try
    again (a window's opening, a pause's recheck, the backoff of a remote that is down)."""

    plan: DispatchPlan
    window: SendWindow | None
    not_before: datetime | None = None
    backoff: timedelta = timedelta(0)
    starved: timedelta = STARVED_POLL

    def back_off(self, send: SendOptions) -> None:
        """The remote fails everything: probe it again later instead of handing every message
        to a delivery of its own."""
        self.backoff = min(
            max(self.backoff * 2, timedelta(seconds=send.retry_initial_seconds)),
            timedelta(seconds=send.retry_max_seconds),
        )
        self.not_before = workflow.now() + self.backoff


@dataclass
class _Round:
    """One round of parallel batches: how its lanes ended."""

    # A breaker opened by a batch of the dispatch since then stops every batch of the round.
    started_at: datetime
    stops: dict[SendOutcome, datetime | None] = field(default_factory=dict)
    starved: bool = False  # a lane ran out while the audience was still being laid out
    full: bool = False  # the history reached its limit: continue as new
    sent: int = 0


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
        self._in_flight = 0
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
            batches_in_flight=self._in_flight,
        )

    @workflow.run
    async def run(self, input: CohortInput) -> CohortResult:
        self._audience_done = self._audience_done or input.audience_done
        self._sent, self._handed_off = input.sent, input.handed_off
        log_ids = {"dispatch_id": input.dispatch_id}
        plan = await load_plan(input.dispatch_id)
        if plan.found:
            if workflow.patched(PARALLEL_BATCHES):
                await self._send_in_lanes(input, plan)
            else:
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
        """One batch at a time (runs started before PARALLEL_BATCHES)."""
        pace = _Pace(plan, plan.window.send_window() if plan.window else None)
        cursor = input.after_message_id
        while True:
            if not await self._wait_to_send(input, pace):
                return
            self._phase = "sending"
            # A change that lands while the batch runs must still cut the next sleep short.
            self._changed = False
            audience_was_done = self._audience_done
            result = await self._batch(input, cursor)
            self._batches += 1
            await self._hand_off(input, pace.plan, result.handoffs)
            self._sent += result.sent
            if result.stopped == SendOutcome.DELETED:
                return
            if result.stopped == SendOutcome.REMOTE_DOWN:
                pace.back_off(input.send)
            elif result.stopped is not None:
                pace.not_before = result.not_before
            else:
                pace.backoff, pace.not_before = timedelta(0), None
                cursor = result.last_message_id
                if result.exhausted:
                    if audience_was_done:
                        return
                    if not self._audience_done:
                        await self._starve(pace, fed=result.sent > 0)
            if workflow.info().get_current_history_length() > input.send.history_limit:
                workflow.continue_as_new(self._next_run(input, cursor))

    async def _send_in_lanes(self, input: CohortInput, plan: DispatchPlan) -> None:
        """Up to `parallel_batches` batches in flight, one per lane: lane i sends the messages
        whose id % lanes == i, a batch after another, so that every worker polling the send
        queue takes a share and a batch's tail overlaps the next. A lane that stops (window
        closed, paused, breaker open) ends the round: the others stop starting batches, and
        those in flight stop themselves (each judges every message; the breaker is counted on
        the dispatch's row); then the cohort paces itself as one."""
        pace = _Pace(plan, plan.window.send_window() if plan.window else None)
        lanes = max(1, input.send.parallel_batches)
        cursors = list(input.lane_cursors)
        if len(cursors) != lanes:
            cursors = [input.after_message_id] * lanes
        finished: set[int] = set()
        while True:
            if not await self._wait_to_send(input, pace):
                return
            self._phase = "sending"
            self._changed = False
            round = _Round(started_at=workflow.now())
            await asyncio.gather(
                *(
                    self._lane(input, pace.plan, lane, cursors, finished, round)
                    for lane in range(lanes)
                    if lane not in finished
                )
            )
            if SendOutcome.DELETED in round.stops or len(finished) == lanes:
                return
            if SendOutcome.REMOTE_DOWN in round.stops:
                pace.back_off(input.send)
            elif round.stops:
                pace.not_before = min((t for t in round.stops.values() if t), default=None)
            else:
                pace.backoff, pace.not_before = timedelta(0), None
                if round.starved and not self._audience_done:
                    await self._starve(pace, fed=round.sent > 0)
            if round.full or (
                workflow.info().get_current_history_length() > input.send.history_limit
            ):
                workflow.continue_as_new(self._next_run(input, min(cursors), cursors))

    async def _lane(
        self,
        input: CohortInput,
        plan: DispatchPlan,
        lane: int,
        cursors: list[int],
        finished: set[int],
        round: "_Round",
    ) -> None:
        while not round.stops and not round.full:
            if workflow.info().get_current_history_length() > input.send.history_limit:
                round.full = True
                return
            audience_was_done = self._audience_done
            self._in_flight += 1
            try:
                result = await self._batch(
                    input,
                    cursors[lane],
                    lane=lane,
                    lanes=len(cursors),
                    round_started_at=round.started_at,
                )
            finally:
                self._in_flight -= 1
            self._batches += 1
            await self._hand_off(input, plan, result.handoffs)
            self._sent += result.sent
            round.sent += result.sent
            if result.stopped == SendOutcome.WORKER_SHUTDOWN:
                continue  # the next batch of the lane goes to another worker
            if result.stopped is not None:
                round.stops.setdefault(result.stopped, result.not_before)
                return
            cursors[lane] = result.last_message_id
            if result.exhausted:
                if audience_was_done:
                    finished.add(lane)
                else:
                    round.starved = True
                return

    async def _wait_to_send(self, input: CohortInput, pace: "_Pace") -> bool:
        """Sleeps until the cohort may send (its zone's window open, a backoff or a pause's
        recheck over); False when it is over: its messages expired, or the dispatch is gone."""
        zone = None if input.cohort == COHORT_ALL else input.cohort
        plan = pace.plan
        now = workflow.now()
        lower = max(now, pace.not_before or now)
        opens: datetime | None = lower if lower < plan.end_at else None
        if zone is not None:
            opens = next_send_instant(
                now=lower,
                start_at=plan.start_at,
                end_at=plan.end_at,
                window=pace.window,
                timezone=zone,
            )
        if opens is None:
            reason = "end time passed" if lower >= plan.end_at else "no window before end"
            await self._expire_rest(input, reason)
            return False
        if opens > now:
            self._phase = "waiting for the window" if zone else "waiting"
            self._waiting_until = opens
            woken = await self._sleep(opens - now)
            self._waiting_until = None
            if woken:
                # Woken by a change of the dispatch (a resume, a cancel, an edit): a batch
                # judges every message now (outside the window it sends nothing and says
                # so), and the next sleep follows the dispatch as it is now.
                pace.not_before = None
                if workflow.patched(RELOADS_ON_CHANGE):
                    pace.plan = await load_plan(input.dispatch_id)
                    if not pace.plan.found:
                        return False
                    pace.window = pace.plan.window.send_window() if pace.plan.window else None
        return True

    async def _starve(self, pace: "_Pace", *, fed: bool) -> None:
        """More messages may still be laid out: look again shortly, less often while none
        come."""
        self._phase = "waiting for the audience"
        if fed:
            pace.starved = STARVED_POLL
        await self._wait_for_audience(pace.starved)
        pace.starved = min(pace.starved * 2, STARVED_POLL_MAX)

    def _next_run(
        self, input: CohortInput, cursor: int, lane_cursors: list[int] | None = None
    ) -> CohortInput:
        return CohortInput(
            dispatch_id=input.dispatch_id,
            cohort=input.cohort,
            send=input.send,
            after_message_id=cursor,
            audience_done=self._audience_done,
            sent=self._sent,
            handed_off=self._handed_off,
            lane_cursors=list(lane_cursors or []),
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

    async def _batch(
        self,
        input: CohortInput,
        cursor: int,
        *,
        lane: int = 0,
        lanes: int = 1,
        round_started_at: datetime | None = None,
    ) -> SendBatchResult:
        """One batch: on the send queue for the old path (no round), on the batches' queue
        for parallel batches (or the send queue, for a dispatch started before it had one)."""
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
                lane=lane,
                lanes=lanes,
                round_started_at=round_started_at,
            ),
            task_queue=(
                options.task_queue
                if round_started_at is None
                else options.batch_task_queue or options.task_queue
            ),
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
