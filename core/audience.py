"""Which clients a dispatch targets, for the layout of its messages and for the API's answer."""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import client_t


def audience_filter(dispatch: Any) -> sa.ColumnElement[bool]:
    """The clients a dispatch targets: operator code in its codes and tag in its tags (either
    list empty: no condition on it), and not on the stop list. A client who opts out after
    the layout is judged again at each send (core.rules)."""
    conditions: list[sa.ColumnElement[bool]] = [client_t.c.opted_out.is_(False)]
    if dispatch.operator_codes:
        conditions.append(client_t.c.operator_code.in_(list(dispatch.operator_codes)))
    if dispatch.tags:
        conditions.append(client_t.c.tag.in_(list(dispatch.tags)))
    return sa.and_(sa.true(), *conditions)


async def audience_size(*, session: AsyncSession, dispatch: Any) -> int:
    """How many clients the dispatch's filter matches now."""
    count = await session.scalar(
        sa.select(sa.func.count()).select_from(client_t).where(audience_filter(dispatch))
    )
    return int(count or 0)
