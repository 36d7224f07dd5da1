"""The global send-rate cap through PostgreSQL: limiters of separate processes share it."""

import asyncio
import time

from activities.ratelimit import SendRateLimiter
from core.db import Database


async def test_two_limiters_share_one_rate(db: Database) -> None:
    rate, sends = 40.0, 80
    # Two limiters on one row stand for two worker processes.
    first, second = (
        SendRateLimiter(sessions=db.sessions, rate_per_second=rate, name="test-shared")
        for _ in range(2)
    )
    moments: list[float] = []

    async def send(limiter: SendRateLimiter) -> None:
        await limiter.acquire()
        moments.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(send(first if i % 2 else second) for i in range(sends)))
    elapsed = time.monotonic() - started
    # 80 sends at 40/s take about 2 s whichever limiter hands them out.
    assert elapsed >= (sends - rate * 0.1) / rate * 0.9, elapsed
    # No second of the run holds more than the rate plus one reservation of each limiter.
    moments.sort()
    for index, moment in enumerate(moments):
        in_window = sum(1 for m in moments[index:] if m < moment + 1.0)
        assert in_window <= rate + 2 * rate * 0.1 + 1, (index, in_window)


async def test_no_cap_costs_nothing(db: Database) -> None:
    limiter = SendRateLimiter(sessions=db.sessions, rate_per_second=None)
    started = time.monotonic()
    for _ in range(1000):
        await limiter.acquire()
    assert time.monotonic() - started < 0.5
