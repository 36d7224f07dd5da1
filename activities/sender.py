"""What both shapes of sending share: a message's row as the rules need it, the judgement of one
message at the moment of its request (with its token of the rate cap), the request itself, and
the dispatch pausing itself.

One `Sender` per worker process: one HTTP client, one concurrency limit and one failure policy
across every batch and attempt.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import time
from typing import Any

import sqlalchemy as sa

from activities.clock import activity_now
from activities.failures import FailurePolicy
from activities.ratelimit import SendRateLimiter
from activities.remote import RemoteClient, RemoteError
from core import metrics
from core.contracts.shared import SendOutcome
from core.control import Command, apply_command
from core.db import SessionFactory
from core.errors import Conflict, NotFound
from core.events import Actor
from core.logging import ids
from core.models import client_t, dispatch_t, message_t
from core.rules import FINAL_STATUS_OF, Action, Decision, MessageState, decide
from core.windows import SendWindow, stored_window

log = logging.getLogger(__name__)

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


def message_query() -> sa.Select[Any]:
    """A message with what the rules and the request need of its client and dispatch."""
    return (
        sa.select(*_MESSAGE_COLUMNS)
        .select_from(message_t)
        .join(dispatch_t, dispatch_t.c.id == message_t.c.dispatch_id)
        .outerjoin(client_t, client_t.c.id == message_t.c.client_id)
    )


class Windows:
    """SendWindow of each stored (start, end) pair, built once per batch."""

    def __init__(self) -> None:
        self._known: dict[tuple[time | None, time | None], SendWindow | None] = {}

    def of(self, row: Any) -> SendWindow | None:
        key = (row.window_start, row.window_end)
        if key not in self._known:
            self._known[key] = stored_window(*key)
        return self._known[key]


def message_state(
    row: Any, windows: Windows, *, dispatch_status: str | None = None
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


def count_judged(decision: Decision) -> None:
    """A message the rules kept from a request: outside its window, paused, or final."""
    if decision.action == Action.SKIP:
        return
    if decision.action in FINAL_STATUS_OF:
        status = FINAL_STATUS_OF[decision.action]
        metrics.count_attempt(str(status))
        metrics.MESSAGES_FINISHED.labels(status).inc()
    elif decision.waits_for == SendOutcome.PAUSED:
        metrics.count_attempt("paused")
    else:
        metrics.count_attempt("outside_window")


@dataclass
class Sender:
    sessions: SessionFactory
    remote: RemoteClient
    limiter: SendRateLimiter
    policy: FailurePolicy
    # Requests in flight from this worker process, across every batch and attempt.
    slots: asyncio.Semaphore
    # Outcome writes of this process's batches that failed: each stops every batch in flight,
    # so that no request goes out while the database cannot record it.
    write_failures: int = 0

    async def judge_now(
        self,
        row: Any,
        windows: Windows,
        status: Callable[[], Awaitable[str | None]] | None = None,
    ) -> Decision:
        """The rules' decision at this moment; a send first waits for its token of the rate
        cap, and is judged again after the wait (the window may have closed meanwhile).
        `status` reads the dispatch's status afresh (a batch's is newer than its rows)."""
        current = await status() if status else None
        decision = decide(message_state(row, windows, dispatch_status=current), now=activity_now())
        if decision.action != Action.SEND or self.limiter.rate is None:
            return decision
        await self.limiter.acquire()
        current = await status() if status else None
        return decide(message_state(row, windows, dispatch_status=current), now=activity_now())

    async def post(self, row: Any) -> RemoteError | None:
        """One request to the remote; the error it ended in, if any. Anything else than the
        remote's answer (a closed client at shutdown, a bug) propagates and fails the attempt."""
        try:
            await self.remote.send(message_id=row.id, phone=row.phone, text=row.text)
        except RemoteError as error:
            return error
        return None

    async def pause_dispatch(self, dispatch_id: int, why: str) -> None:
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
