"""A schedule's run (`ScheduledDispatchWorkflow`): the Temporal Schedule `schedule-<id>` starts
one at each time of its cron, and its one activity makes the run's dispatch, or says why not.

The run's workflow id is Temporal's: the action's id (`schedule-<id>`) and the scheduled time,
`schedule-7-2026-12-07T07:00:00Z`; the same string is the Idempotency-Key of the dispatch it
makes, so that a retried or repeated run of one scheduled time never makes a second.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

SCHEDULED_DISPATCH_WORKFLOW = "ScheduledDispatchWorkflow"

# The activity's non-retryable failure: the stored dispatch is refused by today's rules (a text
# over a lowered MAX_SEGMENTS); every run fails so until the schedule is edited.
SCHEDULE_REFUSED = "ScheduleRefused"


def temporal_schedule_id(schedule_id: int) -> str:
    """`schedule-7`: the Temporal Schedule's id, and the first part of each run's workflow id."""
    return f"schedule-{schedule_id}"


def run_key(schedule_id: int, scheduled_at: datetime) -> str:
    """`schedule-7-2026-12-07T07:00:00Z`: the run's workflow id as Temporal names it, and the
    Idempotency-Key of the dispatch the run makes (UTC, to the second)."""
    instant = scheduled_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{temporal_schedule_id(schedule_id)}-{instant}"


class RunOutcome(StrEnum):
    """What a run did: made its dispatch, found it made already (a retry, a backfill of a time
    done before), or made none, and why."""

    CREATED = "created"
    ALREADY_MADE = "already_made"
    # overlap `skip`: the schedule's previous dispatch is still scheduled, running or paused.
    SKIPPED_OVERLAP = "skipped_overlap"
    # The schedule is paused (a backfill or a late run while it is).
    SKIPPED_PAUSED = "skipped_paused"
    # The run came so late that its dispatch would already have ended.
    SKIPPED_ENDED = "skipped_ended"
    # The schedule was deleted before its run came.
    SCHEDULE_DELETED = "schedule_deleted"


@dataclass
class ScheduledDispatchInput:
    """One run of schedule `schedule_id`. `scheduled_at` is None when the Temporal Schedule
    starts it: the run reads its time from `TemporalScheduledStartTime`."""

    schedule_id: int
    scheduled_at: datetime | None = None


@dataclass
class ScheduledDispatchResult:
    """The run's outcome (a RunOutcome value), its dispatch if it made or found one, and why
    it made none."""

    outcome: str
    dispatch_id: int | None = None
    reason: str | None = None


@dataclass
class MakeScheduledDispatchInput:
    """Makes the dispatch of schedule `schedule_id` for `scheduled_at` (its start; its end
    `duration_minutes` later), unless the schedule says otherwise."""

    schedule_id: int
    scheduled_at: datetime


@dataclass
class MakeScheduledDispatchResult:
    outcome: str
    dispatch_id: int | None = None
    reason: str | None = None
