"""Messages one by one, by id: a dispatch's or a client's, each with its client's zone and, for
one waiting for its window, when the window next opens."""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.paging import Paging
from api.schemas.common import Page
from api.schemas.messages import MessagePublic
from api.services import common as common_service
from core.models import MessageStatus, client_t, dispatch_t, message_t, utcnow
from core.windows import next_send_instant, stored_window


async def list_messages(
    *,
    session: AsyncSession,
    dispatch_id: int,
    status: MessageStatus | None,
    paging: Paging,
    route: str | None = None,
) -> Page[MessagePublic]:
    """A dispatch's messages by id, of one status and one route if given."""
    await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    conditions = [message_t.c.dispatch_id == dispatch_id, *_filters(status, route)]
    return await _message_page(session, conditions, paging)


async def list_client_messages(
    *,
    session: AsyncSession,
    client_id: int,
    status: MessageStatus | None,
    paging: Paging,
    route: str | None = None,
) -> Page[MessagePublic]:
    """One client's messages across every dispatch, by id."""
    await common_service.get_client(session=session, client_id=client_id)
    conditions = [message_t.c.client_id == client_id, *_filters(status, route)]
    return await _message_page(session, conditions, paging)


def _filters(status: MessageStatus | None, route: str | None) -> list[Any]:
    """Any route name is a filter (one removed from the configuration keeps its history)."""
    conditions: list[Any] = []
    if status is not None:
        conditions.append(message_t.c.status == status)
    if route is not None:
        conditions.append(message_t.c.route == route)
    return conditions


async def _message_page(
    session: AsyncSession, conditions: list[Any], paging: Paging
) -> Page[MessagePublic]:
    """Messages by id with their client's zone and, for one waiting for its window, when the
    window next opens."""
    total = await paging.total(session, message_t, conditions)
    query = paging.select(
        sa.select(
            message_t,
            client_t.c.timezone,
            dispatch_t.c.start_at,
            dispatch_t.c.end_at,
            dispatch_t.c.window_start,
            dispatch_t.c.window_end,
            dispatch_t.c.text.label("dispatch_text"),
        )
        .select_from(message_t)
        .join(dispatch_t, dispatch_t.c.id == message_t.c.dispatch_id)
        .outerjoin(client_t, client_t.c.id == message_t.c.client_id)
        .where(*conditions),
        message_t.c.id,
    )
    rows, next_cursor = paging.cut(list(await session.execute(query)), common_service.row_id)
    now = utcnow()
    items = []
    for row in rows:
        item = MessagePublic.model_validate(row)
        item.text = row.text or row.dispatch_text
        if row.status == MessageStatus.PENDING and row.timezone is not None:
            opens = next_send_instant(
                now=now,
                start_at=row.start_at,
                end_at=row.end_at,
                window=stored_window(row.window_start, row.window_end),
                timezone=row.timezone,
            )
            if opens is not None and opens > now:
                item.waiting_until = opens
        items.append(item)
    return Page(
        items=items,
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )
