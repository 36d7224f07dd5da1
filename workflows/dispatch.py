"""The dispatch workflow: waits for start_at, lays out the audience, and sends it in one of two
shapes: zone cohorts sending in batches (the default), or one delivery child per client."""

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.dispatch import DispatchActivities
    from core.contracts.cohort import AUDIENCE_COMPLETE, AudienceComplete, CohortInput
    from core.contracts.control import (
        CONTROL_REFUSED,
        CONTROL_UPDATE,
        ControlInput,
        ControlResult,
        ControlSignal,
        ControlUpdate,
        WakeDeliveriesInput,
    )
    from core.contracts.delivery import DeliveryInput
    from core.contracts.dispatch import (
        CLIENT_MOVED,
        COHORT_FINISHED,
        DELIVERY_FINISHED,
        CohortFinished,
        CountOpenInput,
        DeliveryFinished,
        DispatchInput,
        DispatchProgress,
        DispatchResult,
        LayOutInput,
        LayOutResult,
        Recipient,
        SetDispatchStatusInput,
    )
    from core.contracts.shared import (
        DB_TIMEOUT,
        DISPATCH_CHANGED,
        DeliveryShape,
        DispatchChanged,
        DispatchPlan,
        cohort_workflow_id,
    )
    from core.control import Command
    from core.models import DispatchStatus
    from core.search import of_dispatch
    from workflows.cohort import CohortWorkflow
    from workflows.delivery import start_delivery
    from workflows.plan import load_plan

# Waking every delivery of a dispatch may take a while for a large per-client one.
WAKE_TIMEOUT = timedelta(hours=1)
# Since this patch the workflow lets its handlers (a control update, a wake of deliveries)
# finish before it completes or continues as new.
AWAITS_HANDLERS = "dispatch-awaits-handlers"
# Since this patch a cancel answers after its deliveries are woken, not before.
CANCEL_AWAITS_WAKE = "cancel-awaits-wake"
# Cohorts and deliveries signal when they finish; this is only the backstop for a lost wake-up.
COMPLETION_RECHECK = timedelta(minutes=10)
# Finished signals that arrive together are counted with one query; since this patch, not
# once the last cohort has finished (the dispatch completes at once).
COMPLETION_DEBOUNCE = timedelta(seconds=1)
COMPLETES_AT_ONCE = "dispatch-completes-at-once"
# Since this patch a dispatch paused after its last message went final completes too: before,
# its row stayed paused behind a closed workflow, and a resume then revived it as running for
# good (found by the soak run, issue 25).
COMPLETES_WHEN_PAUSED = "dispatch-completes-when-paused"


@workflow.defn(name="DispatchWorkflow.v2")
class DispatchWorkflow:
    """One per dispatch (id `dispatch-<id>`). The audience never enters its state or history:
    pages of clients are laid out as message rows by an activity, and a long run continues as
    new carrying only a cursor (and the names of the cohorts it started)."""

    @workflow.init
    def __init__(self, input: DispatchInput) -> None:
        self._dispatch_id = input.dispatch_id
        self._changed = False
        self._finished = 0
        self._phase = "loading"
        self._started = 0
        self._cursor = 0
        self._cohorts: list[str] = []
        self._cohorts_finished: set[str] = set()
        self._cancelled = False
        self._background: list[asyncio.Future[Any]] = []

    @workflow.signal(name=DISPATCH_CHANGED)
    async def dispatch_changed(self, input: DispatchChanged) -> None:
        """The API changed the row (an edit; a command it applied itself; a client moving
        zone, whose own delivery the API wakes): wake up, and wake the cohorts and, but for a
        pause or a move, the deliveries, which read the row again."""
        self._changed = True
        if input.reason == Command.CANCEL:
            self._cancelled = True
        await self._wake_cohorts()
        if input.reason not in (Command.PAUSE, CLIENT_MOVED):
            self._wake_deliveries_in_background(input.reason)

    @workflow.update(name=CONTROL_UPDATE)
    async def control(self, input: ControlUpdate) -> ControlResult:
        """Pause, resume or cancel, as the API sends it: answers once the row has changed (every
        batch and attempt reads it before a request) and the cohorts are woken; a command the
        status refuses fails with the reason."""
        return await self._control(Command(input.command), input.reason, input.actor)

    @control.validator
    def _validate_control(self, input: ControlUpdate) -> None:
        Command(input.command)

    @workflow.signal(name=Command.PAUSE)
    async def pause(self, input: ControlSignal) -> None:
        await self._control_by_signal(Command.PAUSE, input)

    @workflow.signal(name=Command.RESUME)
    async def resume(self, input: ControlSignal) -> None:
        await self._control_by_signal(Command.RESUME, input)

    @workflow.signal(name=Command.CANCEL)
    async def cancel(self, input: ControlSignal) -> None:
        await self._control_by_signal(Command.CANCEL, input)

    async def _control_by_signal(self, command: Command, input: ControlSignal) -> None:
        """A command sent from the Temporal UI or CLI: the same handler as the update's; a
        refusal has nobody to answer, so it is logged."""
        try:
            await self._control(command, input.reason, "temporal")
        except ApplicationError as error:
            workflow.logger.warning(
                "%s refused: %s", command, error, extra={"dispatch_id": self._dispatch_id}
            )

    async def _control(self, command: Command, reason: str | None, actor: str) -> ControlResult:
        dispatch_id = self._dispatch_id
        log_ids = {"dispatch_id": dispatch_id}
        try:
            result: ControlResult = await workflow.execute_activity_method(
                DispatchActivities.control_dispatch,
                ControlInput(dispatch_id, command, reason, actor=actor),
                start_to_close_timeout=DB_TIMEOUT,
            )
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(cause.message, type=cause.type) from None
            raise ApplicationError(str(error), type=CONTROL_REFUSED) from None
        workflow.logger.info("%s: dispatch is %s", command, result.status, extra=log_ids)
        if not result.changed:
            return result
        self._changed = True
        if command == Command.CANCEL:
            self._cancelled = True
        await self._wake_cohorts()
        if command == Command.CANCEL and workflow.patched(CANCEL_AWAITS_WAKE):
            # Answered once every delivery has heard, so that a DELETE that follows finds no
            # workflow of the dispatch still waiting (and the wake still finds their rows).
            wake = self._wake_deliveries_in_background(command)
            if wake is not None:
                await wake
        elif command != Command.PAUSE:
            # Pause needs no wake-up: every attempt reads the row before its request.
            self._wake_deliveries_in_background(command)
        return result

    def _wake_deliveries_in_background(self, reason: str) -> "asyncio.Future[Any] | None":
        """Starts signalling the dispatch's delivery workflows (a per-client dispatch may have
        a million); the workflow finishes only after it (`_await_handlers`). The future, for a
        caller that must wait for it; None on runs older than AWAITS_HANDLERS, which never
        woke their deliveries."""
        if not workflow.patched(AWAITS_HANDLERS):
            return None
        wake = asyncio.ensure_future(
            workflow.execute_activity_method(
                DispatchActivities.wake_deliveries,
                WakeDeliveriesInput(self._dispatch_id, reason),
                start_to_close_timeout=WAKE_TIMEOUT,
                heartbeat_timeout=DB_TIMEOUT,
            )
        )
        self._background.append(wake)
        return wake

    async def _await_handlers(self) -> None:
        """Before completing or continuing as new: the handlers in progress finish first."""
        if not workflow.patched(AWAITS_HANDLERS):
            return
        await workflow.wait_condition(workflow.all_handlers_finished)
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()

    async def _wake_cohorts(self) -> None:
        await asyncio.gather(*(self._wake_cohort(cohort) for cohort in self._cohorts))

    async def _wake_cohort(self, cohort: str) -> None:
        # No more messages will be laid out once cancelled: a cohort must not wait for them.
        complete = [(AUDIENCE_COMPLETE, AudienceComplete())] if self._cancelled else []
        changed = (DISPATCH_CHANGED, DispatchChanged(reason="dispatch changed"))
        await self._signal_cohort(cohort, *complete, changed)

    async def _signal_cohort(self, cohort: str, *signals: tuple[str, Any]) -> None:
        """Sends the signals in order; a cohort that already finished needs none of them."""
        dispatch_id = self._dispatch_id
        handle = workflow.get_external_workflow_handle(cohort_workflow_id(dispatch_id, cohort))
        try:
            for name, arg in signals:
                await handle.signal(name, arg)
        except Exception:
            workflow.logger.info(
                "cohort %s did not take the signal", cohort, extra={"dispatch_id": dispatch_id}
            )

    @workflow.signal(name=DELIVERY_FINISHED)
    def delivery_finished(self, input: DeliveryFinished) -> None:
        self._finished += 1

    @workflow.signal(name=COHORT_FINISHED)
    def cohort_finished(self, input: CohortFinished) -> None:
        self._cohorts_finished.add(input.cohort)
        self._finished += 1

    @workflow.query
    def progress(self) -> DispatchProgress:
        return DispatchProgress(
            phase=self._phase,
            started=self._started,
            after_client_id=self._cursor,
            cohorts=list(self._cohorts),
            cohorts_finished=sorted(self._cohorts_finished),
        )

    @workflow.run
    async def run(self, input: DispatchInput) -> DispatchResult:
        try:
            result = await self._run(input)
            await self._await_handlers()
            return result
        except (asyncio.CancelledError, ActivityError) as error:
            # A cancellation request (the Temporal UI's "Cancel", the CLI, or the API's
            # DELETE), arriving during a wait or during an activity: the dispatch is cancelled
            # like a cancel command, its cohorts woken to finish, and the workflow ends
            # cancelled.
            if not is_cancelled_exception(error):
                raise
            await self._cancelled_by_request()
            raise

    async def _cancelled_by_request(self) -> None:
        log_ids = {"dispatch_id": self._dispatch_id}
        try:
            await workflow.execute_activity_method(
                DispatchActivities.control_dispatch,
                ControlInput(self._dispatch_id, Command.CANCEL, "workflow cancellation requested"),
                start_to_close_timeout=DB_TIMEOUT,
            )
        except ActivityError as error:
            # Deleted meanwhile, or already over: nothing left to cancel in the database.
            workflow.logger.info("cancellation: %s", error.cause, extra=log_ids)
        workflow.logger.info("dispatch workflow cancelled", extra=log_ids)
        self._cancelled = True
        await self._wake_cohorts()
        self._wake_deliveries_in_background(Command.CANCEL)
        await self._await_handlers()

    async def _run(self, input: DispatchInput) -> DispatchResult:
        self._started, self._cursor = input.started, input.after_client_id
        self._cohorts = list(input.cohorts)
        self._cohorts_finished.update(input.cohorts_finished)
        log_ids = {"dispatch_id": input.dispatch_id}
        plan = await load_plan(input.dispatch_id)
        if not plan.found:
            return DispatchResult(input.dispatch_id, "deleted", self._started)
        if not input.audience_done:
            plan = await self._wait_for_start(input, plan)
            if not plan.found:
                return DispatchResult(input.dispatch_id, "deleted", self._started)
            if plan.status == DispatchStatus.CANCELLED:
                workflow.logger.info("dispatch cancelled before its start", extra=log_ids)
                return DispatchResult(input.dispatch_id, DispatchStatus.CANCELLED, 0)
            await self._set_status(input, DispatchStatus.RUNNING, [DispatchStatus.SCHEDULED])
            # An edit may have landed between the last read and the move to running, which
            # closes edits: read once more.
            plan = await load_plan(input.dispatch_id)
            workflow.logger.info("dispatch started (%s)", plan.delivery, extra=log_ids)
            if plan.delivery == DeliveryShape.PER_CLIENT:
                await self._start_deliveries(input, plan)
            else:
                await self._start_cohorts(input, plan)
        self._phase = "awaiting messages"
        total = await self._await_messages(input)
        # Every message is final: a pause has nothing left to hold.
        completes_from = [DispatchStatus.RUNNING]
        if workflow.patched(COMPLETES_WHEN_PAUSED):
            completes_from.append(DispatchStatus.PAUSED)
        await self._set_status(input, DispatchStatus.COMPLETED, completes_from)
        status = DispatchStatus.CANCELLED if self._cancelled else DispatchStatus.COMPLETED
        # Logged by the activity that moved the status (once), not here: a workflow task that
        # a late signal makes Temporal retry would log it twice.
        return DispatchResult(input.dispatch_id, status, total)

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
        while (
            plan.found
            and plan.status != DispatchStatus.CANCELLED
            and plan.start_at > workflow.now()
        ):
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda: self._changed, timeout=plan.start_at - workflow.now()
                )
            except TimeoutError:
                pass
            plan = await load_plan(input.dispatch_id)
        return plan

    async def _lay_out(self, input: DispatchInput, *, limit: int, per_client: bool) -> LayOutResult:
        return await workflow.execute_activity_method(
            DispatchActivities.lay_out_audience,
            LayOutInput(input.dispatch_id, self._cursor, limit, per_client=per_client),
            start_to_close_timeout=DB_TIMEOUT,
        )

    def _next_run(self, input: DispatchInput, *, audience_done: bool) -> DispatchInput:
        """The input of the run that continues this one: the cursor, never the audience."""
        return DispatchInput(
            dispatch_id=input.dispatch_id,
            send=input.send,
            after_client_id=self._cursor,
            started=self._started,
            audience_done=audience_done,
            cohorts=self._cohorts,
            cohorts_finished=sorted(self._cohorts_finished),
        )

    # Cohort shape.

    async def _start_cohorts(self, input: DispatchInput, plan: DispatchPlan) -> None:
        """Lays out every message, starting each cohort as soon as its first message exists;
        then tells the cohorts that the audience is complete."""
        self._phase = "laying out the audience"
        while True:
            page = await self._lay_out(input, limit=input.send.layout_page_size, per_client=False)
            new = [cohort for cohort in page.cohorts if cohort not in self._cohorts]
            # Known before they start: a cancellation during the starts must reach them too.
            self._cohorts += new
            await asyncio.gather(*(self._start_cohort(input, cohort) for cohort in new))
            self._started += page.laid_out
            self._cursor = page.last_client_id
            if page.done or self._cancelled:
                break
            if workflow.info().get_current_history_length() > input.send.history_limit:
                await self._await_handlers()
                workflow.continue_as_new(self._next_run(input, audience_done=False))
        complete = (AUDIENCE_COMPLETE, AudienceComplete())
        await asyncio.gather(*(self._signal_cohort(c, complete) for c in self._cohorts))

    async def _start_cohort(self, input: DispatchInput, cohort: str) -> None:
        try:
            await workflow.start_child_workflow(
                CohortWorkflow.run,
                CohortInput(dispatch_id=input.dispatch_id, cohort=cohort, send=input.send),
                id=cohort_workflow_id(input.dispatch_id, cohort),
                search_attributes=of_dispatch(input.dispatch_id),
                # Cohorts outlive the run that started them (continue-as-new).
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info(
                "cohort %s already started", cohort, extra={"dispatch_id": input.dispatch_id}
            )

    # Per-client shape.

    async def _start_deliveries(self, input: DispatchInput, plan: DispatchPlan) -> None:
        self._phase = "starting deliveries"
        started_this_run = 0
        while True:
            page = await self._lay_out(input, limit=input.send.page_size, per_client=True)
            await asyncio.gather(*(self._start_one(input, plan, r) for r in page.recipients))
            self._started += len(page.recipients)
            started_this_run += len(page.recipients)
            self._cursor = page.last_client_id
            if page.done or self._cancelled:
                return
            if (
                started_this_run >= input.send.children_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await self._await_handlers()
                workflow.continue_as_new(self._next_run(input, audience_done=False))

    async def _start_one(self, input: DispatchInput, plan: DispatchPlan, r: Recipient) -> None:
        await start_delivery(
            DeliveryInput(
                dispatch_id=input.dispatch_id,
                client_id=r.client_id,
                message_id=r.message_id,
                timezone=r.timezone,
                start_at=plan.start_at,
                end_at=plan.end_at,
                window=plan.window,
                send=input.send,
            )
        )

    async def _await_messages(self, input: DispatchInput) -> int:
        """Until every message is final and every cohort has finished; cohorts' and deliveries'
        signals wake it, the count decides."""
        while True:
            # Reset before counting, not after: a signal that arrives while the count runs
            # (from a message the count may have missed) must still wake the next wait.
            self._finished = 0
            counts = await workflow.execute_activity_method(
                DispatchActivities.count_open_messages,
                CountOpenInput(input.dispatch_id),
                start_to_close_timeout=DB_TIMEOUT,
            )
            if counts.open == 0 and self._cohorts_finished.issuperset(self._cohorts):
                return counts.total
            if workflow.info().is_continue_as_new_suggested():
                await self._await_handlers()
                workflow.continue_as_new(self._next_run(input, audience_done=True))
            try:
                await workflow.wait_condition(
                    lambda: self._finished > 0, timeout=COMPLETION_RECHECK
                )
                last = bool(self._cohorts) and self._cohorts_finished.issuperset(self._cohorts)
                if not (workflow.patched(COMPLETES_AT_ONCE) and last):
                    await workflow.sleep(COMPLETION_DEBOUNCE)
            except TimeoutError:
                pass
