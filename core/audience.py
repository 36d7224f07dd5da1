"""Which clients a dispatch targets, for the layout of its messages and for the API's answer."""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import client_t


def audience_filter(
    *, operator_codes: Sequence[str], tags: Sequence[str]
) -> sa.ColumnElement[bool]:
    """The clients a dispatch's filter targets: operator code in its codes and tag in its tags
    (either list empty: no condition on it), and not on the stop list. A client who opts out
    after the layout is judged again at each send (core.rules)."""
    conditions: list[sa.ColumnElement[bool]] = [client_t.c.opted_out.is_(False)]
    if operator_codes:
        conditions.append(client_t.c.operator_code.in_(list(operator_codes)))
    if tags:
        conditions.append(client_t.c.tag.in_(list(tags)))
    return sa.and_(sa.true(), *conditions)


async def audience_size(
    *, session: AsyncSession, operator_codes: Sequence[str], tags: Sequence[str]
) -> int:
    """How many clients the filter matches now."""
    condition = audience_filter(operator_codes=operator_codes, tags=tags)
    count = await session.scalar(sa.select(sa.func.count()).select_from(client_t).where(condition))
    return int(count or 0)
