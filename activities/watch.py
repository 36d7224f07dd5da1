"""What a running batch knows of its dispatch, read again at most every half second: its
status (a pause or a cancel stops its requests within a second, whatever the pace of sending),
whether another batch of it found the remote down, and the fields an edit of a running dispatch
changes (its text, end and window), which the batch's loaded rows carry as they were."""

import time as clock
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core.db import SessionFactory
from core.models import dispatch_t

# A batch reads its dispatch's status at least this often.
STATUS_MAX_AGE_SECONDS = 0.5
# What an edit of a running dispatch changes (core.models.EDITABLE_WHILE_RUNNING) as the
# message rows carry it.
EDITED_FIELDS = (
    dispatch_t.c.text,
    dispatch_t.c.end_at,
    dispatch_t.c.window_start,
    dispatch_t.c.window_end,
)


def edited(row: Any) -> tuple[Any, ...]:
    """The EDITED_FIELDS of a message row or a dispatch row."""
    return (row.text, row.end_at, row.window_start, row.window_end)


@dataclass
class DispatchWatch:
    """One batch's view of its dispatch. `trips_after`: a breaker that a batch of the dispatch
    opened since then stops this one (the cohort's round began then, or this batch)."""

    sessions: SessionFactory
    dispatch_id: int
    trips_after: datetime
    # The dispatch's status as last read, and when (monotonic seconds); with it the edited
    # fields as read then, and whether another batch's breaker had opened.
    status: str | None = None
    read_at: float = 0.0
    fields: tuple[Any, ...] | None = None
    tripped: bool = False

    async def read(self, *, fresh: bool = False) -> str | None:
        """The dispatch's status, read again when older than STATUS_MAX_AGE_SECONDS or asked
        `fresh` (None when the dispatch is gone: its rows then say so themselves)."""
        now = clock.monotonic()
        if fresh or now - self.read_at > STATUS_MAX_AGE_SECONDS:
            async with self.sessions() as session:
                row = (
                    await session.execute(
                        sa.select(
                            dispatch_t.c.status, dispatch_t.c.breaker_tripped_at, *EDITED_FIELDS
                        ).where(dispatch_t.c.id == self.dispatch_id)
                    )
                ).one_or_none()
            self.read_at = now
            self.status = None if row is None else row.status
            self.fields = None if row is None else edited(row)
            tripped = None if row is None else row.breaker_tripped_at
            self.tripped = self.tripped or (tripped is not None and tripped >= self.trips_after)
        return self.status

    async def edited_since(self, loaded: tuple[Any, ...] | None) -> bool:
        """Whether the dispatch was edited since rows carrying `loaded` were read: the last
        read's fields differ, and so do a fresh read's (the last may be older than the rows)."""
        await self.read()
        if self.fields is None or self.fields == loaded:
            return False
        await self.read(fresh=True)
        return self.fields is not None and self.fields != loaded
