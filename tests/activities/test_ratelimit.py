"""A route's send cap through PostgreSQL: limiters of separate processes share it, in
messages (an average rate) or in segments (a ceiling that no second crosses)."""

import asyncio
import time

import pytest

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


def test_a_ceiling_in_segments_packs_whole_messages_into_each_second(db: Database) -> None:
    ceiling = SendRateLimiter(sessions=db.sessions, rate_per_second=20, ceiling=True)
    average = SendRateLimiter(sessions=db.sessions, rate_per_second=20)
    # Three-segment texts: six a second (18 segments), as seven would be 21; 2 % in hand.
    assert ceiling.span(3) == pytest.approx(1 / 6 * 1.02)
    assert ceiling.span(1) == pytest.approx(1 / 20 * 1.02)
    # A text larger than the cap goes alone, once per its share of seconds.
    assert ceiling.span(30) == pytest.approx(30 / 20 * 1.02)
    # In messages: the average rate, as the one global cap always was.
    assert average.span(1) == pytest.approx(1 / 20)


async def test_mixed_sizes_share_one_ceiling(db: Database) -> None:
    """Two limiters (two processes) on one route, texts of one and of three segments: no
    window of one second holds more than the cap."""
    cap = 20
    limiters = [
        SendRateLimiter(sessions=db.sessions, rate_per_second=cap, name="test-mixed", ceiling=True)
        for _ in range(2)
    ]
    sent: list[tuple[float, int]] = []

    async def send(index: int) -> None:
        units = 3 if index % 3 else 1
        await limiters[index % 2].acquire(units)
        sent.append((time.monotonic(), units))

    await asyncio.gather(*(send(index) for index in range(30)))
    sent.sort()
    for index, (moment, _) in enumerate(sent):
        in_window = sum(units for m, units in sent[index:] if m < moment + 1.0)
        # At most one text's worth over: a window may start on a 3-segment slot taken by one
        # process and end on a 1-segment one of the other (spans of different sizes).
        assert in_window <= cap + 3, (index, in_window)
