"""What both shapes of sending share: a message's row as the rules need it, the judgement of one
message at the moment of its request (with its route and that route's token of its cap), the
request itself, and the dispatch pausing itself.

One `Sender` per worker process: one router (the routes' HTTP clients, caps and circuits), one
concurrency limit and one failure policy across every batch and attempt.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import time
from typing import Any

import sqlalchemy as sa

from activities.caps import held_back
from activities.clock import activity_now
from activities.failures import FailurePolicy
from activities.routing import Attempt, Router, Ticket
from core import metrics
from core.caps import FrequencyCap
from core.contracts.shared import SendOutcome
from core.control import Command, apply_command
from core.db import SessionFactory
from core.errors import Conflict, NotFound
from core.events import Actor
from core.logging import ids
from core.models import client_t, dispatch_t, message_t
from core.rules import FINAL_STATUS_OF, Action, Decision, MessageState, decide
from core.templates import Missing, TemplateRefused, TextTemplate, check, client_values
from core.windows import SendWindow, stored_window

log = logging.getLogger(__name__)

_MESSAGE_COLUMNS = (
    message_t.c.id,
    message_t.c.status,
    message_t.c.dispatch_id,
    message_t.c.client_id,
    message_t.c.route,
    client_t.c.phone,
    client_t.c.operator_code,
    client_t.c.timezone,
    client_t.c.opted_out,
    client_t.c.tag,
    client_t.c.attributes,
    dispatch_t.c.transactional,
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


@functools.lru_cache(maxsize=256)
def _template(text: str) -> TextTemplate | None:
    try:
        return check(text)
    except TemplateRefused:
        return None  # stored before texts could be templates: its braces are its own


class Outgoing:
    """A message as the rules, the router and the request see it: its row (`message_query`),
    with its dispatch's text rendered for its client at this moment. `text` is what goes out;
    `personal` whether it differs by client (then it is recorded on the message); `missing`
    the keys the client lacks, when it cannot be rendered."""

    __slots__ = ("capped", "missing", "personal", "row", "text")

    def __init__(self, row: Any) -> None:
        self.row = row
        self.text: str = row.text
        self.personal = False
        self.missing: Missing | None = None
        # Why the frequency cap keeps it from its client now (activities.caps), if it does.
        self.capped: str | None = None
        template = _template(row.text)
        if template is None or template.plain or row.client_id is None:
            return
        self.personal = True
        values = (
            client_values(
                phone=row.phone, tag=row.tag, timezone=row.timezone, attributes=row.attributes
            )
            if template.personal
            else {}
        )
        rendered = template.render(values)
        if isinstance(rendered, Missing):
            self.missing = rendered
        else:
            self.text = rendered

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


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
    row: Outgoing, windows: Windows, *, dispatch_status: str | None = None
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
        unrendered=None if row.missing is None else row.missing.reason,
        capped=row.capped,
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
    router: Router
    policy: FailurePolicy
    # Requests in flight from this worker process, across every batch and attempt.
    slots: asyncio.Semaphore
    # Outcome writes of this process's batches that failed: each stops every batch in flight,
    # so that no request goes out while the database cannot record it.
    write_failures: int = 0
    # FREQUENCY_CAP; None: no cap.
    cap: FrequencyCap | None = None

    async def apply_cap(self, rows: Sequence[Outgoing], windows: Windows) -> None:
        """Marks `capped` the messages of these that would go now and that the frequency cap
        keeps from their clients; records the others as let through (activities.caps). A
        transactional dispatch's messages are neither capped nor counted."""
        if self.cap is None:
            return
        now = activity_now()
        going = [
            row
            for row in rows
            if not row.transactional
            and row.client_id is not None
            and decide(message_state(row, windows), now=now).action == Action.SEND
        ]
        held = await held_back(self.sessions, self.cap, going, now=now)
        for row in going:
            if row.id in held:
                row.capped = self.cap.reason

    async def judge_now(
        self,
        row: Any,
        windows: Windows,
        status: Callable[[], Awaitable[str | None]] | None = None,
    ) -> tuple[Decision, Ticket | None]:
        """The rules' decision at this moment, and for a send its ticket: the route it goes
        through, with that route's token of its cap taken. After a wait for the token the rules
        are asked again (the window may have closed meanwhile). `status` reads the dispatch's
        status afresh (a batch's is newer than its rows)."""
        decision = await self.judge(row, windows, status)
        if decision.action != Action.SEND:
            return decision, None
        ticket = await self.router.ticket(row)
        if not ticket.waited:
            return decision, ticket
        decision = await self.judge(row, windows, status)
        if decision.action != Action.SEND:
            await self.router.release(ticket)
            return decision, None
        return decision, ticket

    async def judge(
        self,
        row: Any,
        windows: Windows,
        status: Callable[[], Awaitable[str | None]] | None = None,
    ) -> Decision:
        current = await status() if status else None
        return decide(message_state(row, windows, dispatch_status=current), now=activity_now())

    async def post(
        self,
        row: Any,
        ticket: Ticket,
        windows: Windows,
        status: Callable[[], Awaitable[str | None]] | None = None,
    ) -> Attempt:
        """The request through the ticket's route (and on, in a failover)."""
        return await self.router.send(row, ticket, lambda: self.judge(row, windows, status))

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
