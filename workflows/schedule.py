"""A schedule's run: started by the schedule's Temporal Schedule at each time of its cron (or by
a backfill, or "run now"), it makes that time's dispatch through its one activity and ends; the
dispatch's own workflow does the sending."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.schedules import ScheduleActivities
    from core.contracts.schedule import (
        SCHEDULE_REFUSED,
        SCHEDULED_DISPATCH_WORKFLOW,
        MakeScheduledDispatchInput,
        ScheduledDispatchInput,
        ScheduledDispatchResult,
    )
    from core.logging import ids

# Set by Temporal on every workflow a Schedule starts: the time the run is for.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

# A database or Temporal outage is ridden out for this long; then the run fails (the next one
# is not held up: the Schedule's overlap policy buffers one run behind this one).
MAKE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=[SCHEDULE_REFUSED],
)
MAKE_DEADLINE = timedelta(minutes=30)


@workflow.defn(name=SCHEDULED_DISPATCH_WORKFLOW)
class ScheduledDispatchWorkflow:
    """One run of a schedule (id `schedule-<id>-<scheduled time>`): its dispatch made, or the
    reason it made none, as its result."""

    @workflow.run
    async def run(self, input: ScheduledDispatchInput) -> ScheduledDispatchResult:
        scheduled_at = input.scheduled_at or workflow.info().typed_search_attributes.get(
            SCHEDULED_START_TIME
        )
        if scheduled_at is None:
            raise ApplicationError(
                "no scheduled time: start it from its Schedule, or give scheduled_at",
                type=SCHEDULE_REFUSED,
                non_retryable=True,
            )
        made = await workflow.execute_activity_method(
            ScheduleActivities.make_scheduled_dispatch,
            MakeScheduledDispatchInput(schedule_id=input.schedule_id, scheduled_at=scheduled_at),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=MAKE_DEADLINE,
            retry_policy=MAKE_RETRY,
        )
        workflow.logger.info(
            "schedule %s, run of %s: %s %s",
            input.schedule_id,
            scheduled_at.isoformat(),
            made.outcome,
            made.reason or "",
            extra=ids(dispatch_id=made.dispatch_id),
        )
        return ScheduledDispatchResult(
            outcome=made.outcome, dispatch_id=made.dispatch_id, reason=made.reason
        )
