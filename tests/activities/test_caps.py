"""The frequency cap's check and record against real PostgreSQL: concurrent checks for one
client let exactly the cap through; a retried message keeps its place; a message that ended
without going frees it; the trailing period lets the client be messaged again."""

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from activities.caps import held_back
from core.caps import FrequencyCap
from core.db import Database
from core.models import Message
from tests.factories import make_client, make_dispatch, make_messages

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_concurrent_checks_for_one_client_let_the_cap_through(db: Database) -> None:
    client = await make_client(db)
    messages = []
    for _ in range(20):
        messages += await make_messages(db, await make_dispatch(db), [client], cohort="all")
    cap = FrequencyCap.parse("2/24h")
    # Twenty batches, each its own transaction, judging this client's message at once.
    held = await asyncio.gather(
        *(held_back(db.sessions, cap, [message], now=NOW) for message in messages)
    )
    assert sum(1 for ids in held if not ids) == 2
    # One batch's own messages count too: two of one client in one batch, one place left.
    other = await make_client(db)
    dispatch = await make_dispatch(db)
    mine = await make_messages(db, dispatch, [other], cohort="all")
    more = await make_messages(db, await make_dispatch(db), [other], cohort="all")
    one = FrequencyCap.parse("1/1h")
    assert await held_back(db.sessions, one, [*mine, *more], now=NOW) == {more[0].id}


async def test_a_retry_keeps_its_place_and_an_ended_message_frees_it(db: Database) -> None:
    client = await make_client(db)
    first, second = [
        (await make_messages(db, await make_dispatch(db), [client], cohort="all"))[0]
        for _ in range(2)
    ]
    cap = FrequencyCap.parse("1/24h")
    assert await held_back(db.sessions, cap, [first], now=NOW) == set()
    assert await held_back(db.sessions, cap, [first], now=NOW) == set()  # its retry
    assert await held_back(db.sessions, cap, [second], now=NOW) == {second.id}
    # The first expired without going: its place is free.
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message).where(Message.id == first.id).values(status="expired")
        )
        await session.commit()
    assert await held_back(db.sessions, cap, [second], now=NOW) == set()


async def test_the_period_trails(db: Database) -> None:
    client = await make_client(db)
    first, second = [
        (await make_messages(db, await make_dispatch(db), [client], cohort="all"))[0]
        for _ in range(2)
    ]
    cap = FrequencyCap.parse("1/24h")
    assert await held_back(db.sessions, cap, [first], now=NOW) == set()
    assert await held_back(db.sessions, cap, [second], now=NOW + timedelta(hours=23)) == {second.id}
    assert await held_back(db.sessions, cap, [second], now=NOW + timedelta(hours=24)) == set()
