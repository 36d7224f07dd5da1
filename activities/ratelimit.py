"""A route's cap on sends per second, shared by every worker process through PostgreSQL.

A generic cell rate algorithm over one row per route: each process reserves the next slice of
time for a handful of sends (`UPDATE ... SET next_free = greatest(next_free, now) + n * span`),
then spaces those sends over that slice. The database's clock is the only clock, so workers on
different machines agree; a process that dies holding a reservation only wastes its slice.
Without a cap it costs nothing: no query at all.

A cap in messages spaces sends by 1 / rate: the rate holds on average, as it always did. A cap
in segments is a gateway's contracted ceiling, which no second may cross: a message of u
segments under a cap of r is spaced by 1 / floor(r / u) (three-segment texts under 20
segments/s go six a second: 18 segments, as seven would be 21), and 2 % more, a guard against
the jitter of the network between our clock and the gateway's.
"""

import asyncio
import time

import sqlalchemy as sa

from core import metrics
from core.db import SessionFactory

# Each reservation covers about this long of sending (at least one send).
RESERVATION_SECONDS = 0.1
# The share of a ceiling (a cap in segments) kept in hand for the jitter of the network.
CEILING_GUARD = 0.02

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
        self,
        *,
        sessions: SessionFactory,
        rate_per_second: float | None,
        name: str = "send",
        ceiling: bool = False,
    ) -> None:
        self.sessions = sessions
        self.rate = rate_per_second
        self.name = name
        # A cap in segments: no second may hold more (see the module's docstring).
        self.ceiling = ceiling
        self._lock = asyncio.Lock()
        # Monotonic instants of reserved, unused sends, by the span each send takes.
        self._slots: dict[float, list[float]] = {}

    def span(self, units: int) -> float:
        """Seconds of the route's time that one send of this many units takes."""
        assert self.rate is not None
        if not self.ceiling:
            return units / self.rate
        per_second = int(self.rate // units)
        # A message larger than the cap goes alone, once per units / rate seconds.
        span = 1 / per_second if per_second else units / self.rate
        return span * (1 + CEILING_GUARD)

    async def acquire(self, units: int = 1) -> None:
        """Returns when one send of this many units (segments, or 1 per message) may go."""
        if self.rate is None:
            return
        started = time.monotonic()
        metrics.RATE_THROTTLED.inc()
        try:
            await self._acquire(self.span(units))
        finally:
            metrics.RATE_THROTTLED.dec()
            metrics.RATE_WAIT_SECONDS.observe(time.monotonic() - started)

    async def _acquire(self, span: float) -> None:
        async with self._lock:
            now = time.monotonic()
            # A reserved send whose instant passed more than half its span ago is given up:
            # used late, it would go out on top of the next reservation's (another process's).
            slots = [slot for slot in self._slots.get(span, []) if slot > now - span / 2]
            if not slots:
                slots = await self._reserve(span)
            self._slots[span] = slots
            slot = slots.pop(0)
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _reserve(self, span: float) -> list[float]:
        count = max(1, round(RESERVATION_SECONDS / span))
        async with self.sessions() as session:
            wait = float(
                (
                    await session.execute(_RESERVE, {"name": self.name, "span": count * span})
                ).scalar_one()
            )
            await session.commit()
        start = time.monotonic() + max(0.0, wait)
        return [start + index * span for index in range(count)]
