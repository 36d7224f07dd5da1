"""Message counts by status, per dispatch and in total."""

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import MessageStatus, message_t

StatusCounts = dict[str, int]


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
    rows = await session.execute(
        sa.select(message_t.c.dispatch_id, message_t.c.status, sa.func.count())
        .where(message_t.c.dispatch_id.in_(wanted))
        .group_by(message_t.c.dispatch_id, message_t.c.status)
    )
    for dispatch_id, status, count in rows:
        result[dispatch_id][status] = count
    return result


async def total_counts(*, session: AsyncSession) -> StatusCounts:
    """Every message of every dispatch counted by status."""
    counts = empty_counts()
    rows = await session.execute(
        sa.select(message_t.c.status, sa.func.count()).group_by(message_t.c.status)
    )
    for status, count in rows:
        counts[status] = count
    return counts
