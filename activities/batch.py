"""A cohort's batch: its next pending messages sent concurrently, each judged at its moment.

Outcomes are written in bulk as they come (one write at a time, gathering whatever finished
meanwhile), so a batch retried after a crash finds every recorded message no longer pending and
sends again only those whose request was in flight. A message whose send failed transiently
leaves the cohort for a delivery workflow of its own.
"""

import asyncio
import logging
import time as clock
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from temporalio import activity

from activities.clock import activity_now
from activities.failures import Fate
from activities.records import (
    Outcome,
    confirm_handoffs,
    finish_open_message,
    in_lane,
    owed_handoffs,
    record_outcomes,
)
from activities.routing import Attempt, Ticket
from activities.sender import Outgoing, Sender, Windows, count_judged, message_query
from activities.watch import DispatchWatch, edited
from core import metrics, tracing
from core.contracts.cohort import Handoff, SendBatchInput, SendBatchResult
from core.contracts.shared import SendOutcome
from core.logging import ids
from core.models import OPEN_MESSAGE_STATUSES, MessageStatus, dispatch_t, message_t
from core.rules import FINAL_STATUS_OF, PAUSE_RECHECK, Action, Decision

log = logging.getLogger(__name__)

# A batch loads its messages this many at a time, right before sending them, so that what it
# judges (client deleted, dispatch paused) is at most this many sends old.
LOAD_CHUNK = 50
# A batch reports progress to Temporal this often; a silent one is taken for dead.
HEARTBEAT_SECONDS = 1.0


async def send_batch(sender: Sender, input: SendBatchInput) -> SendBatchResult:
    """Sends the cohort's next pending messages (see the module's docstring)."""
    # On the activity's span (a trace of its own, linked to its cohort's: core.tracing).
    tracing.annotate(
        {
            "mailing.dispatch_id": input.dispatch_id,
            "mailing.cohort": input.cohort,
            "mailing.lane": input.lane,
        }
    )
    batch = Batch(sender, input)
    batch.handoffs += await _owed_handoffs(sender, input)
    async with sender.sessions() as session:
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
                        *in_lane(input.lane, input.lanes),
                    )
                    .order_by(message_t.c.id)
                    # One more than the batch takes: whether any is left after it.
                    .limit(input.limit + 1)
                )
            ).scalars()
        )
    more = len(message_ids) > input.limit
    del message_ids[input.limit :]
    if not message_ids:
        # Nothing pending: tell a cohort whose dispatch was deleted to stop looking.
        async with sender.sessions() as session:
            exists = await session.scalar(
                sa.select(dispatch_t.c.id).where(dispatch_t.c.id == input.dispatch_id)
            )
        return SendBatchResult(
            last_message_id=input.after_message_id,
            exhausted=True,
            handoffs=batch.handoffs,
            stopped=None if exists is not None else SendOutcome.DELETED,
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
    for why in batch.pauses:
        await sender.pause_dispatch(input.dispatch_id, why)
    result = batch.result(message_ids, more=more)
    tracing.annotate(
        {
            "mailing.messages": len(message_ids),
            "mailing.sent": result.sent,
            "mailing.finished": result.finished,
            "mailing.handed_off": len(result.handoffs),
            "mailing.stopped": str(result.stopped or ""),
        }
    )
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


async def _owed_handoffs(sender: Sender, input: SendBatchInput) -> list[Handoff]:
    """Hand-offs an earlier attempt wrote but could not return: the cohort starts their
    deliveries again (a delivery already started is refused, harmlessly)."""
    owed = await owed_handoffs(
        sender.sessions,
        dispatch_id=input.dispatch_id,
        cohort=input.cohort,
        limit=input.limit,
        lane=input.lane,
        lanes=input.lanes,
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
                sender.sessions,
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
        await confirm_handoffs(sender.sessions, message_ids=settled)
    return handoffs


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _chunks(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Batch:
    """The state of one send_batch attempt: requests in flight, outcomes not yet written."""

    sender: Sender
    input: SendBatchInput
    windows: Windows = field(default_factory=Windows)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    unwritten: list[tuple[Outcome, asyncio.Future[None]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None
    sent: int = 0
    finished: int = 0
    handoffs: list[Handoff] = field(default_factory=list)
    consecutive_failures: int = 0
    stopped: SendOutcome | None = None
    not_before: datetime | None = None
    # The first error of a send or a write: the attempt fails with it.
    failure: BaseException | None = None
    # Why the dispatch must pause (our credentials refused, its error budget spent), once each.
    pauses: list[str] = field(default_factory=list)
    # The dispatch as this batch last read it (activities.watch).
    watch: DispatchWatch = field(init=False)
    tripping: asyncio.Task[None] | None = None
    # The worker's failed outcome writes when the batch began: one more stops it.
    write_failures_seen: int = 0

    def __post_init__(self) -> None:
        self.write_failures_seen = self.sender.write_failures
        self.watch = DispatchWatch(
            self.sender.sessions,
            self.input.dispatch_id,
            trips_after=self.input.round_started_at or activity_now(),
        )

    async def dispatch_status(self) -> str | None:
        """The dispatch's status, at most STATUS_MAX_AGE_SECONDS old; a breaker another batch
        of the dispatch opened (the remote down) stops this one too."""
        status = await self.watch.read()
        if self.watch.tripped:
            self.stop(SendOutcome.REMOTE_DOWN)
        return status

    def stop(self, reason: SendOutcome, not_before: datetime | None = None) -> None:
        if self.stopped is None:
            self.stopped, self.not_before = reason, not_before

    async def edited_since(self, rows: dict[int, Outgoing]) -> bool:
        """Whether the dispatch was edited (its text, end or window) since these rows were read."""
        loaded = next((edited(row.row) for row in rows.values()), None)
        edited_now = await self.watch.edited_since(loaded)
        if self.watch.tripped:
            self.stop(SendOutcome.REMOTE_DOWN)
        return edited_now

    async def run_chunk(self, chunk: Sequence[int]) -> bool:
        """Judges and sends one chunk; False once the batch has stopped. An edit of the
        dispatch while the chunk sends makes it read its remaining rows again: what goes after
        an edit is judged and rendered by it, within the age of a status read."""
        sender = self.sender
        async with sender.sessions() as session:
            rows = {
                row.id: Outgoing(row)
                for row in await session.execute(
                    message_query().where(message_t.c.id.in_(list(chunk)))
                )
            }
        await sender.apply_cap([rows[i] for i in chunk if i in rows], self.windows)
        for index, message_id in enumerate(chunk):
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
            await sender.slots.acquire()
            try:
                if self.stopped:  # while this waited for a slot
                    sender.slots.release()
                    return False
                if await self.edited_since(rows):
                    sender.slots.release()
                    log.info(
                        "dispatch edited: the batch reads its %d remaining messages again",
                        len(chunk) - index,
                        extra=ids(dispatch_id=self.input.dispatch_id),
                    )
                    return await self.run_chunk(chunk[index:])
                decision, ticket = await sender.judge_now(row, self.windows, self.dispatch_status)
                if sender.write_failures != self.write_failures_seen:
                    # Another batch's write failed: this one's are retried with the attempt.
                    self.stop(SendOutcome.FAILED)
                if self.stopped:  # or the status read found another batch's breaker open
                    if ticket is not None:
                        await sender.router.release(ticket)
                    sender.slots.release()
                    return False
                if ticket is not None:
                    task = asyncio.create_task(self._send(row, ticket))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    continue  # the task releases the slot
                self._judged(row, decision)
            except BaseException:
                sender.slots.release()
                raise
            sender.slots.release()
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
        if decision.waits_for == SendOutcome.PAUSED or self.input.cohort == row.timezone:
            self.stop(decision.waits_for, decision.not_before)
            return
        log.info("handed to a delivery of its own: its zone is %s", row.timezone, extra=log_ids)
        self._write(Outcome(row.id, MessageStatus.PENDING, hand_off=True))
        self.handoffs.append(Handoff(row.id, row.client_id, row.timezone))

    async def _send(self, row: Any, ticket: Ticket) -> None:
        """One request (more in a failover); its slot is held until its outcome is written, so
        that at most SEND_CONCURRENCY sends of a worker are ever unrecorded (what a crash may
        resend)."""
        sender = self.sender
        try:
            attempt = await sender.post(row, ticket, self.windows, self.dispatch_status)
            if attempt.decision is not None:
                self._judged(row, attempt.decision)
            else:
                await self._write(self._outcome_of(row, attempt))
        except BaseException as failure:
            # Kept for finish(), which fails the attempt: the message stays pending and the
            # retried batch judges it again.
            self.failure = self.failure or failure
            self.stop(SendOutcome.FAILED)
        finally:
            sender.slots.release()

    def _outcome_of(self, row: Any, attempt: Attempt) -> Outcome:
        verdict = self.sender.policy.judge(
            attempt.error,
            message_id=row.id,
            dispatch_id=row.dispatch_id,
            client_id=row.client_id,
            route=attempt.via,
            retry_note="its delivery will retry",
        )

        def after(status: MessageStatus, **changes: Any) -> Outcome:
            # What an outcome records of its attempt: whether a request went out, the route
            # that has (or may have) the message, and its segments.
            attempted = attempt.via is not None
            return Outcome(
                row.id,
                status,
                attempted=attempted,
                route=attempt.route,
                segments=attempt.segments,
                text=row.text if attempted and row.personal else None,
                **changes,
            )

        self.pauses += [why for why in verdict.pauses if why not in self.pauses]
        if verdict.stops_sending:
            self.stop(SendOutcome.PAUSED, activity_now() + PAUSE_RECHECK)
        if verdict.fate == Fate.SENT:
            self.sent += 1
            self.consecutive_failures = 0
            # Sent when the request went out (inside the window, before the end time, spaced
            # by the cap), not when its answer was read.
            return after(MessageStatus.SENT, sent_at=attempt.requested_at)
        if verdict.fate == Fate.KEEP_OPEN:
            return after(MessageStatus.PENDING, error=verdict.error)
        if verdict.fate == Fate.FAILED:
            self.finished += 1
            return after(MessageStatus.FAILED, error=verdict.error)
        delay = verdict.retry_after or self.input.retry_delay_seconds
        self.handoffs.append(Handoff(row.id, row.client_id, row.timezone, delay_seconds=delay))
        # A failure while another route that may serve the client is up (a gateway that hangs
        # with its messages, say) says nothing of whether the dispatch can send.
        if not attempt.others_up:
            self.consecutive_failures += 1
        if self.consecutive_failures >= self.input.breaker_failures and self.stopped is None:
            self.stop(SendOutcome.REMOTE_DOWN)
            self.tripping = asyncio.create_task(self._trip())
        return after(MessageStatus.RETRYING, error=verdict.error, hand_off=True)

    async def _trip(self) -> None:
        """Tells every other batch of the dispatch that the remote is down."""
        async with self.sender.sessions() as session:
            await session.execute(
                sa.update(dispatch_t)
                .where(dispatch_t.c.id == self.input.dispatch_id)
                .values(breaker_tripped_at=activity_now())
            )
            await session.commit()
        log.warning(
            "cohort %s: %d failures in a row, every batch of the dispatch stops",
            self.input.cohort,
            self.consecutive_failures,
            extra=ids(dispatch_id=self.input.dispatch_id),
        )

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
                await record_outcomes(self.sender.sessions, [outcome for outcome, _ in queued])
            except BaseException as error:
                # No send may go out while the database cannot record it: not from this
                # batch, nor (unless this is a cancellation) from any other of the process.
                self.failure = self.failure or error
                if not isinstance(error, asyncio.CancelledError):
                    self.sender.write_failures += 1
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
        if self.tripping is not None:
            await self.tripping
        if self.stopped == SendOutcome.FAILED:
            raise RuntimeError("another batch of this worker could not write its outcomes")

    async def abandon(self) -> None:
        """On the way out after an error or a cancellation: nothing may keep running."""
        running = [*self.tasks, *(task for task in (self.writer, self.tripping) if task)]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for _, written in self.unwritten:
            written.cancel()

    async def heartbeat_forever(self) -> None:
        while True:
            activity.heartbeat(self.sent + self.finished + len(self.handoffs))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def result(self, message_ids: list[int], *, more: bool) -> SendBatchResult:
        done = self.stopped is None
        return SendBatchResult(
            # Stopped early: the cursor stays, and the next batch reads the still-pending
            # messages again (those dealt with are no longer pending in the cohort).
            last_message_id=message_ids[-1] if done else self.input.after_message_id,
            exhausted=done and not more,
            sent=self.sent,
            finished=self.finished,
            handoffs=self.handoffs,
            stopped=self.stopped,
            not_before=self.not_before,
        )
