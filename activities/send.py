"""The send activities: one message per attempt (per-client deliveries), or a cohort's next
batch of messages at once (activities.batch).

Both judge every message by the same rules (core.rules) at the moment of sending, from what the
database says then, and every answer by the same failure policy (activities.failures); they
share one router (each route's HTTP client, cap and circuit) and one concurrency limit per worker
process (activities.sender), and take a token from their route's cap before each request.
"""

import asyncio
import logging
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import batch
from activities.budget import ErrorBudget
from activities.clock import activity_now
from activities.failures import FailurePolicy, Fate
from activities.records import finish_open_message, record_attempt
from activities.routing import Router
from activities.sender import Outgoing, Sender, Windows, count_judged, message_query
from core.caps import FrequencyCap
from core.contracts.cohort import SendBatchInput, SendBatchResult
from core.contracts.delivery import SendInput, SendResult
from core.contracts.shared import REMOTE_REJECTED, REMOTE_UNAVAILABLE, SendOutcome
from core.db import SessionFactory
from core.logging import ids
from core.models import MessageStatus, message_t
from core.rules import FINAL_STATUS_OF, PAUSE_RECHECK, Action, Decision

log = logging.getLogger(__name__)

# The message status an attempt leaves, by its verdict (KEEP_OPEN: the status it had).
_STATUS_OF = {
    Fate.SENT: MessageStatus.SENT,
    Fate.FAILED: MessageStatus.FAILED,
    Fate.RETRY: MessageStatus.RETRYING,
}


class SendActivities:
    """Sends through one shared remote client; the message rows decide whether to send at all."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        router: Router,
        concurrency: int,
        budget: ErrorBudget | None = None,
        cap: FrequencyCap | None = None,
    ) -> None:
        self.sender = Sender(
            sessions=sessions,
            router=router,
            policy=FailurePolicy(budget),
            slots=asyncio.Semaphore(concurrency),
            cap=cap,
        )

    @activity.defn
    async def send_batch(self, input: SendBatchInput) -> SendBatchResult:
        """Sends the cohort's next pending messages concurrently, judging each at its moment."""
        return await batch.send_batch(self.sender, input)

    @activity.defn
    async def send_message(self, input: SendInput) -> SendResult:
        """Checks the message, its dispatch, the deadline and the window now, then sends once."""
        sender, message_id = self.sender, input.message_id
        async with sender.sessions() as session:
            row = (
                await session.execute(message_query().where(message_t.c.id == message_id))
            ).one_or_none()
        if row is None:
            log.info("message no longer exists", extra=ids(message_id=message_id))
            return SendResult(message_id=message_id, status=MessageStatus.CANCELLED)
        row = Outgoing(row)
        # The slot is held until the outcome is written, as in batches.
        async with sender.slots:
            windows = Windows()
            await sender.apply_cap([row], windows)
            decision, ticket = await sender.judge_now(row, windows)
            if ticket is None:
                return await self._not_sent(row, decision)
            attempt = await sender.post(row, ticket, windows)
            if attempt.decision is not None:
                return await self._not_sent(row, attempt.decision)
            verdict = sender.policy.judge(
                attempt.error,
                message_id=message_id,
                dispatch_id=row.dispatch_id,
                client_id=row.client_id,
                route=attempt.via,
            )
            await record_attempt(
                sender.sessions,
                message_id=message_id,
                status=_STATUS_OF.get(verdict.fate, MessageStatus(row.status)),
                error=verdict.error,
                sent_at=attempt.requested_at if verdict.fate == Fate.SENT else None,
                attempted=attempt.via is not None,
                route=attempt.route,
                segments=attempt.segments,
                text=row.text if attempt.via is not None and row.personal else None,
            )
        for why in verdict.pauses:
            await sender.pause_dispatch(row.dispatch_id, why)
        if verdict.fate == Fate.SENT:
            return SendResult(message_id=message_id, status=MessageStatus.SENT)
        if verdict.fate == Fate.FAILED:
            raise ApplicationError(str(verdict.error), type=REMOTE_REJECTED, non_retryable=True)
        if verdict.stops_sending:
            # Paused: the delivery waits for the resume instead of retrying meanwhile.
            return SendResult(
                message_id, SendOutcome.PAUSED, next_open_at=activity_now() + PAUSE_RECHECK
            )
        delay = None if verdict.retry_after is None else timedelta(seconds=verdict.retry_after)
        raise ApplicationError(str(verdict.error), type=REMOTE_UNAVAILABLE, next_retry_delay=delay)

    async def _not_sent(self, row: Any, decision: Decision) -> SendResult:
        count_judged(decision)
        if decision.action == Action.SKIP:
            return SendResult(message_id=row.id, status=MessageStatus(row.status))
        if decision.action == Action.WAIT:
            return SendResult(row.id, decision.waits_for, next_open_at=decision.not_before)
        status = FINAL_STATUS_OF[decision.action]
        await finish_open_message(
            self.sender.sessions,
            message_id=row.id,
            status=status,
            error=decision.reason,
            dispatch_id=row.dispatch_id,
        )
        return SendResult(message_id=row.id, status=status)
