"""Writes of message outcomes: one message, or a batch's outcomes in one statement.

The one home of the rule every writer follows: a final status is never reopened, except by
`sent`, which wins over anything set meanwhile (the remote has the message) but for
`delivered` and `undelivered`, which a receipt made of a send already recorded.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core import tracing
from core.contracts.shared import ERROR_MAX_LENGTH
from core.db import SessionFactory
from core.logging import ids
from core.models import (
    OPEN_MESSAGE_STATUSES,
    MessageSender,
    MessageStatus,
    client_t,
    message_t,
)

log = logging.getLogger(__name__)

# What the spans of the outcome writes say of them (OpenTelemetry's database conventions).
_WRITE_ATTRIBUTES = {
    "db.system.name": "postgresql",
    "db.operation.name": "UPDATE",
    "db.collection.name": "message",
}


def in_lane(lane: int, lanes: int) -> list[sa.ColumnElement[bool]]:
    """The condition of one lane's messages (none with one lane)."""
    return [] if lanes <= 1 else [message_t.c.id % lanes == lane]


def error_text(error: object) -> str:
    return str(error)[:ERROR_MAX_LENGTH]


async def finish_open_message(
    sessions: SessionFactory,
    *,
    message_id: int,
    status: str,
    error: str | None,
    dispatch_id: int | None = None,
) -> bool:
    """Moves a pending or retrying message to a final status; whether it did."""
    async with sessions() as session:
        result = await session.execute(
            sa.update(message_t)
            .where(message_t.c.id == message_id, message_t.c.status.in_(OPEN_MESSAGE_STATUSES))
            .values(status=status, last_error=sa.func.coalesce(error, message_t.c.last_error))
            .returning(message_t.c.dispatch_id)
        )
        changed = result.scalar_one_or_none()
        await session.commit()
    if changed is not None:
        log.info(
            "message is %s: %s",
            status,
            error,
            extra=ids(message_id=message_id, dispatch_id=changed),
        )
    return changed is not None


async def record_attempt(
    sessions: SessionFactory,
    *,
    message_id: int,
    status: MessageStatus,
    error: str | None = None,
    sent_at: datetime | None = None,
    attempted: bool = True,
    route: str | None = None,
    segments: int | None = None,
    text: str | None = None,
) -> None:
    """A send of the message came to this outcome: a request went out (`attempted`), through
    `route` (kept when None), carrying `segments` of `text` (its client's rendering of a
    personal text; None: the dispatch's text, or kept)."""
    # Sent wins over anything set meanwhile, but for what a receipt made of it since.
    condition = (
        message_t.c.status.not_in([MessageStatus.DELIVERED, MessageStatus.UNDELIVERED])
        if status == MessageStatus.SENT
        else message_t.c.status.in_(OPEN_MESSAGE_STATUSES)
    )
    # One row: the write of a single send (a delivery's attempt).
    with tracing.span(
        "record_attempt",
        {**_WRITE_ATTRIBUTES, "mailing.message_id": message_id, "mailing.status": str(status)},
    ):
        async with sessions() as session:
            await session.execute(
                sa.update(message_t)
                .where(message_t.c.id == message_id, condition)
                .values(
                    attempts=message_t.c.attempts + int(attempted),
                    status=status,
                    last_error=error,
                    sent_at=sa.func.coalesce(sent_at, message_t.c.sent_at),
                    route=sa.func.coalesce(route, message_t.c.route),
                    segments=sa.func.coalesce(segments, message_t.c.segments),
                    text=sa.func.coalesce(text, message_t.c.text),
                )
            )
            await session.commit()


@dataclass
class Outcome:
    """What became of one message of a batch."""

    message_id: int
    status: MessageStatus
    attempted: bool = False  # a request went out: attempts + 1
    error: str | None = None
    sent_at: datetime | None = None
    # The message leaves its cohort's batches: the cohort owes it a delivery of its own.
    hand_off: bool = False
    # The route that has (or may have) it, and the segments of its text; the text itself
    # when it was rendered for its client (a personal text).
    route: str | None = None
    segments: int | None = None
    text: str | None = None


_RECORD_OUTCOMES = sa.text(
    """
    UPDATE message AS m SET
        status = v.status,
        attempts = m.attempts + CASE WHEN v.attempted THEN 1 ELSE 0 END,
        last_error = CASE WHEN v.status = 'sent' THEN NULL
                          ELSE coalesce(v.error, m.last_error) END,
        sent_at = coalesce(v.sent_at, m.sent_at),
        sender = CASE WHEN v.hand_off THEN 'owed' ELSE m.sender END,
        route = coalesce(v.route, m.route),
        segments = coalesce(v.segments, m.segments),
        text = coalesce(v.text, m.text),
        updated_at = now()
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:attempted AS boolean[]),
        CAST(:errors AS text[]), CAST(:sent_at AS timestamptz[]), CAST(:hand_off AS boolean[]),
        CAST(:routes AS text[]), CAST(:segments AS smallint[]), CAST(:texts AS text[])
    ) AS v(id, status, attempted, error, sent_at, hand_off, route, segments, text)
    WHERE m.id = v.id AND (
        (v.status = 'sent' AND m.status NOT IN ('delivered', 'undelivered'))
        OR m.status IN ('pending', 'retrying'))
    """
)


async def record_outcomes(sessions: SessionFactory, outcomes: list[Outcome]) -> int:
    """Writes a batch's outcomes in one statement; how many rows changed."""
    if not outcomes:
        return 0
    message_ids = [o.message_id for o in outcomes]
    # The span names the messages it writes: one message's request span leads to its write.
    with tracing.span(
        "record_outcomes",
        {
            **_WRITE_ATTRIBUTES,
            "mailing.messages": len(outcomes),
            "mailing.message_ids": message_ids,
        },
    ):
        async with sessions() as session:
            result = await session.execute(
                _RECORD_OUTCOMES,
                {
                    "ids": message_ids,
                    "statuses": [str(o.status) for o in outcomes],
                    "attempted": [o.attempted for o in outcomes],
                    "errors": [o.error for o in outcomes],
                    "sent_at": [o.sent_at for o in outcomes],
                    "hand_off": [o.hand_off for o in outcomes],
                    "routes": [o.route for o in outcomes],
                    "segments": [o.segments for o in outcomes],
                    "texts": [o.text for o in outcomes],
                },
            )
            await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def owed_handoffs(
    sessions: SessionFactory,
    *,
    dispatch_id: int,
    cohort: str,
    limit: int,
    lane: int = 0,
    lanes: int = 1,
) -> list[Any]:
    """Messages a cohort handed off whose delivery it has not confirmed starting (a batch that
    wrote them may have failed before returning them); of one lane, when the cohort has
    several (each lane's next batch takes its own)."""
    async with sessions() as session:
        rows = await session.execute(
            sa.select(
                message_t.c.id, message_t.c.client_id, message_t.c.status, client_t.c.timezone
            )
            .select_from(message_t)
            .outerjoin(client_t, client_t.c.id == message_t.c.client_id)
            .where(
                message_t.c.dispatch_id == dispatch_id,
                message_t.c.cohort == cohort,
                message_t.c.sender == sa.literal_column("'owed'"),
                *in_lane(lane, lanes),
            )
            .order_by(message_t.c.id)
            .limit(limit)
        )
        return list(rows)


async def confirm_handoffs(sessions: SessionFactory, *, message_ids: list[int]) -> int:
    """The deliveries of these messages are started: their cohort owes them nothing more."""
    async with sessions() as session:
        result = await session.execute(
            sa.update(message_t)
            .where(message_t.c.id.in_(message_ids), message_t.c.sender == MessageSender.OWED)
            .values(sender=MessageSender.DELIVERY)
        )
        await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
