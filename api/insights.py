"""Reads for the people who watch dispatches (the admin page and the API alike): how many clients
a filter matches, sends over time, the remote's error rate, why messages failed, and which
cohorts are waiting for their window and until when."""

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from api.schemas import (
    AudienceCount,
    CohortState,
    DispatchProgressPublic,
    FailureReason,
    RemoteHealth,
    TimelinePoint,
)
from core.audience import audience_size
from core.contracts.cohort import CohortProgress
from core.contracts.dispatch import DispatchProgress
from core.contracts.shared import cohort_workflow_id, dispatch_workflow_id
from core.logging import ids
from core.models import MessageStatus, message_sent_minute_t, message_t, utcnow

log = logging.getLogger(__name__)

# A query waits for a worker to answer: a page must not wait long for a busy or absent one.
QUERY_TIMEOUT = timedelta(seconds=2)
BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


async def audience_count(
    *, session: AsyncSession, operator_codes: list[str], tags: list[str]
) -> AudienceCount:
    """Clients a dispatch with this filter would target now (the stop list left out)."""
    clients = await audience_size(session=session, operator_codes=operator_codes, tags=tags)
    return AudienceCount(clients=clients, operator_codes=operator_codes, tags=tags)


async def timeline(
    *,
    session: AsyncSession,
    dispatch_id: int | None,
    since: datetime,
    bucket: str,
) -> list[TimelinePoint]:
    """Messages sent per bucket (`minute` or `hour`) since `since`, of one dispatch or all;
    buckets without a send are there with 0. Read from the sends per minute the database keeps
    (message_sent_minute), not from the messages."""
    table = message_sent_minute_t.c
    conditions: list[Any] = [table.minute >= _truncate(since, "minute")]
    if dispatch_id is not None:
        conditions.append(table.dispatch_id == dispatch_id)
    slot = sa.func.date_trunc(bucket, table.minute).label("slot")
    rows = await session.execute(
        sa.select(slot, sa.func.sum(table.n))
        .where(*conditions)
        .group_by(slot)
        .having(sa.func.sum(table.n) != 0)
        .order_by(slot)
    )
    counts = {row[0]: int(row[1]) for row in rows}
    if not counts:
        return []
    step = BUCKETS[bucket]
    first = min(counts) if dispatch_id is not None else _truncate(since, bucket)
    last = max(max(counts), _truncate(utcnow(), bucket)) if dispatch_id is None else max(counts)
    points: list[TimelinePoint] = []
    slot_at = first
    while slot_at <= last and len(points) < 10_000:
        points.append(TimelinePoint(at=slot_at, sent=counts.get(slot_at, 0)))
        slot_at += step
    return points


def _truncate(instant: datetime, bucket: str) -> datetime:
    if bucket == "hour":
        return instant.replace(minute=0, second=0, microsecond=0)
    return instant.replace(second=0, microsecond=0)


async def remote_health(*, session: AsyncSession, hours: int) -> RemoteHealth:
    """The remote's error rate over the last `hours`: of the requests made for messages that
    changed in that time, the share that failed (attempts that did not end in `sent`)."""
    since = utcnow() - timedelta(hours=hours)
    row = (
        await session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(message_t.c.attempts), 0),
                sa.func.count().filter(message_t.c.status == MessageStatus.SENT),
                sa.func.count().filter(message_t.c.status == MessageStatus.FAILED),
            ).where(message_t.c.updated_at >= since, message_t.c.attempts > 0)
        )
    ).one()
    attempts, sent, failed = int(row[0]), int(row[1]), int(row[2])
    rate = None if attempts == 0 else round((attempts - sent) / attempts, 4)
    return RemoteHealth(hours=hours, attempts=attempts, sent=sent, failed=failed, error_rate=rate)


async def failure_reasons(
    *, session: AsyncSession, dispatch_id: int, limit: int = 20
) -> list[FailureReason]:
    """Why a dispatch's messages did not go (or not yet): the last error of each message not
    sent, counted, most frequent first."""
    count = sa.func.count().label("count")
    rows = await session.execute(
        sa.select(message_t.c.status, message_t.c.last_error, count)
        .where(
            message_t.c.dispatch_id == dispatch_id,
            message_t.c.status != MessageStatus.SENT,
            message_t.c.last_error.is_not(None),
        )
        .group_by(message_t.c.status, message_t.c.last_error)
        .order_by(count.desc(), message_t.c.status)
        .limit(limit)
    )
    return [FailureReason(status=row[0], reason=row[1], count=int(row[2])) for row in rows]


async def dispatch_progress(
    *, temporal: TemporalClient, dispatch_id: int
) -> DispatchProgressPublic:
    """The dispatch workflow's own account (its `progress` query) and each unfinished cohort's:
    which are asleep waiting for their zone's window, and until when. `available` is false
    when no workflow answers (not started yet, finished long ago, or no worker)."""
    try:
        handle = temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id))
        progress = await handle.query(
            "progress", result_type=DispatchProgress, rpc_timeout=QUERY_TIMEOUT
        )
    except (RPCError, WorkflowQueryFailedError) as error:
        log.info("progress not available: %s", error, extra=ids(dispatch_id=dispatch_id))
        return DispatchProgressPublic(available=False)
    cohorts = []
    finished = set(progress.cohorts_finished)
    for cohort in progress.cohorts:
        if cohort in finished:
            cohorts.append(CohortState(cohort=cohort, phase="finished"))
            continue
        try:
            state = await temporal.get_workflow_handle(
                cohort_workflow_id(dispatch_id, cohort)
            ).query("progress", result_type=CohortProgress, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError):
            cohorts.append(CohortState(cohort=cohort, phase="unknown"))
            continue
        cohorts.append(
            CohortState(
                cohort=cohort,
                phase=state.phase,
                sent=state.sent,
                handed_off=state.handed_off,
                waiting_until=state.waiting_until,
            )
        )
    return DispatchProgressPublic(
        available=True,
        phase=progress.phase,
        clients_laid_out=progress.started,
        cohorts=cohorts,
    )
