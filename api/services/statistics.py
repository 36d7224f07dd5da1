"""Reads that answer only numbers, counted over messages or clients: a dispatch's messages by
status and by send route (and every dispatch's, with the totals), sends over time, why a
dispatch's messages did not go, the remote's error rate (and hour by hour, with the delivered
share of each hour's sends), how many clients a filter matches and in how many SMS parts a text
goes. The admin page reads them too. The counting queries the
workers share are in `core.stats` and `core.audience`.

A dispatch's read that answers numbers alone is here; one that answers the dispatch itself, its
events or its workflow's progress is in `dispatches`, and its messages in `messages`."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.paging import Paging
from api.schemas.statistics import (
    AudienceCount,
    DispatchStats,
    FailureReason,
    OverallStats,
    RemoteHealth,
    RouteStats,
    StatusCounts,
    TimelinePoint,
)
from api.services import common as common_service
from api.services import previews as previews_service
from core.audience import audience_size
from core.models import (
    WENT_OUT_STATUSES,
    Dispatch,
    DispatchStatus,
    MessageStatus,
    dispatch_t,
    message_sent_minute_t,
    message_t,
    utcnow,
)
from core.stats import (
    counts_by_dispatch,
    route_counts_by_dispatch,
    total_counts,
    total_route_counts,
    total_without_receipt,
    without_receipt_by_dispatch,
)

BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


async def dispatch_stats(
    *, session: AsyncSession, dispatch_id: int, receipt_wait: timedelta
) -> DispatchStats:
    """One dispatch's messages counted by status, and by send route, with those still `sent`
    longer than `receipt_wait` after their send."""
    dispatch = await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    return (
        await stats_of_dispatches(
            session=session, dispatches=[(dispatch_id, dispatch.status)], receipt_wait=receipt_wait
        )
    )[0]


async def stats_of_dispatches(
    *,
    session: AsyncSession,
    dispatches: list[tuple[int, DispatchStatus]],
    receipt_wait: timedelta,
) -> list[DispatchStats]:
    """The statistics of these dispatches (id and status), in their order: four queries for
    them all."""
    ids = [dispatch_id for dispatch_id, _ in dispatches]
    counts = await counts_by_dispatch(session=session, dispatch_ids=ids)
    routes = await route_counts_by_dispatch(session=session, dispatch_ids=ids)
    no_receipt = await without_receipt_by_dispatch(
        session=session, dispatch_ids=ids, sent_before=utcnow() - receipt_wait
    )
    return [
        DispatchStats(
            dispatch_id=dispatch_id,
            status=status,
            messages=StatusCounts.of(counts[dispatch_id]),
            routes=RouteStats.of(routes[dispatch_id], no_receipt[dispatch_id]),
            sent_without_receipt=sum(no_receipt[dispatch_id].values()),
            receipt_wait_hours=receipt_wait / timedelta(hours=1),
        )
        for dispatch_id, status in dispatches
    ]


async def overall_stats(
    *, session: AsyncSession, paging: Paging, receipt_wait: timedelta
) -> OverallStats:
    """A page of dispatches by id with their counts (by status and by route), and totals over
    every message; with the messages still `sent` longer than `receipt_wait` after their
    send."""
    query = paging.select(sa.select(dispatch_t.c.id, dispatch_t.c.status), dispatch_t.c.id)
    dispatches, next_cursor = paging.cut(list(await session.execute(query)), common_service.row_id)
    dispatch_count = (
        await session.execute(sa.select(sa.func.count()).select_from(Dispatch))
    ).scalar_one()
    no_receipt = await total_without_receipt(session=session, sent_before=utcnow() - receipt_wait)
    return OverallStats(
        dispatches=await stats_of_dispatches(
            session=session,
            dispatches=[(d.id, d.status) for d in dispatches],
            receipt_wait=receipt_wait,
        ),
        totals=StatusCounts.of(await total_counts(session=session)),
        routes=RouteStats.of(await total_route_counts(session=session), no_receipt),
        dispatch_count=dispatch_count,
        sent_without_receipt=sum(no_receipt.values()),
        receipt_wait_hours=receipt_wait / timedelta(hours=1),
        next_cursor=next_cursor,
    )


async def audience_count(
    *,
    session: AsyncSession,
    operator_codes: list[str],
    tags: list[str],
    text: str | None = None,
    normalize_text: bool = False,
    max_segments: int | None = None,
) -> AudienceCount:
    """Clients a dispatch with this filter would target now (the stop list left out) and,
    given a text, its SMS parts as a create would store it (normalized when asked); a
    personal text's estimated over a sample of those clients, those lacking a key it needs
    left out (services.previews). A text whose placeholders a create refuses is an
    InvalidRequest on `text`."""
    clients = await audience_size(session=session, operator_codes=operator_codes, tags=tags)
    count = AudienceCount(clients=clients, operator_codes=operator_codes, tags=tags)
    if text is not None:
        prepared = common_service.prepare_text(text, normalize_text=normalize_text)
        estimate, total = await previews_service.audience_estimate(
            session=session,
            template=common_service.text_template(prepared.text),
            audience=previews_service.Audience.of_filter(operator_codes=operator_codes, tags=tags),
            clients=clients,
        )
        count.characters = prepared.size.characters
        count.encoding = estimate.encoding
        count.segments = estimate.segments
        count.segments_total = total
        count.max_segments = max_segments
        count.normalization = prepared.normalization
    return count


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
                sa.func.count().filter(message_t.c.status.in_(WENT_OUT_STATUSES)),
                sa.func.count().filter(message_t.c.status == MessageStatus.FAILED),
            ).where(message_t.c.updated_at >= since, message_t.c.attempts > 0)
        )
    ).one()
    attempts, sent, failed = int(row[0]), int(row[1]), int(row[2])
    rate = None if attempts == 0 else round((attempts - sent) / attempts, 4)
    return RemoteHealth(hours=hours, attempts=attempts, sent=sent, failed=failed, error_rate=rate)


@dataclass(frozen=True)
class HourOfRequests:
    """The remote's requests in one hour (by when their messages last changed, as
    `remote_health` counts them): made, and the messages that went out or were refused."""

    at: datetime  # the hour's start
    attempts: int
    sent: int
    failed: int


async def remote_health_by_hour(*, session: AsyncSession, hours: int) -> list[HourOfRequests]:
    """`remote_health` over the last `hours`, hour by hour (hours without a request left
    out): their sums are its figures."""
    since = utcnow() - timedelta(hours=hours)
    slot = sa.func.date_trunc("hour", message_t.c.updated_at).label("slot")
    rows = await session.execute(
        sa.select(
            slot,
            sa.func.sum(message_t.c.attempts),
            sa.func.count().filter(message_t.c.status.in_(WENT_OUT_STATUSES)),
            sa.func.count().filter(message_t.c.status == MessageStatus.FAILED),
        )
        .where(message_t.c.updated_at >= since, message_t.c.attempts > 0)
        .group_by(slot)
        .order_by(slot)
    )
    return [HourOfRequests(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows]


@dataclass(frozen=True)
class HourOfSends:
    """The messages sent in one hour (by `sent_at`), and what their receipts made of them."""

    at: datetime  # the hour's start
    went_out: int  # sent, delivered and undelivered
    delivered: int
    undelivered: int


async def deliveries_by_hour(*, session: AsyncSession, since: datetime) -> list[HourOfSends]:
    """The messages that went out since `since`, by hour of their send, with how many their
    receipts made delivered and undelivered (hours without a send left out)."""
    slot = sa.func.date_trunc("hour", message_t.c.sent_at).label("slot")
    status = message_t.c.status
    rows = await session.execute(
        sa.select(
            slot,
            sa.func.count(),
            sa.func.count().filter(status == MessageStatus.DELIVERED),
            sa.func.count().filter(status == MessageStatus.UNDELIVERED),
        )
        .where(message_t.c.sent_at >= since, status.in_(WENT_OUT_STATUSES))
        .group_by(slot)
        .order_by(slot)
    )
    return [HourOfSends(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows]


async def failure_reasons(
    *, session: AsyncSession, dispatch_id: int, limit: int = 20
) -> list[FailureReason]:
    """Why a dispatch's messages did not go or did not reach the phone (or not yet): the last
    error of each message neither sent nor delivered (an undelivered one's is its receipt's),
    counted, most frequent first."""
    count = sa.func.count().label("count")
    rows = await session.execute(
        sa.select(message_t.c.status, message_t.c.last_error, count)
        .where(
            message_t.c.dispatch_id == dispatch_id,
            message_t.c.status.not_in([MessageStatus.SENT, MessageStatus.DELIVERED]),
            message_t.c.last_error.is_not(None),
        )
        .group_by(message_t.c.status, message_t.c.last_error)
        .order_by(count.desc(), message_t.c.status)
        .limit(limit)
    )
    return [FailureReason(status=row[0], reason=row[1], count=int(row[2])) for row in rows]
