"""The test send's activities: one test message through the normal send path, and the end of one
whose retries ran out.

A test message goes out now: no window, no end time, no pause, no stop list (the API judged
the number when it stored the row). It shares the worker's router and request slots with the
dispatches' sends, so it takes its route's token of the cap, follows failover, and counts for
the route's circuit like any message; `FailurePolicy.judge` gives the verdict. Its outcome is
written to `test_message` alone: the dispatch's messages and counts never see it.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import FailurePolicy, Fate
from activities.records import error_text
from activities.routing import Router
from activities.sender import Sender
from core.contracts.shared import ERROR_MAX_LENGTH, REMOTE_UNAVAILABLE
from core.contracts.test_send import (
    FailTestMessageInput,
    FailTestMessageResult,
    SendTestMessageInput,
    SendTestMessageResult,
)
from core.db import SessionFactory
from core.logging import ids
from core.models import TestMessageStatus, test_message_t
from core.rules import Action, Decision

log = logging.getLogger(__name__)

# What the router needs of a message (Router.ticket and Router.send).
_COLUMNS = (
    test_message_t.c.id,
    test_message_t.c.dispatch_id,
    test_message_t.c.client_id,
    test_message_t.c.phone,
    test_message_t.c.operator_code,
    test_message_t.c.text,
    test_message_t.c.route,
    test_message_t.c.status,
)
_SEND_NOW = Decision(Action.SEND)

# The status an attempt leaves, by its verdict. Our credentials refused ends a test failed
# with the reason at once: the dispatch is not paused for a test, and an operator waiting
# for the phone learns at once what to fix.
_STATUS_OF = {
    Fate.SENT: TestMessageStatus.SENT,
    Fate.FAILED: TestMessageStatus.FAILED,
    Fate.KEEP_OPEN: TestMessageStatus.FAILED,
    Fate.RETRY: TestMessageStatus.PENDING,
}


async def _send_now() -> Decision:
    """A test message is sent now, whatever the time: asked again after a failover's wait."""
    return _SEND_NOW


class TestSendActivities:
    """Test sends through the worker's one router (each route's client, cap and circuit) and
    its request slots, shared with the dispatches' sends."""

    def __init__(self, *, sessions: SessionFactory, sender: Sender) -> None:
        self.sessions = sessions
        self.router: Router = sender.router
        self.slots = sender.slots
        # A policy of its own: a test's failures neither feed nor spend the dispatch's error
        # budget (which would pause the dispatch).
        self.policy = FailurePolicy()

    @activity.defn
    async def send_test_message(self, input: SendTestMessageInput) -> SendTestMessageResult:
        """Sends the test message once through its route (and on, in a failover); a transient
        failure raises to be retried, a refusal ends it failed."""
        message_id = input.message_id
        async with self.sessions() as session:
            row = (
                await session.execute(sa.select(*_COLUMNS).where(test_message_t.c.id == message_id))
            ).one_or_none()
        if row is None:
            log.info("test message no longer exists", extra=ids(message_id=message_id))
            return SendTestMessageResult(message_id, "deleted")
        log_ids = ids(message_id=message_id, dispatch_id=row.dispatch_id, client_id=row.client_id)
        if row.status != TestMessageStatus.PENDING:
            # An earlier attempt finished it (its answer was lost): nothing goes out again.
            log.info("test message already %s", row.status, extra=log_ids)
            return SendTestMessageResult(message_id, row.status)
        # The slot is held until the outcome is written, as in the dispatches' sends.
        async with self.slots:
            ticket = await self.router.ticket(row)
            attempt = await self.router.send(row, ticket, _send_now)
            verdict = self.policy.judge(
                attempt.error,
                message_id=message_id,
                dispatch_id=row.dispatch_id,
                client_id=row.client_id,
                route=attempt.via,
                retry_note="test message will retry",
            )
            status = _STATUS_OF[verdict.fate]
            await self._record(
                row,
                status=status,
                error=verdict.error,
                attempted=attempt.via is not None,
                route=attempt.route,
                sent_at=attempt.requested_at if status == TestMessageStatus.SENT else None,
            )
        if status != TestMessageStatus.PENDING:
            log.info("test message %s", status, extra=log_ids)
            return SendTestMessageResult(message_id, status)
        delay = verdict.retry_after
        raise ApplicationError(
            str(verdict.error),
            type=REMOTE_UNAVAILABLE,
            next_retry_delay=None if delay is None else timedelta(seconds=delay),
        )

    async def _record(
        self,
        row: Any,
        *,
        status: TestMessageStatus,
        error: str | None,
        attempted: bool,
        route: str | None,
        sent_at: datetime | None,
    ) -> None:
        """One attempt's outcome, on a row still pending (a final one is never reopened)."""
        c = test_message_t.c
        async with self.sessions() as session:
            await session.execute(
                sa.update(test_message_t)
                .where(c.id == row.id, c.status == TestMessageStatus.PENDING)
                .values(
                    status=status,
                    attempts=c.attempts + int(attempted),
                    last_error=None
                    if status == TestMessageStatus.SENT
                    else sa.func.coalesce(error, c.last_error),
                    # The route that has it or may have it: its retries go there alone.
                    route=sa.func.coalesce(route, c.route),
                    sent_at=sa.func.coalesce(sent_at, c.sent_at),
                    updated_at=sa.func.now(),
                )
            )
            await session.commit()

    @activity.defn
    async def fail_test_message(self, input: FailTestMessageInput) -> FailTestMessageResult:
        """Ends a test message still pending as failed, its last error after the reason."""
        c = test_message_t.c
        reason = error_text(input.reason)
        async with self.sessions() as session:
            found = await session.execute(
                sa.update(test_message_t)
                .where(c.id == input.message_id, c.status == TestMessageStatus.PENDING)
                .values(
                    status=TestMessageStatus.FAILED,
                    last_error=sa.func.left(
                        sa.case(
                            (c.last_error.is_(None), reason),
                            else_=reason + ": " + c.last_error,
                        ),
                        ERROR_MAX_LENGTH,
                    ),
                    updated_at=sa.func.now(),
                )
                .returning(c.dispatch_id, c.client_id)
            )
            changed = found.one_or_none()
            await session.commit()
        if changed is not None:
            log.warning(
                "test message failed: %s",
                reason,
                extra=ids(
                    message_id=input.message_id,
                    dispatch_id=changed.dispatch_id,
                    client_id=changed.client_id,
                ),
            )
        return FailTestMessageResult(changed=changed is not None)
