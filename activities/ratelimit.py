"""The global cap on sends per second, shared by every worker process through PostgreSQL.

A generic cell rate algorithm over one row: each process reserves the next slice of time for a
handful of sends (`UPDATE ... SET next_free = greatest(next_free, now) + n / rate`), then spaces
those sends over that slice. The database's clock is the only clock, so workers on different
machines agree; a process that dies holding a reservation only wastes its slice. Without a cap
it costs nothing: no query at all.
"""

import asyncio
import time

import sqlalchemy as sa

from core import metrics
from core.db import SessionFactory

# Each reservation covers about this long of sending (at least one send).
RESERVATION_SECONDS = 0.1

_RESERVE = sa.text(
    """
    INSERT INTO send_rate_limit AS l (name, next_free)
    VALUES (:name, clock_timestamp() + make_interval(secs => :span))
    ON CONFLICT (name) DO UPDATE
        SET next_free = greatest(l.next_free, clock_timestamp()) + make_interval(secs => :span)
    RETURNING extract(epoch FROM l.next_free - clock_timestamp()) - :span
    """
)


class SendRateLimiter:
    """`await acquire()` before each send: returns when this send may go."""

    def __init__(
        self, *, sessions: SessionFactory, rate_per_second: float | None, name: str = "send"
    ) -> None:
        self.sessions = sessions
        self.rate = rate_per_second
        self.name = name
        self._lock = asyncio.Lock()
        self._slots: list[float] = []  # monotonic instants of reserved, unused sends

    async def acquire(self) -> None:
        if self.rate is None:
            return
        started = time.monotonic()
        metrics.RATE_THROTTLED.inc()
        try:
            await self._acquire()
        finally:
            metrics.RATE_THROTTLED.dec()
            metrics.RATE_WAIT_SECONDS.observe(time.monotonic() - started)

    async def _acquire(self) -> None:
        assert self.rate is not None
        async with self._lock:
            now = time.monotonic()
            # A reserved send whose instant passed more than half an interval ago is given up:
            # used late, it would go out on top of the next reservation's (another process's).
            late = 0.5 / self.rate
            self._slots = [slot for slot in self._slots if slot > now - late]
            if not self._slots:
                self._slots = await self._reserve()
            slot = self._slots.pop(0)
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _reserve(self) -> list[float]:
        assert self.rate is not None
        count = max(1, round(self.rate * RESERVATION_SECONDS))
        span = count / self.rate
        async with self.sessions() as session:
            wait = float(
                (await session.execute(_RESERVE, {"name": self.name, "span": span})).scalar_one()
            )
            await session.commit()
        start = time.monotonic() + max(0.0, wait)
        return [start + index / self.rate for index in range(count)]
