"""Database activities of the dispatch, cohort and delivery workflows; each is idempotent on its
ids, so a retried or replayed call changes nothing twice."""

import asyncio
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.client import Client as TemporalClient
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.records import confirm_handoffs, finish_open_message
from core import metrics
from core.audience import audience_filter, resend_audience
from core.contracts.cohort import (
    COHORT_ALL,
    ConfirmHandoffsInput,
    ConfirmHandoffsResult,
    FinishCohortInput,
    FinishCohortResult,
)
from core.contracts.control import (
    CONTROL_REFUSED,
    DISPATCH_NOT_FOUND,
    ControlInput,
    ControlResult,
    WakeDeliveriesInput,
    WakeDeliveriesResult,
)
from core.contracts.delivery import FinishMessageInput, FinishMessageResult
from core.contracts.dispatch import (
    CountOpenInput,
    CountOpenResult,
    LayOutInput,
    LayOutResult,
    Recipient,
    SetDispatchStatusInput,
    SetDispatchStatusResult,
)
from core.contracts.legacy import AudiencePage, AudiencePageInput
from core.contracts.shared import (
    DISPATCH_CHANGED,
    DispatchChanged,
    DispatchPlan,
    LoadDispatchInput,
    Window,
    delivery_workflow_id,
)
from core.control import Command, apply_command
from core.db import SessionFactory
from core.errors import Conflict, NotFound
from core.logging import ids
from core.models import (
    OPEN_MESSAGE_STATUSES,
    MessageSender,
    MessageStatus,
    client_t,
    dispatch_t,
    message_t,
    utcnow,
)
from core.windows import next_send_instant, stored_window

log = logging.getLogger(__name__)

# The reason of a message whose client's window does not open before the end, as a cohort and a
# delivery write it.
NO_WINDOW_BEFORE_END = "no window before end"

# Delivery workflows woken per page, and signals in flight at once.
WAKE_PAGE = 1000
WAKE_CONCURRENCY = 32


class DispatchActivities:
    """Reads and writes of dispatches and messages on behalf of the workflows; `temporal`
    signals delivery workflows (a dispatch's own history would not hold a million signals)."""

    def __init__(self, *, sessions: SessionFactory, temporal: TemporalClient | None = None) -> None:
        self.sessions = sessions
        self.temporal = temporal

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
        return DispatchPlan(
            dispatch_id=row.id,
            status=row.status,
            start_at=row.start_at,
            end_at=row.end_at,
            window=Window.of(stored_window(row.window_start, row.window_end)),
            delivery=row.delivery,
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
        """The first shape's page: the next matching clients, each with its message."""
        page = await self.lay_out_audience(
            LayOutInput(input.dispatch_id, input.after_client_id, input.limit, per_client=True)
        )
        return AudiencePage(
            recipients=page.recipients, last_client_id=page.last_client_id, done=page.done
        )

    @activity.defn
    async def lay_out_audience(self, input: LayOutInput) -> LayOutResult:
        """Creates the messages of the next page of matching clients, each in its cohort (the
        client's zone when the dispatch has a window, else one cohort for all), and says which
        cohorts the page holds. Per-client shape: no cohort, and the recipients come back. A
        resend's clients are those of its first dispatch with the statuses it takes (the
        workflow pages them by client id all the same)."""
        async with self.sessions() as session:
            dispatch = (
                await session.execute(
                    sa.select(
                        dispatch_t.c.operator_codes,
                        dispatch_t.c.tags,
                        dispatch_t.c.window_start,
                        dispatch_t.c.window_end,
                        dispatch_t.c.start_at,
                        dispatch_t.c.end_at,
                        dispatch_t.c.resent_from,
                        dispatch_t.c.resend_statuses,
                        dispatch_t.c.resend_sent_before,
                    ).where(dispatch_t.c.id == input.dispatch_id)
                )
            ).one_or_none()
            if dispatch is None:
                return LayOutResult([], last_client_id=input.after_client_id, done=True, laid_out=0)
            clients = (await session.execute(_audience_page(dispatch, input))).all()
            if not clients:
                return LayOutResult([], last_client_id=input.after_client_id, done=True, laid_out=0)
            client_ids = [client.id for client in clients]
            cohorts: list[str | None]
            if input.per_client:
                cohorts = [None] * len(clients)
            elif dispatch.window_start is None:
                cohorts = [COHORT_ALL] * len(clients)
            else:
                cohorts = [client.timezone for client in clients]
            sender = MessageSender.DELIVERY if input.per_client else MessageSender.COHORT
            # A retried activity finds its rows already there: one message per (dispatch, client).
            await session.execute(
                insert(message_t)
                .from_select(
                    ["dispatch_id", "client_id", "cohort", "sender", "phone"],
                    sa.select(
                        sa.literal(input.dispatch_id, sa.BigInteger),
                        sa.func.unnest(sa.cast(client_ids, sa.ARRAY(sa.BigInteger))),
                        sa.func.unnest(sa.cast(cohorts, sa.ARRAY(sa.String))),
                        sa.literal(str(sender)),
                        sa.func.unnest(sa.cast([c.phone for c in clients], sa.ARRAY(sa.String))),
                    ),
                )
                .on_conflict_do_nothing(constraint="uq_message_dispatch_client")
            )
            # The cohorts of the rows as stored: a retried page whose first attempt committed
            # keeps the zones the clients had then.
            stored_cohorts = (
                await session.execute(
                    sa.select(message_t.c.cohort)
                    .distinct()
                    .where(
                        message_t.c.dispatch_id == input.dispatch_id,
                        message_t.c.client_id.in_(client_ids),
                        message_t.c.cohort.is_not(None),
                    )
                )
            ).scalars()
            page_cohorts = sorted(stored_cohorts)
            recipients: list[Recipient] = []
            expired = 0
            if input.per_client:
                zones = {c.id: c.timezone for c in clients}
                expired = await _expire_never_open(session, input.dispatch_id, dispatch, zones)
                recipients = await _open_recipients(session, input.dispatch_id, zones)
            await session.commit()
        if expired:
            metrics.MESSAGES_FINISHED.labels(MessageStatus.EXPIRED).inc(expired)
        log.info(
            "laid out %d clients%s",
            len(clients),
            f", {expired} expired: no window before the end" if expired else "",
            extra=ids(dispatch_id=input.dispatch_id),
        )
        return LayOutResult(
            cohorts=page_cohorts,
            last_client_id=client_ids[-1],
            done=len(clients) < input.limit,
            laid_out=len(clients),
            recipients=recipients,
        )

    @activity.defn
    async def finish_cohort(self, input: FinishCohortInput) -> FinishCohortResult:
        """Moves every pending message the cohort still sends to a final status (its end time
        came before its window opened again); a deleted client's ends cancelled."""
        deleted = message_t.c.client_id.is_(None)
        async with self.sessions() as session:
            result = await session.execute(
                sa.update(message_t)
                .where(
                    message_t.c.dispatch_id == input.dispatch_id,
                    message_t.c.cohort == input.cohort,
                    message_t.c.sender == MessageSender.COHORT,
                    message_t.c.status == MessageStatus.PENDING,
                )
                .values(
                    status=sa.case((deleted, MessageStatus.CANCELLED), else_=input.status),
                    last_error=sa.case((deleted, "client deleted"), else_=input.error),
                )
            )
            await session.commit()
        changed = int(result.rowcount)  # type: ignore[attr-defined]
        metrics.MESSAGES_FINISHED.labels(input.status).inc(changed)
        log.info(
            "cohort %s: %d messages %s: %s",
            input.cohort,
            changed,
            input.status,
            input.error,
            extra=ids(dispatch_id=input.dispatch_id),
        )
        return FinishCohortResult(changed=changed)

    @activity.defn
    async def control_dispatch(self, input: ControlInput) -> ControlResult:
        """Applies a pause, resume or cancel sent to the workflow (the Temporal UI or CLI); a
        command the dispatch's status refuses fails for good, with the reason."""
        try:
            async with self.sessions() as session:
                applied = await apply_command(
                    session=session,
                    dispatch_id=input.dispatch_id,
                    command=Command(input.command),
                    actor=input.actor,
                    reason=input.reason,
                )
        except NotFound as error:
            log.warning("control refused: %s", error, extra=ids(dispatch_id=input.dispatch_id))
            raise ApplicationError(
                str(error), type=DISPATCH_NOT_FOUND, non_retryable=True
            ) from None
        except (Conflict, ValueError) as error:
            log.warning("control refused: %s", error, extra=ids(dispatch_id=input.dispatch_id))
            raise ApplicationError(str(error), type=CONTROL_REFUSED, non_retryable=True) from None
        log.info(
            "dispatch %s%s by %s (%s)",
            applied.status,
            "" if applied.changed else " already",
            input.actor,
            input.reason or "no reason given",
            extra=ids(dispatch_id=input.dispatch_id),
        )
        return ControlResult(applied.status, applied.changed, applied.messages_cancelled)

    @activity.defn
    async def wake_deliveries(self, input: WakeDeliveriesInput) -> WakeDeliveriesResult:
        """Signals `dispatch_changed` to each delivery workflow of the dispatch that may still
        be waiting: a resume then sends at once, a cancel ends them now rather than at their
        next attempt, an edit reaches them. Messages a cancel just ended count too."""
        temporal = self.temporal
        if temporal is None:
            return WakeDeliveriesResult(signalled=0)
        dispatch_id = input.dispatch_id
        gate = asyncio.Semaphore(WAKE_CONCURRENCY)
        signal = DispatchChanged(reason=input.reason)

        async def wake(client_id: int) -> int:
            handle = temporal.get_workflow_handle(delivery_workflow_id(dispatch_id, client_id))
            async with gate:
                try:
                    await handle.signal(DISPATCH_CHANGED, signal)
                except RPCError as error:
                    if error.status != RPCStatusCode.NOT_FOUND:
                        raise
                    return 0  # finished already
            return 1

        after, signalled = 0, 0
        while True:
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        sa.select(message_t.c.id, message_t.c.client_id)
                        .where(
                            message_t.c.dispatch_id == dispatch_id,
                            message_t.c.sender == MessageSender.DELIVERY,
                            message_t.c.status.in_(
                                [*OPEN_MESSAGE_STATUSES, MessageStatus.CANCELLED]
                            ),
                            message_t.c.client_id.is_not(None),
                            message_t.c.id > after,
                        )
                        .order_by(message_t.c.id)
                        .limit(WAKE_PAGE)
                    )
                ).all()
            if not rows:
                break
            signalled += sum(await asyncio.gather(*(wake(row.client_id) for row in rows)))
            after = rows[-1].id
            activity.heartbeat(after)
        log.info(
            "woke %d deliveries (%s)", signalled, input.reason, extra=ids(dispatch_id=dispatch_id)
        )
        return WakeDeliveriesResult(signalled=signalled)

    @activity.defn
    async def confirm_handoffs(self, input: ConfirmHandoffsInput) -> ConfirmHandoffsResult:
        """The cohort started the deliveries of these messages: it owes them nothing more."""
        confirmed = await confirm_handoffs(self.sessions, message_ids=input.message_ids)
        return ConfirmHandoffsResult(confirmed=confirmed)

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
        if changed:
            metrics.MESSAGES_FINISHED.labels(input.status).inc()
        return FinishMessageResult(changed=changed)


def _audience_page(dispatch: Any, input: LayOutInput) -> sa.Select[Any]:
    """The next page of the dispatch's clients by id: its filter's, or a resend's."""
    if dispatch.resend_statuses is None:
        return (
            sa.select(client_t.c.id, client_t.c.timezone, client_t.c.phone)
            .where(
                audience_filter(operator_codes=dispatch.operator_codes, tags=dispatch.tags),
                client_t.c.id > input.after_client_id,
            )
            .order_by(client_t.c.id)
            .limit(input.limit)
        )
    return (
        resend_audience(
            resent_from=dispatch.resent_from,
            statuses=dispatch.resend_statuses,
            sent_before=dispatch.resend_sent_before,
        )
        .where(message_t.c.client_id > input.after_client_id)
        .order_by(message_t.c.client_id)
        .limit(input.limit)
    )


async def _expire_never_open(
    session: AsyncSession, dispatch_id: int, dispatch: Any, zones: dict[int, str]
) -> int:
    """The per-client shape's messages of clients whose zone has no window before the end:
    expired here, as their delivery would at its start, rather than each with a workflow of
    its own (at 5,000 clients, most of them in zones the window misses, the soak run spent
    minutes past the end starting deliveries only to expire them). How many."""
    window = stored_window(dispatch.window_start, dispatch.window_end)
    if window is None:
        return 0
    now = utcnow()
    never = [
        zone
        for zone in set(zones.values())
        if next_send_instant(
            now=max(now, dispatch.start_at),
            start_at=dispatch.start_at,
            end_at=dispatch.end_at,
            window=window,
            timezone=zone,
        )
        is None
    ]
    if not never:
        return 0
    result = await session.execute(
        sa.update(message_t)
        .where(
            message_t.c.dispatch_id == dispatch_id,
            message_t.c.client_id.in_([c for c, zone in zones.items() if zone in never]),
            message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
        )
        .values(status=MessageStatus.EXPIRED, last_error=NO_WINDOW_BEFORE_END)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _open_recipients(
    session: AsyncSession, dispatch_id: int, zones: dict[int, str]
) -> list[Recipient]:
    """The page's clients whose message is still open, with their message ids."""
    messages = (
        await session.execute(
            sa.select(message_t.c.id, message_t.c.client_id).where(
                message_t.c.dispatch_id == dispatch_id,
                message_t.c.client_id.in_(list(zones)),
                message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
            )
        )
    ).all()
    return [
        Recipient(client_id=m.client_id, message_id=m.id, timezone=zones[m.client_id])
        for m in sorted(messages, key=lambda m: m.client_id)
    ]
