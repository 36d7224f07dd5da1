"""A schedule's run: the dispatch of one scheduled time, made through the same service function
as POST /dispatches (its row, its created event, its workflow started), or the reason it is not.

Idempotent on the run's key (`schedule-<id>-<scheduled time>`, the dispatch's Idempotency-Key):
a retried activity, a run repeated by a second backfill of the same time, never makes a second
dispatch. The schedule's row lock orders its runs, so that overlap `skip` judges each one
after the run before it has made its dispatch (committed with it) or given up.
"""

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.client import Client as TemporalClient
from temporalio.exceptions import ApplicationError

from api.schemas.schedules import Overlap, ScheduleDispatch
from api.services import dispatches as dispatches_service
from core.contracts.schedule import (
    SCHEDULE_REFUSED,
    MakeScheduledDispatchInput,
    MakeScheduledDispatchResult,
    RunOutcome,
    run_key,
    temporal_schedule_id,
)
from core.db import SessionFactory
from core.errors import InvalidRequest
from core.logging import ids
from core.models import (
    UNFINISHED_DISPATCH_STATUSES,
    IdempotencyKey,
    Schedule,
    dispatch_t,
    schedule_t,
    utcnow,
)
from core.settings import Settings

log = logging.getLogger(__name__)


class ScheduleActivities:
    """Runs of schedules, with the worker's sessions, its Temporal client (a dispatch's
    workflow is started as the API starts it) and its settings (MAX_SEGMENTS, queues)."""

    def __init__(
        self, *, sessions: SessionFactory, temporal: TemporalClient, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.temporal = temporal
        self.settings = settings

    @activity.defn
    async def make_scheduled_dispatch(
        self, input: MakeScheduledDispatchInput
    ) -> MakeScheduledDispatchResult:
        """Makes the run's dispatch, starting at the scheduled time: unless it was made before
        (its key), the schedule is gone or paused, its previous dispatch is still open (overlap
        `skip`), or the run came after the dispatch's end. Refused by today's rules: a
        non-retryable ScheduleRefused."""
        schedule_id = input.schedule_id
        scheduled_at = input.scheduled_at.astimezone(UTC)
        key = run_key(schedule_id, scheduled_at)
        async with self.sessions() as session:
            row = await session.get(Schedule, schedule_id, with_for_update=True)
            if row is None:
                log.info("schedule %s deleted: its run of %s makes nothing", schedule_id, key)
                return MakeScheduledDispatchResult(outcome=RunOutcome.SCHEDULE_DELETED)
            made = await session.get(IdempotencyKey, key)
            if made is not None:
                made_before = made.dispatch_id
                await session.rollback()
                return MakeScheduledDispatchResult(
                    outcome=RunOutcome.ALREADY_MADE, dispatch_id=made_before
                )
            if row.paused:
                return await _skip(session, row, key, RunOutcome.SKIPPED_PAUSED, "it is paused")
            if row.overlap == Overlap.SKIP:
                still_open = (
                    await session.execute(
                        sa.select(dispatch_t.c.id, dispatch_t.c.status)
                        .where(
                            dispatch_t.c.schedule_id == schedule_id,
                            dispatch_t.c.status.in_(UNFINISHED_DISPATCH_STATUSES),
                        )
                        .order_by(dispatch_t.c.id.desc())
                        .limit(1)
                    )
                ).first()
                if still_open is not None:
                    why = f"its dispatch {still_open.id} is still {still_open.status}"
                    return await _skip(session, row, key, RunOutcome.SKIPPED_OVERLAP, why)
            body = ScheduleDispatch.model_validate(row.dispatch)
            if scheduled_at + timedelta(minutes=body.duration_minutes) <= datetime.now(UTC):
                why = f"its dispatch would have ended {body.duration_minutes} minutes after it"
                return await _skip(session, row, key, RunOutcome.SKIPPED_ENDED, why)
            try:
                saved = await dispatches_service.create_dispatch(
                    session=session,
                    temporal=self.temporal,
                    settings=self.settings,
                    data=body.create_body(scheduled_at),
                    idempotency_key=key,
                    actor=temporal_schedule_id(schedule_id),
                    schedule_id=schedule_id,
                )
            except (InvalidRequest, ValidationError) as error:
                log.error("schedule %s: run %s refused: %s", schedule_id, key, error)
                raise ApplicationError(
                    f"the schedule's dispatch is refused: {error}",
                    type=SCHEDULE_REFUSED,
                    non_retryable=True,
                ) from None
        dispatch_id = saved.dispatch.id
        outcome = RunOutcome.ALREADY_MADE if saved.replayed else RunOutcome.CREATED
        log.info(
            "schedule %s: run %s %s", schedule_id, key, outcome, extra=ids(dispatch_id=dispatch_id)
        )
        return MakeScheduledDispatchResult(outcome=outcome, dispatch_id=dispatch_id)


async def _skip(
    session: AsyncSession, row: Schedule, key: str, outcome: RunOutcome, why: str
) -> MakeScheduledDispatchResult:
    """Counts the skipped run on the schedule (not an edit: updated_at stays), and says why."""
    await session.execute(
        sa.update(schedule_t)
        .where(schedule_t.c.id == row.id)
        .values(
            runs_skipped=schedule_t.c.runs_skipped + 1,
            last_skipped_at=utcnow(),
            updated_at=schedule_t.c.updated_at,
        )
    )
    await session.commit()
    log.info("schedule %s: run %s skipped: %s", row.id, key, why)
    return MakeScheduledDispatchResult(outcome=outcome, reason=why)
