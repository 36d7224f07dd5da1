"""A route's circuit in PostgreSQL, seen by two worker processes (two `Circuits` on one table):
opened by failures in a row, probed by one process at a time with backoff, closed by a probe's
answer only."""

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa

from activities.circuits import REFRESH_SECONDS, Admission, Circuits
from core.db import Database
from core.models import send_route_t
from core.routes import CircuitState

INITIAL = 0.8


def circuits(db: Database) -> Circuits:
    return Circuits(
        sessions=db.sessions,
        names=["gw"],
        failures_to_open=3,
        probe_initial_seconds=INITIAL,
        probe_max_seconds=3.0,
        probe_lease_seconds=2.0,
    )


async def row(db: Database) -> sa.Row[tuple[object, ...]]:
    async with db.sessions() as session:
        return (await session.execute(sa.select(send_route_t))).one()


async def test_open_probe_backoff_and_close(db: Database) -> None:
    one, other = circuits(db), circuits(db)
    assert await one.admit("gw") == Admission.NORMAL
    for _ in range(2):
        await one.down("gw", Admission.NORMAL, "HTTP 503")
    assert one.state("gw") == CircuitState.CLOSED  # two of three
    await one.down("gw", Admission.NORMAL, "HTTP 503")
    opened = await row(db)
    assert (opened.state, opened.last_error, opened.failed_probes) == ("open", "HTTP 503", 0)
    assert await one.admit("gw") is None

    # A late answer to a request sent before it opened does not close it.
    await one.answered("gw", Admission.NORMAL)
    assert (await row(db)).state == "open"

    # The other process reads it within REFRESH_SECONDS.
    await asyncio.sleep(REFRESH_SECONDS)
    assert await other.admit("gw") is None
    assert other.state("gw") == CircuitState.OPEN

    # Once due, one process claims the probe; the other's requests go elsewhere meanwhile.
    await asyncio.sleep(max(0.0, (opened.probe_at - datetime.now(UTC)).total_seconds()))
    assert await one.admit("gw") == Admission.PROBE
    assert await other.admit("gw") is None
    assert await one.admit("gw", last=False) is None  # another route may take it: no wait

    # The probe fails: open again, the next probe twice as far.
    await one.down("gw", Admission.PROBE, "cannot connect")
    reopened = await row(db)
    assert (reopened.state, reopened.failed_probes) == ("open", 1)
    async with db.sessions() as session:
        wait = await session.scalar(
            sa.select(sa.extract("epoch", send_route_t.c.probe_at - sa.func.now()))
        )
    assert 2 * INITIAL * 0.8 < float(wait) <= 2 * INITIAL + 0.05, wait

    # The next probe is answered: closed for everyone, and the waiting request goes too.
    await asyncio.sleep(float(wait))
    assert await other.admit("gw") == Admission.PROBE
    waiting = asyncio.create_task(other.admit("gw"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # its only route is being probed: it waits for the answer
    await other.answered("gw", Admission.PROBE)
    assert await waiting == Admission.NORMAL
    closed = await row(db)
    assert (closed.state, closed.failed_probes, closed.down_since) == (
        "closed",
        0,
        opened.down_since,
    )
    await asyncio.sleep(REFRESH_SECONDS)
    assert await one.admit("gw") == Admission.NORMAL


async def test_a_throttling_gateway_is_probed_no_sooner_than_it_asked(db: Database) -> None:
    one = circuits(db)
    for _ in range(3):
        await one.down("gw", Admission.NORMAL, "HTTP 429 throttled", retry_after=5.0)
    async with db.sessions() as session:
        wait = await session.scalar(
            sa.select(sa.extract("epoch", send_route_t.c.probe_at - sa.func.now()))
        )
    assert 4.5 < float(wait) <= 5.0, wait
