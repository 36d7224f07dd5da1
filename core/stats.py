"""Message counts by status, per dispatch and in total, read from the counts the database keeps
in step with the messages (`message_count`, and `message_route_count` by send route with their
segments), so that they cost the same at any table size."""

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import MessageStatus, message_count_t, message_route_count_t

StatusCounts = dict[str, int]
# By route, then by status: the messages and the sum of their segments.
RouteCounts = dict[str, dict[str, tuple[int, int]]]

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
