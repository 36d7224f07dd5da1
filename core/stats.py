"""Message counts by status, per dispatch and in total, read from the counts the database keeps
in step with the messages (`message_count`, and `message_route_count` by send route with their
segments), so that they cost the same at any table size; and the messages still `sent` that
got no receipt in time, which no trigger can keep (time alone moves a message there), read from
a partial index of the messages still sent."""

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import MessageStatus, message_count_t, message_route_count_t

StatusCounts = dict[str, int]
# By route, then by status: the messages and the sum of their segments.
RouteCounts = dict[str, dict[str, tuple[int, int]]]
# Messages without a receipt in time, by route (None: sent before routes were recorded).
NoReceiptCounts = dict[str | None, int]

# Only one process folds at a time (pg_try_advisory_xact_lock).
_COMPACT_LOCK = 0x6D73675F636E74  # "msg_cnt"


def _fold(table: str, key: str, sums: str = "n") -> sa.TextClause:
    """Folds the rows of each (dispatch_id, key) of a table kept by triggers into one (none
    when their sums are 0), and says how many rows were removed. `key` and `sums` are lists
    of columns."""
    columns = sums.split(", ")
    totals = ", ".join(f"sum({column})" for column in columns)
    nonzero = " OR ".join(f"sum({column}) <> 0" for column in columns)
    return sa.text(
        f"""
        WITH gone AS (
            DELETE FROM {table}
            WHERE (dispatch_id, {key}) IN (
                SELECT dispatch_id, {key} FROM {table}
                GROUP BY dispatch_id, {key} HAVING count(*) > 1)
            RETURNING dispatch_id, {key}, {sums}),
        folded AS (
            INSERT INTO {table} (dispatch_id, {key}, {sums})
            SELECT dispatch_id, {key}, {totals} FROM gone
            GROUP BY dispatch_id, {key} HAVING {nonzero})
        SELECT count(*) FROM gone
        """
    )


# Message counts by status, sent messages by minute, messages and segments by route.
_FOLDS = (
    _fold("message_count", "status"),
    _fold("message_sent_minute", "minute"),
    _fold("message_route_count", "route, status", "n, segments"),
)


def empty_counts() -> StatusCounts:
    return {status.value: 0 for status in MessageStatus}


async def counts_by_dispatch(
    *, session: AsyncSession, dispatch_ids: Iterable[int]
) -> dict[int, StatusCounts]:
    """For each dispatch id, its messages counted by status (every status present)."""
    wanted = list(dispatch_ids)
    result = {dispatch_id: empty_counts() for dispatch_id in wanted}
    if not wanted:
        return result
    c = message_count_t.c
    rows = await session.execute(
        sa.select(c.dispatch_id, c.status, sa.func.sum(c.n))
        .where(c.dispatch_id.in_(wanted))
        .group_by(c.dispatch_id, c.status)
    )
    for dispatch_id, status, count in rows:
        result[dispatch_id][status] = int(count)
    return result


async def total_counts(*, session: AsyncSession) -> StatusCounts:
    """Every message of every dispatch counted by status."""
    counts = empty_counts()
    c = message_count_t.c
    rows = await session.execute(sa.select(c.status, sa.func.sum(c.n)).group_by(c.status))
    for status, count in rows:
        counts[status] = int(count)
    return counts


async def route_counts_by_dispatch(
    *, session: AsyncSession, dispatch_ids: Iterable[int]
) -> dict[int, RouteCounts]:
    """For each dispatch id, its messages that have a route, by route and status, with their
    segments (a dispatch without any: empty)."""
    wanted = list(dispatch_ids)
    result: dict[int, RouteCounts] = {dispatch_id: {} for dispatch_id in wanted}
    if not wanted:
        return result
    c = message_route_count_t.c
    rows = await session.execute(
        sa.select(c.dispatch_id, c.route, c.status, sa.func.sum(c.n), sa.func.sum(c.segments))
        .where(c.dispatch_id.in_(wanted))
        .group_by(c.dispatch_id, c.route, c.status)
        .having(sa.func.sum(c.n) != 0)
    )
    for dispatch_id, route, status, count, segments in rows:
        result[dispatch_id].setdefault(route, {})[status] = (int(count), int(segments))
    return result


async def total_route_counts(*, session: AsyncSession) -> RouteCounts:
    """Every dispatch's messages that have a route, by route and status, with their segments."""
    c = message_route_count_t.c
    rows = await session.execute(
        sa.select(c.route, c.status, sa.func.sum(c.n), sa.func.sum(c.segments))
        .group_by(c.route, c.status)
        .having(sa.func.sum(c.n) != 0)
    )
    result: RouteCounts = {}
    for route, status, count, segments in rows:
        result.setdefault(route, {})[status] = (int(count), int(segments))
    return result


# Still-sent messages of a dispatch read after `sent_before` (their receipt may still come)
# before the other side is counted instead: bounds the cost of a dispatch whose messages all
# wait (a gateway that sends no receipts) to this many index entries.
WAITING_PROBE = 20_000

# The still-`sent` messages of each dispatch sent at :before or later, by route, at most
# :probe of each dispatch: one range of ix_message_sent_waiting per dispatch, index-only.
_WAITING = sa.text(
    """
    SELECT d.id, waiting.route, count(*) FROM unnest(CAST(:ids AS bigint[])) AS d(id)
    JOIN LATERAL (
        SELECT route FROM message
        WHERE dispatch_id = d.id AND status = 'sent' AND sent_at >= :before
        LIMIT :probe) AS waiting ON true
    GROUP BY d.id, waiting.route
    """
)
# Those sent before :before, by route: the other range of the same index.
_NO_RECEIPT = sa.text(
    """
    SELECT dispatch_id, route, count(*) FROM message
    WHERE dispatch_id = ANY(CAST(:ids AS bigint[])) AND status = 'sent' AND sent_at < :before
    GROUP BY dispatch_id, route
    """
)


def _left_over(sent: int, by_route: dict[str, int], waiting: NoReceiptCounts) -> NoReceiptCounts:
    """Per route (None: no route), the sent messages less those still waiting. The counts and
    the waiting ones are read a statement apart: a send between them could make a count one
    short for a moment, never negative."""
    left: NoReceiptCounts = {}
    for route, n in [*by_route.items(), (None, sent - sum(by_route.values()))]:
        if n - waiting.get(route, 0) > 0:
            left[route] = n - waiting.get(route, 0)
    return left


async def without_receipt_by_dispatch(
    *, session: AsyncSession, dispatch_ids: Iterable[int], sent_before: datetime
) -> dict[int, NoReceiptCounts]:
    """For each dispatch id, its messages still `sent` that were sent before `sent_before`,
    by route (a dispatch without any: empty). Each dispatch's are its `sent` count (the
    triggers') less those sent since, whose receipt may still come: a few while the gateways
    send receipts, whereas the messages that never got one pile up. When more than
    WAITING_PROBE of a dispatch's are still waiting, its others are counted directly. Either
    way a read of the partial index, of the fewer side or little more."""
    wanted = list(dispatch_ids)
    result: dict[int, NoReceiptCounts] = {dispatch_id: {} for dispatch_id in wanted}
    counts = await counts_by_dispatch(session=session, dispatch_ids=wanted)
    sent = {d: counts[d][MessageStatus.SENT] for d in wanted if counts[d][MessageStatus.SENT] > 0}
    if not sent:
        return result
    params = {"ids": list(sent), "before": sent_before, "probe": WAITING_PROBE}
    waiting: dict[int, NoReceiptCounts] = {d: {} for d in sent}
    for dispatch_id, route, count in await session.execute(_WAITING, params):
        waiting[dispatch_id][route] = int(count)
    heavy = [d for d in sent if sum(waiting[d].values()) >= WAITING_PROBE]
    light = [d for d in sent if d not in heavy]
    routes = await route_counts_by_dispatch(session=session, dispatch_ids=light)
    for d in light:
        by_route = {
            route: by_status[MessageStatus.SENT][0]
            for route, by_status in routes[d].items()
            if MessageStatus.SENT in by_status
        }
        result[d] = _left_over(sent[d], by_route, waiting[d])
    if heavy:
        for dispatch_id, route, count in await session.execute(
            _NO_RECEIPT, params | {"ids": heavy}
        ):
            result[dispatch_id][route] = int(count)
    return result


async def total_without_receipt(*, session: AsyncSession, sent_before: datetime) -> NoReceiptCounts:
    """Every dispatch's messages still `sent` that were sent before `sent_before`, by route:
    the sum over the dispatches that have sent ones, each counted as above."""
    c = message_count_t.c
    ids = (
        await session.execute(
            sa.select(c.dispatch_id)
            .where(c.status == MessageStatus.SENT)
            .group_by(c.dispatch_id)
            .having(sa.func.sum(c.n) > 0)
        )
    ).scalars()
    total: NoReceiptCounts = {}
    by_dispatch = await without_receipt_by_dispatch(
        session=session, dispatch_ids=list(ids), sent_before=sent_before
    )
    for counts in by_dispatch.values():
        for route, n in counts.items():
            total[route] = total.get(route, 0) + n
    return total


async def compact_counts(session: AsyncSession) -> int:
    """Folds the rows of each (dispatch, status), and of each (dispatch, minute) of sends, that
    has several into one (none when the sum is 0: a deleted dispatch leaves nothing).
    Concurrent writers only append, so nothing they add is lost. Says how many rows were
    folded; 0 when another process is folding."""
    if not await session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(_COMPACT_LOCK))):
        return 0
    removed = 0
    for fold in _FOLDS:
        removed += int(await session.scalar(fold) or 0)
    await session.commit()
    return removed
