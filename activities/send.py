"""Sends to the external API: one message per attempt (per-client deliveries), or a cohort's
next batch of messages at once.

Both judge every message by the same rules (core.rules) at the moment of sending, from what the
database says then, share one HTTP client and one concurrency limit per worker process, and
take a token from the global rate cap before each request.
"""

import asyncio
import logging
import time as clock
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.budget import ErrorBudget
from activities.clock import activity_now
from activities.ratelimit import SendRateLimiter
from activities.records import (
    Outcome,
    confirm_handoffs,
    error_text,
    finish_open_message,
    owed_handoffs,
    record_attempt,
    record_outcomes,
)
from activities.remote import RemoteClient, RemoteError
from core import metrics
from core.contracts import (
    REMOTE_REJECTED,
    REMOTE_UNAVAILABLE,
    Handoff,
    SendBatchInput,
    SendBatchResult,
    SendInput,
    SendOutcome,
    SendResult,
)
from core.control import Command, apply_command
from core.db import SessionFactory
from core.errors import Conflict, NotFound
from core.events import Actor
from core.logging import ids
from core.models import OPEN_MESSAGE_STATUSES, MessageStatus, client_t, dispatch_t, message_t
from core.rules import FINAL_STATUS_OF, PAUSE_RECHECK, Action, Decision, MessageState, decide
from core.windows import SendWindow, stored_window

log = logging.getLogger(__name__)

# A batch loads its messages this many at a time, right before sending them, so that what it
# judges (client deleted, dispatch paused) is at most this many sends old.
LOAD_CHUNK = 50
# A batch reports progress to Temporal this often; a silent one is taken for dead.
HEARTBEAT_SECONDS = 1.0
# A batch reads its dispatch's status at least this often, so that a pause or a cancel stops
# its requests within a second whatever the pace of sending.
STATUS_MAX_AGE_SECONDS = 0.5

_MESSAGE_COLUMNS = (
    message_t.c.id,
    message_t.c.status,
    message_t.c.dispatch_id,
    message_t.c.client_id,
    client_t.c.phone,
    client_t.c.timezone,
    client_t.c.opted_out,
    dispatch_t.c.text,
    dispatch_t.c.status.label("dispatch_status"),
    dispatch_t.c.start_at,
    dispatch_t.c.end_at,
    dispatch_t.c.window_start,
    dispatch_t.c.window_end,
)


def _message_query() -> sa.Select[Any]:
    return (
        sa.select(*_MESSAGE_COLUMNS)
        .select_from(message_t)
        .join(dispatch_t, dispatch_t.c.id == message_t.c.dispatch_id)
        .outerjoin(client_t, client_t.c.id == message_t.c.client_id)
    )


class _Windows:
    """SendWindow of each stored (start, end) pair, built once per batch."""

    def __init__(self) -> None:
        self._known: dict[tuple[time | None, time | None], SendWindow | None] = {}

    def of(self, row: Any) -> SendWindow | None:
        key = (row.window_start, row.window_end)
        if key not in self._known:
            self._known[key] = stored_window(*key)
        return self._known[key]


def message_state(
    row: Any, windows: _Windows, *, dispatch_status: str | None = None
) -> MessageState:
    return MessageState(
        status=row.status,
        client_exists=row.client_id is not None,
        timezone=row.timezone,
        dispatch_status=dispatch_status or row.dispatch_status,
        start_at=row.start_at,
        end_at=row.end_at,
        window=windows.of(row),
        opted_out=bool(row.opted_out),
    )


class SendActivities:
    """Sends through one shared remote client; the message rows decide whether to send at all."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        remote: RemoteClient,
        limiter: SendRateLimiter,
        concurrency: int,
        budget: ErrorBudget | None = None,
    ) -> None:
        self.sessions = sessions
        self.remote = remote
        self.limiter = limiter
        self.budget = budget or ErrorBudget(share=None, window=1)
        # Requests in flight from this worker process, across every batch and attempt.
        self.slots = asyncio.Semaphore(concurrency)

    # One message: an attempt of a per-client delivery.

    @activity.defn
    async def send_message(self, input: SendInput) -> SendResult:
        """Checks the message, its dispatch, the deadline and the window now, then sends once."""
        message_id = input.message_id
        async with self.sessions() as session:
            row = (
                await session.execute(_message_query().where(message_t.c.id == message_id))
            ).one_or_none()
        if row is None:
            log.info("message no longer exists", extra=ids(message_id=message_id))
            return SendResult(message_id=message_id, status=MessageStatus.CANCELLED)
        log_ids = ids(message_id=message_id, dispatch_id=row.dispatch_id, client_id=row.client_id)
        windows = _Windows()
        # The slot is held until the outcome is written, as in batches.
        async with self.slots:
            decision = await self._decide_and_take_token(row, windows)
            if decision.action != Action.SEND:
                return await self._not_sent(row, decision)
            error = await self._post(row)
            if error is None:
                await record_attempt(
                    self.sessions,
                    message_id=message_id,
                    status=MessageStatus.SENT,
                    sent_at=activity_now(),
                )
                self.budget.record(row.dispatch_id, failed=False)
                metrics.count_attempt("sent")
                metrics.MESSAGES_FINISHED.labels(MessageStatus.SENT).inc()
                log.info("remote accepted: message sent", extra=log_ids)
                return SendResult(message_id=message_id, status=MessageStatus.SENT)
            reason = error_text(error)
            if error.credentials:
                # Kept open: no message can go until the operator fixes the credentials.
                status = MessageStatus(row.status)
            elif error.permanent:
                status = MessageStatus.FAILED
            else:
                status = MessageStatus.RETRYING
            await record_attempt(self.sessions, message_id=message_id, status=status, error=reason)
        count_failure(error)
        spent = self.budget.record(row.dispatch_id, failed=True)
        if spent is not None:
            await self._pause_itself(row.dispatch_id, spent)
        if error.credentials:
            log.warning("remote refused our credentials: %s", reason, extra=log_ids)
            await self._pause_itself(
                row.dispatch_id, f"the remote refused our credentials: {reason}"
            )
        if error.credentials or (spent is not None and not error.permanent):
            return SendResult(
                message_id, SendOutcome.PAUSED, next_open_at=activity_now() + PAUSE_RECHECK
            )
        if error.permanent:
            log.warning("remote rejected message: %s", reason, extra=log_ids)
            raise ApplicationError(reason, type=REMOTE_REJECTED, non_retryable=True)
        log.warning("send failed, will retry: %s", reason, extra=log_ids)
        delay = None if error.retry_after is None else timedelta(seconds=error.retry_after)
        raise ApplicationError(reason, type=REMOTE_UNAVAILABLE, next_retry_delay=delay)

    async def _decide_and_take_token(
        self, row: Any, windows: _Windows, status: Callable[[], Awaitable[str | None]] | None = None
    ) -> Decision:
        """The rules' decision at this moment; a send first waits for its token of the rate
        cap, and is judged again after the wait (the window may have closed meanwhile)."""
        current = await status() if status else None
        decision = decide(message_state(row, windows, dispatch_status=current), now=activity_now())
        if decision.action != Action.SEND or self.limiter.rate is None:
            return decision
        await self.limiter.acquire()
        current = await status() if status else None
        return decide(message_state(row, windows, dispatch_status=current), now=activity_now())

    async def _pause_itself(self, dispatch_id: int, why: str) -> None:
        """Sending is pointless for now: the remote refuses our token or account (for an
        operator to fix SEND_API_TOKEN and resume, instead of failing every message), or the
        error budget is spent. The dispatch pauses with the reason."""
        try:
            async with self.sessions() as session:
                applied = await apply_command(
                    session=session,
                    dispatch_id=dispatch_id,
                    command=Command.PAUSE,
                    actor=Actor.WORKER,
                    reason=why,
                )
        except (Conflict, NotFound) as error:
            log.info("not paused: %s", error, extra=ids(dispatch_id=dispatch_id))
            return
        if applied.changed:
            log.error("dispatch paused: %s", why, extra=ids(dispatch_id=dispatch_id))

    async def _not_sent(self, row: Any, decision: Decision) -> SendResult:
        count_judged(decision)
        if decision.action == Action.SKIP:
            return SendResult(message_id=row.id, status=row.status)
        if decision.action == Action.WAIT:
            return SendResult(row.id, decision.reason, next_open_at=decision.not_before)
        status = FINAL_STATUS_OF[decision.action]
        await finish_open_message(
            self.sessions,
            message_id=row.id,
            status=status,
            error=decision.reason,
            dispatch_id=row.dispatch_id,
        )
        return SendResult(message_id=row.id, status=status)

    async def _post(self, row: Any) -> RemoteError | None:
        """One request to the remote; the error it ended in, if any. Anything else than the
        remote's answer (a closed client at shutdown, a bug) propagates and fails the attempt."""
        try:
            await self.remote.send(message_id=row.id, phone=row.phone, text=row.text)
        except RemoteError as error:
            return error
        return None

    # A batch: the next pending messages of a cohort.

    @activity.defn
    async def send_batch(self, input: SendBatchInput) -> SendBatchResult:
        """Sends the cohort's next pending messages concurrently, judging each at its moment.

        Outcomes are written in bulk as they come (one write at a time, gathering whatever
        finished meanwhile), so a batch retried after a crash finds every recorded message no
        longer pending and sends again only those whose request was in flight. A message whose
        send failed transiently leaves the cohort for a delivery workflow of its own.
        """
        batch = _Batch(self, input)
        batch.handoffs += await self._owed_handoffs(input)
        async with self.sessions() as session:
            message_ids = list(
                (
                    await session.execute(
                        sa.select(message_t.c.id)
                        .where(
                            message_t.c.dispatch_id == input.dispatch_id,
                            message_t.c.cohort == input.cohort,
                            # Literals, so that a prepared statement's generic plan still
                            # matches the partial index.
                            message_t.c.status == sa.literal_column("'pending'"),
                            message_t.c.sender == sa.literal_column("'cohort'"),
                            message_t.c.id > input.after_message_id,
                        )
                        .order_by(message_t.c.id)
                        .limit(input.limit)
                    )
                ).scalars()
            )
        if not message_ids:
            # Nothing pending: tell a cohort whose dispatch was deleted to stop looking.
            async with self.sessions() as session:
                exists = await session.scalar(
                    sa.select(dispatch_t.c.id).where(dispatch_t.c.id == input.dispatch_id)
                )
            stopped = None if exists is not None else SendOutcome.DELETED
            return SendBatchResult(
                last_message_id=input.after_message_id,
                exhausted=True,
                handoffs=batch.handoffs,
                stopped=stopped,
            )
        metrics.BATCH_SIZE.observe(len(message_ids))
        started = clock.monotonic()
        heartbeat = asyncio.create_task(batch.heartbeat_forever())
        try:
            for chunk in _chunks(message_ids, LOAD_CHUNK):
                if not await batch.run_chunk(chunk):
                    break
            await batch.finish()
        finally:
            heartbeat.cancel()
            await batch.abandon()
        if batch.credentials_refused is not None:
            await self._pause_itself(
                input.dispatch_id,
                f"the remote refused our credentials: {batch.credentials_refused}",
            )
        if batch.budget_spent is not None:
            await self._pause_itself(input.dispatch_id, batch.budget_spent)
        result = batch.result(message_ids)
        metrics.BATCH_SECONDS.labels(result.stopped or "done").observe(clock.monotonic() - started)
        log.info(
            "batch of cohort %s: %d sent, %d final, %d handed off%s",
            input.cohort,
            result.sent,
            result.finished,
            len(result.handoffs),
            f", stopped: {result.stopped}" if result.stopped else "",
            extra=ids(dispatch_id=input.dispatch_id),
        )
        return result

    async def _owed_handoffs(self, input: SendBatchInput) -> list[Handoff]:
        """Hand-offs an earlier attempt wrote but could not return: the cohort starts their
        deliveries again (a delivery already started is refused, harmlessly)."""
        owed = await owed_handoffs(
            self.sessions, dispatch_id=input.dispatch_id, cohort=input.cohort, limit=input.limit
        )
        if owed:
            log.warning(
                "cohort %s owes %d deliveries from an earlier attempt",
                input.cohort,
                len(owed),
                extra=ids(dispatch_id=input.dispatch_id),
            )
        handoffs, settled = [], []
        for row in owed:
            if row.client_id is None or row.status not in OPEN_MESSAGE_STATUSES:
                # Nothing left to deliver: a deleted client's message ends cancelled here.
                await finish_open_message(
                    self.sessions,
                    message_id=row.id,
                    status=MessageStatus.CANCELLED,
                    error="client deleted",
                    dispatch_id=input.dispatch_id,
                )
                settled.append(row.id)
                continue
            delay = input.retry_delay_seconds if row.status == MessageStatus.RETRYING else 0.0
            handoffs.append(Handoff(row.id, row.client_id, row.timezone, delay_seconds=delay))
        if settled:
            await confirm_handoffs(self.sessions, message_ids=settled)
        return handoffs


def count_judged(decision: Decision) -> None:
    """A message the rules kept from a request: outside its window, paused, or final."""
    if decision.action == Action.SKIP:
        return
    if decision.action in FINAL_STATUS_OF:
        status = FINAL_STATUS_OF[decision.action]
        metrics.count_attempt(str(status))
        metrics.MESSAGES_FINISHED.labels(status).inc()
    elif decision.reason == SendOutcome.PAUSED:
        metrics.count_attempt("paused")
    else:
        metrics.count_attempt("outside_window")


def count_failure(error: RemoteError) -> None:
    if error.credentials:
        metrics.count_attempt("paused", error.kind)
    elif error.permanent:
        metrics.count_attempt("rejected", error.kind)
        metrics.MESSAGES_FINISHED.labels(MessageStatus.FAILED).inc()
    else:
        metrics.count_attempt("retried", error.kind)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _chunks(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class _Batch:
    """The state of one send_batch attempt: requests in flight, outcomes not yet written."""

    owner: SendActivities
    input: SendBatchInput
    windows: _Windows = field(default_factory=_Windows)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    unwritten: list[tuple[Outcome, asyncio.Future[None]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None
    sent: int = 0
    finished: int = 0
    handoffs: list[Handoff] = field(default_factory=list)
    consecutive_failures: int = 0
    stopped: str | None = None
    not_before: datetime | None = None
    # The first error of a send or a write: the attempt fails with it.
    failure: BaseException | None = None
    # The remote refused our credentials (a 401 or 403): the dispatch pauses.
    credentials_refused: str | None = None
    # The dispatch's error budget is spent: it pauses.
    budget_spent: str | None = None
    # The dispatch's status as last read, and when (monotonic seconds).
    status_seen: str | None = None
    status_read_at: float = 0.0

    async def dispatch_status(self) -> str | None:
        """The dispatch's status, read again when older than STATUS_MAX_AGE_SECONDS (None when
        the dispatch is gone: its rows then say so themselves)."""
        now = clock.monotonic()
        if now - self.status_read_at > STATUS_MAX_AGE_SECONDS:
            async with self.owner.sessions() as session:
                self.status_seen = await session.scalar(
                    sa.select(dispatch_t.c.status).where(dispatch_t.c.id == self.input.dispatch_id)
                )
            self.status_read_at = now
        return self.status_seen

    def stop(self, reason: str, not_before: datetime | None = None) -> None:
        if self.stopped is None:
            self.stopped, self.not_before = reason, not_before

    async def run_chunk(self, chunk: Sequence[int]) -> bool:
        """Judges and sends one chunk; False once the batch has stopped."""
        owner = self.owner
        async with owner.sessions() as session:
            rows = {
                row.id: row
                for row in await session.execute(
                    _message_query().where(message_t.c.id.in_(list(chunk)))
                )
            }
        for message_id in chunk:
            row = rows.get(message_id)
            if row is None:
                # Deleted with its dispatch since the batch began.
                self.stop(SendOutcome.DELETED)
            elif activity.is_worker_shutdown():
                # Graceful shutdown: the sends in flight finish and are written, no new one
                # starts, and the batch returns within the worker's grace period.
                self.stop(SendOutcome.WORKER_SHUTDOWN)
            if self.stopped:
                return False
            await owner.slots.acquire()
            try:
                if self.stopped:  # while this waited for a slot
                    owner.slots.release()
                    return False
                decision = await owner._decide_and_take_token(
                    row, self.windows, self.dispatch_status
                )
                if decision.action == Action.SEND:
                    task = asyncio.create_task(self._send(row))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    continue  # the task releases the slot
                self._judged(row, decision)
            except BaseException:
                owner.slots.release()
                raise
            owner.slots.release()
        return self.stopped is None

    def _judged(self, row: Any, decision: Decision) -> None:
        """A message the rules keep from sending now."""
        count_judged(decision)
        if decision.action == Action.SKIP:
            return
        log_ids = ids(message_id=row.id, dispatch_id=row.dispatch_id, client_id=row.client_id)
        if decision.action in FINAL_STATUS_OF:
            self.finished += 1
            status = FINAL_STATUS_OF[decision.action]
            log.info("message is %s: %s", status, decision.reason, extra=log_ids)
            self._write(Outcome(row.id, status, error=decision.reason))
            return
        # WAIT: the cohort's own window closed, or the dispatch is paused: the cohort waits.
        # A client who moved to another zone since the layout waits in a delivery of its own,
        # and so does each client of the one cohort of a dispatch given a window while it ran.
        if decision.reason == SendOutcome.PAUSED or self.input.cohort == row.timezone:
            self.stop(decision.reason, decision.not_before)
            return
        log.info("handed to a delivery of its own: its zone is %s", row.timezone, extra=log_ids)
        self._write(Outcome(row.id, MessageStatus.PENDING, hand_off=True))
        self.handoffs.append(Handoff(row.id, row.client_id, row.timezone))

    async def _send(self, row: Any) -> None:
        """One request; its slot is held until its outcome is written, so that at most
        SEND_CONCURRENCY sends of a worker are ever unrecorded (what a crash may resend)."""
        owner = self.owner
        try:
            error = await owner._post(row)
            await self._write(self._outcome_of(row, error))
        except BaseException as failure:
            # Kept for finish(), which fails the attempt: the message stays pending and the
            # retried batch judges it again.
            self.failure = self.failure or failure
            self.stop(SendOutcome.FAILED)
        finally:
            owner.slots.release()

    def _outcome_of(self, row: Any, error: RemoteError | None) -> Outcome:
        log_ids = ids(message_id=row.id, dispatch_id=row.dispatch_id, client_id=row.client_id)
        if error is None:
            metrics.count_attempt("sent")
            metrics.MESSAGES_FINISHED.labels(MessageStatus.SENT).inc()
        else:
            count_failure(error)
        spent = self.owner.budget.record(row.dispatch_id, failed=error is not None)
        if spent is not None:
            self.budget_spent = spent
            self.stop(SendOutcome.PAUSED, activity_now() + PAUSE_RECHECK)
        if error is None:
            self.sent += 1
            self.consecutive_failures = 0
            log.info("remote accepted: message sent", extra=log_ids)
            return Outcome(row.id, MessageStatus.SENT, attempted=True, sent_at=activity_now())
        reason = error_text(error)
        if error.credentials:
            log.warning("remote refused our credentials: %s", reason, extra=log_ids)
            self.credentials_refused = reason
            self.stop(SendOutcome.PAUSED, activity_now() + PAUSE_RECHECK)
            return Outcome(row.id, MessageStatus.PENDING, attempted=True, error=reason)
        if error.permanent:
            self.finished += 1
            log.warning("remote rejected message: %s", reason, extra=log_ids)
            return Outcome(row.id, MessageStatus.FAILED, attempted=True, error=reason)
        log.warning("send failed, its delivery will retry: %s", reason, extra=log_ids)
        delay = error.retry_after or self.input.retry_delay_seconds
        self.handoffs.append(Handoff(row.id, row.client_id, row.timezone, delay_seconds=delay))
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.input.breaker_failures:
            self.stop(SendOutcome.REMOTE_DOWN)
        return Outcome(row.id, MessageStatus.RETRYING, attempted=True, error=reason, hand_off=True)

    # Writing outcomes: one write at a time, each taking everything that finished meanwhile.

    def _write(self, outcome: Outcome) -> asyncio.Future[None]:
        """Queues an outcome; the future resolves once it is in the database."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Outcomes judged without a request are not awaited: their error is the batch's.
        written.add_done_callback(_retrieve)
        if self.failure is not None:
            # A write failed: nothing more is written in this attempt (a later write that
            # succeeded would hide the lost one).
            written.set_exception(self.failure)
            return written
        self.unwritten.append((outcome, written))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write_all())
        return written

    async def _write_all(self) -> None:
        while self.unwritten:
            queued, self.unwritten = self.unwritten, []
            try:
                await record_outcomes(self.owner.sessions, [outcome for outcome, _ in queued])
            except BaseException as error:
                # No send may go out while the database cannot record it.
                self.failure = self.failure or error
                self.stop(SendOutcome.FAILED)
                for _, written in [*queued, *self.unwritten]:
                    if not written.done():
                        written.set_exception(error)
                self.unwritten = []
                return
            for _, written in queued:
                if not written.done():
                    written.set_result(None)

    async def finish(self) -> None:
        """Waits for every request in flight and every outcome to be written; raises if the
        database would not take them (the batch is then retried and finds them still pending)."""
        while self.tasks:
            await asyncio.gather(*self.tasks)
        if self.writer is not None:
            await self.writer
        await self._write_all()
        if self.failure is not None:
            raise self.failure

    async def abandon(self) -> None:
        """On the way out after an error or a cancellation: nothing may keep running."""
        running = [*self.tasks, *([self.writer] if self.writer else [])]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for _, written in self.unwritten:
            written.cancel()

    async def heartbeat_forever(self) -> None:
        while True:
            activity.heartbeat(self.sent + self.finished + len(self.handoffs))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def result(self, message_ids: list[int]) -> SendBatchResult:
        done = self.stopped is None
        return SendBatchResult(
            # Stopped early: the cursor stays, and the next batch reads the still-pending
            # messages again (those dealt with are no longer pending in the cohort).
            last_message_id=message_ids[-1] if done else self.input.after_message_id,
            exhausted=done and len(message_ids) < self.input.limit,
            sent=self.sent,
            finished=self.finished,
            handoffs=self.handoffs,
            stopped=self.stopped,
            not_before=self.not_before,
        )
