"""Database activities of the dispatch and delivery workflows; each is idempotent on its ids."""

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from temporalio import activity

from core.contracts import (
    AudiencePage,
    AudiencePageInput,
    CountOpenInput,
    CountOpenResult,
    DispatchPlan,
    FinishMessageInput,
    FinishMessageResult,
    LoadDispatchInput,
    Recipient,
    SetDispatchStatusInput,
    SetDispatchStatusResult,
    Window,
)
from core.db import SessionFactory
from core.logging import ids
from core.models import OPEN_MESSAGE_STATUSES, Client, Dispatch, Message, utcnow

log = logging.getLogger(__name__)

client_t: sa.Table = Client.__table__  # type: ignore[attr-defined]
dispatch_t: sa.Table = Dispatch.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]


def audience_filter(dispatch: Any) -> sa.ColumnElement[bool]:
    """The clients a dispatch targets: operator code in its codes and tag in its tags."""
    conditions: list[sa.ColumnElement[bool]] = []
    if dispatch.operator_codes:
        conditions.append(client_t.c.operator_code.in_(list(dispatch.operator_codes)))
    if dispatch.tags:
        conditions.append(client_t.c.tag.in_(list(dispatch.tags)))
    return sa.and_(sa.true(), *conditions)


async def finish_open_message(
    sessions: SessionFactory, *, message_id: int, status: str, error: str | None
) -> bool:
    """Moves a pending or retrying message to a final status; whether it did."""
    async with sessions() as session:
        result = await session.execute(
            sa.update(message_t)
            .where(message_t.c.id == message_id, message_t.c.status.in_(OPEN_MESSAGE_STATUSES))
            .values(status=status, last_error=sa.func.coalesce(error, message_t.c.last_error))
        )
        await session.commit()
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    if changed:
        log.info("message is %s: %s", status, error, extra=ids(message_id=message_id))
    return changed


class DispatchActivities:
    """Reads and writes of dispatches and messages on behalf of the workflows."""

    def __init__(self, *, sessions: SessionFactory) -> None:
        self.sessions = sessions

    @activity.defn
    async def load_dispatch(self, input: LoadDispatchInput) -> DispatchPlan:
        """The dispatch's schedule and window as the database has them now."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    sa.select(dispatch_t).where(dispatch_t.c.id == input.dispatch_id)
                )
            ).one_or_none()
        if row is None:
            log.warning("dispatch not found", extra=ids(dispatch_id=input.dispatch_id))
            now = utcnow()
            return DispatchPlan(input.dispatch_id, "deleted", now, now, None, found=False)
        window = None
        if row.window_start is not None and row.window_end is not None:
            window = Window(row.window_start.strftime("%H:%M"), row.window_end.strftime("%H:%M"))
        return DispatchPlan(
            dispatch_id=row.id,
            status=row.status,
            start_at=row.start_at,
            end_at=row.end_at,
            window=window,
        )

    @activity.defn
    async def set_dispatch_status(self, input: SetDispatchStatusInput) -> SetDispatchStatusResult:
        """Moves the dispatch to a status, only from the given ones (so replays change nothing)."""
        statement = (
            sa.update(dispatch_t)
            .where(dispatch_t.c.id == input.dispatch_id)
            .values(status=input.status)
        )
        if input.from_statuses:
            statement = statement.where(dispatch_t.c.status.in_(input.from_statuses))
        async with self.sessions() as session:
            result = await session.execute(statement)
            await session.commit()
        changed = bool(result.rowcount)  # type: ignore[attr-defined]
        if changed:
            log.info("dispatch is %s", input.status, extra=ids(dispatch_id=input.dispatch_id))
        return SetDispatchStatusResult(changed=changed)

    @activity.defn
    async def next_audience_page(self, input: AudiencePageInput) -> AudiencePage:
        """The next page of matching clients, each with its message row (created if missing)."""
        async with self.sessions() as session:
            dispatch = (
                await session.execute(
                    sa.select(dispatch_t.c.operator_codes, dispatch_t.c.tags).where(
                        dispatch_t.c.id == input.dispatch_id
                    )
                )
            ).one_or_none()
            if dispatch is None:
                return AudiencePage(recipients=[], last_client_id=input.after_client_id, done=True)
            clients = (
                await session.execute(
                    sa.select(client_t.c.id, client_t.c.timezone)
                    .where(audience_filter(dispatch), client_t.c.id > input.after_client_id)
                    .order_by(client_t.c.id)
                    .limit(input.limit)
                )
            ).all()
            if not clients:
                return AudiencePage(recipients=[], last_client_id=input.after_client_id, done=True)
            client_ids = [client.id for client in clients]
            # A retried activity finds its rows already there: one message per (dispatch, client).
            await session.execute(
                insert(message_t)
                .from_select(
                    ["dispatch_id", "client_id"],
                    sa.select(
                        sa.literal(input.dispatch_id, sa.BigInteger),
                        sa.func.unnest(sa.cast(client_ids, sa.ARRAY(sa.BigInteger))),
                    ),
                )
                .on_conflict_do_nothing(constraint="uq_message_dispatch_client")
            )
            messages = (
                await session.execute(
                    sa.select(message_t.c.id, message_t.c.client_id).where(
                        message_t.c.dispatch_id == input.dispatch_id,
                        message_t.c.client_id.in_(client_ids),
                        message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
                    )
                )
            ).all()
            await session.commit()
        zones = {client.id: client.timezone for client in clients}
        recipients = [
            Recipient(client_id=m.client_id, message_id=m.id, timezone=zones[m.client_id])
            for m in sorted(messages, key=lambda m: m.client_id)
        ]
        log.info(
            "audience page of %d clients",
            len(recipients),
            extra=ids(dispatch_id=input.dispatch_id),
        )
        return AudiencePage(
            recipients=recipients,
            last_client_id=client_ids[-1],
            done=len(clients) < input.limit,
        )

    @activity.defn
    async def count_open_messages(self, input: CountOpenInput) -> CountOpenResult:
        """How many of the dispatch's messages are still pending or retrying, and in all."""
        open_count = sa.func.count().filter(message_t.c.status.in_(OPEN_MESSAGE_STATUSES))
        async with self.sessions() as session:
            row = (
                await session.execute(
                    sa.select(open_count, sa.func.count()).where(
                        message_t.c.dispatch_id == input.dispatch_id
                    )
                )
            ).one()
        return CountOpenResult(open=row[0], total=row[1])

    @activity.defn
    async def finish_message(self, input: FinishMessageInput) -> FinishMessageResult:
        """Moves an open message to a final status; a final one stays as it is."""
        changed = await finish_open_message(
            self.sessions, message_id=input.message_id, status=input.status, error=input.error
        )
        return FinishMessageResult(changed=changed)
