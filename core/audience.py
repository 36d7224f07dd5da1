"""Which clients a dispatch targets, for the layout of its messages and for the API's answer:
those its filter matches, or, for a resend, the clients of the first dispatch whose messages
ended in one of the statuses it takes."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import MessageStatus, client_t, message_t


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


def resend_source(
    *, resent_from: int, statuses: Sequence[str], sent_before: datetime | None
) -> sa.ColumnElement[bool]:
    """The messages of dispatch `resent_from` whose clients a resend of it targets: in one of
    `statuses` (a `sent` one only if sent before `sent_before`: no receipt came in time), of a
    client not since deleted (their messages keep no client id)."""
    others = [status for status in statuses if status != MessageStatus.SENT]
    taken: list[sa.ColumnElement[bool]] = [message_t.c.status.in_(others)] if others else []
    if MessageStatus.SENT in statuses and sent_before is not None:
        taken.append(
            sa.and_(message_t.c.status == MessageStatus.SENT, message_t.c.sent_at < sent_before)
        )
    return sa.and_(
        message_t.c.dispatch_id == resent_from,
        sa.or_(sa.false(), *taken),
        message_t.c.client_id.is_not(None),
    )


def resend_audience(
    *, resent_from: int, statuses: Sequence[str], sent_before: datetime | None
) -> sa.Select[Any]:
    """The clients a resend targets (id, zone, phone), as the layout reads them: those of
    `resend_source`, and not on the stop list, as for any new dispatch (one who opts out after
    the layout is judged again at each send). Page it on `message_t.c.client_id`, which the
    first dispatch's unique (dispatch_id, client_id) index orders."""
    return (
        sa.select(client_t.c.id, client_t.c.timezone, client_t.c.phone)
        .select_from(message_t.join(client_t, client_t.c.id == message_t.c.client_id))
        .where(
            resend_source(resent_from=resent_from, statuses=statuses, sent_before=sent_before),
            client_t.c.opted_out.is_(False),
        )
    )


async def resend_audience_size(
    *,
    session: AsyncSession,
    resent_from: int,
    statuses: Sequence[str],
    sent_before: datetime | None,
) -> int:
    """How many clients a resend with these statuses targets now."""
    query = resend_audience(resent_from=resent_from, statuses=statuses, sent_before=sent_before)
    count = await session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    return int(count or 0)
