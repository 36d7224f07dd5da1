"""The batch send of a cohort against real PostgreSQL and the simulator over HTTP: every
message judged at its moment, outcomes written in bulk, failures handed off, and a retried
batch that sends nothing twice."""

import asyncio
import dataclasses
import time as time_module
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import pytest
import sqlalchemy as sa
from temporalio.testing import ActivityEnvironment

from activities.dispatch import DispatchActivities
from activities.routing import Router
from activities.send import SendActivities
from core.contracts.cohort import COHORT_ALL, ConfirmHandoffsInput, SendBatchInput, SendBatchResult
from core.db import Database
from core.models import Client, Dispatch, Message, send_route_t
from core.settings import Settings
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch, make_messages


@pytest.fixture
async def sender(
    db: Database, settings: Settings, simulator: RunningSimulator
) -> AsyncIterator[SendActivities]:
    # A route that its circuit opened is probed again within a moment: these tests are about
    # batches (tests/e2e/test_routes.py is about circuits).
    changes = {
        "send_timeout_seconds": 1.0,
        "send_concurrency": 10,
        "route_probe_initial_seconds": 0.05,
    }
    async with Router.from_settings(settings.model_copy(update=changes), db.sessions) as router:
        yield SendActivities(sessions=db.sessions, router=router, concurrency=10)


async def run_batch(
    sender: SendActivities, input: SendBatchInput, *, at: datetime | None = None
) -> SendBatchResult:
    env = ActivityEnvironment()
    if at is not None:
        env.info = dataclasses.replace(env.info, current_attempt_scheduled_time=at)
    result: SendBatchResult = await env.run(sender.send_batch, input)
    return result


async def until_probed(db: Database) -> None:
    """Waits until the route that an outage opened may be probed (the next send probes it)."""
    async with db.sessions() as session:
        wait = await session.scalar(
            sa.select(sa.func.max(sa.extract("epoch", send_route_t.c.probe_at - sa.func.now())))
        )
    await asyncio.sleep(max(0.0, float(wait or 0)))


async def rows(db: Database, dispatch: Dispatch) -> list[Message]:
    async with db.sessions() as session:
        found = await session.execute(
            sa.select(Message).where(Message.dispatch_id == dispatch.id).order_by(Message.id)
        )
        return list(found.scalars())


async def cohort_of(
    db: Database, count: int, *, timezone: str = "Europe/Moscow", **dispatch: object
) -> tuple[Dispatch, list[Client], list[Message]]:
    clients = [await make_client(db, timezone=timezone) for _ in range(count)]
    made = await make_dispatch(db, **dispatch)  # type: ignore[arg-type]
    cohort = timezone if dispatch.get("window") else COHORT_ALL
    return made, clients, await make_messages(db, made, clients, cohort=cohort)


def batch(dispatch: Dispatch, cohort: str = COHORT_ALL, **fields: object) -> SendBatchInput:
    assert dispatch.id is not None
    values: dict[str, object] = {"after_message_id": 0, "limit": 500, **fields}
    return SendBatchInput(dispatch_id=dispatch.id, cohort=cohort, **values)  # type: ignore[arg-type]


async def test_batch_sends_the_cohorts_pending_messages_in_pages(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    dispatch, _, messages = await cohort_of(db, 25)
    other = await make_messages(db, dispatch, [await make_client(db)], cohort="Asia/Tokyo")
    first = await run_batch(sender, batch(dispatch, limit=20))
    assert (first.sent, first.exhausted, first.stopped) == (20, False, None)
    assert first.last_message_id == messages[19].id
    second = await run_batch(sender, batch(dispatch, after_message_id=first.last_message_id))
    assert (second.sent, second.exhausted) == (5, True)
    stored = {m.id: m for m in await rows(db, dispatch)}
    assert all(stored[m.id].status == "sent" and stored[m.id].attempts == 1 for m in messages)
    assert all(stored[m.id].sent_at is not None for m in messages)
    assert stored[other[0].id].status == "pending"
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (25, 0)

    # The same batch again (a retry after its completion was lost): nothing is sent twice.
    again = await run_batch(sender, batch(dispatch, limit=20))
    assert (again.sent, again.exhausted) == (0, True)
    assert simulator.state.stats()["received"] == 25


async def test_batch_stops_when_the_cohorts_window_closes(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    day = datetime(2026, 12, 1, tzinfo=UTC)
    dispatch, _, _ = await cohort_of(
        db,
        3,
        timezone="Europe/Moscow",
        window=(time(9, 0), time(21, 0)),
        start_at=day,
        end_at=day + timedelta(days=3),
    )
    late = datetime(2026, 12, 1, 19, 30, tzinfo=UTC)  # 22:30 in Moscow
    result = await run_batch(sender, batch(dispatch, "Europe/Moscow"), at=late)
    assert result.stopped == "outside_window"
    assert result.not_before == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    assert (result.last_message_id, result.exhausted, result.sent) == (0, False, 0)
    assert {m.status for m in await rows(db, dispatch)} == {"pending"}
    assert simulator.state.stats()["received"] == 0


async def test_client_who_moved_zone_gets_a_delivery_of_its_own(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    now = datetime.now(UTC)
    # A window open now in UTC and closed in UTC+12 (the zones are 12 hours apart).
    opened = now.replace(minute=0, second=0, microsecond=0)
    window = (opened.time(), (opened + timedelta(hours=2)).time())
    dispatch, clients, messages = await cohort_of(
        db, 2, timezone="UTC", window=window, start_at=now - timedelta(minutes=1)
    )
    async with db.sessions() as session:
        await session.execute(
            sa.update(Client).where(Client.id == clients[0].id).values(timezone="Pacific/Fiji")
        )
        await session.commit()
    result = await run_batch(sender, batch(dispatch, "UTC"))
    assert result.sent == 1
    [handoff] = result.handoffs
    assert (handoff.message_id, handoff.timezone) == (messages[0].id, "Pacific/Fiji")
    moved = (await rows(db, dispatch))[0]
    assert (moved.status, moved.sender, moved.attempts) == ("pending", "owed", 0)


async def test_failed_sends_are_handed_off_and_the_breaker_stops_the_batch(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    dispatch, _, messages = await cohort_of(db, 60)
    simulator.state.set_config(SimulatorConfig(outage=True))
    result = await run_batch(sender, batch(dispatch, breaker_failures=5, retry_delay_seconds=2))
    assert result.stopped == "remote_down"
    assert result.last_message_id == 0
    # Five failures open the breaker; requests already in flight finish and count too.
    assert 5 <= len(result.handoffs) <= 5 + 10
    assert {h.delay_seconds for h in result.handoffs} == {2}
    stored = await rows(db, dispatch)
    handed = {h.message_id for h in result.handoffs}
    for message in stored:
        if message.id in handed:
            assert (message.status, message.sender, message.attempts) == ("retrying", "owed", 1)
            assert message.last_error is not None and "503" in message.last_error
        else:
            assert (message.status, message.sender, message.attempts) == ("pending", "cohort", 0)
    assert simulator.state.stats()["received"] == len(handed)

    # The remote is back: the next batch sends the rest, never the handed-off ones.
    simulator.state.set_config(SimulatorConfig())
    await until_probed(db)
    rest = await run_batch(sender, batch(dispatch))
    assert rest.sent == len(messages) - len(handed)
    assert rest.exhausted


async def test_throttling_hands_off_with_the_remotes_retry_after(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    dispatch, _, _ = await cohort_of(db, 1)
    simulator.state.set_config(SimulatorConfig(throttle_rate=1.0, retry_after_seconds=7))
    result = await run_batch(sender, batch(dispatch))
    assert [h.delay_seconds for h in result.handoffs] == [7]


async def test_rules_end_messages_without_sending(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    end_at = datetime.now(UTC) + timedelta(hours=1)
    dispatch, clients, _ = await cohort_of(db, 3, end_at=end_at)
    simulator.state.set_config(SimulatorConfig(reject_rate=1.0))
    async with db.sessions() as session:
        await session.execute(sa.delete(Client).where(Client.id == clients[0].id))
        await session.commit()
    rejected = await run_batch(sender, batch(dispatch, limit=2))
    assert (rejected.sent, rejected.finished) == (0, 2)
    statuses = [m.status for m in await rows(db, dispatch)]
    assert statuses[:2] == ["cancelled", "failed"]
    late = await run_batch(
        sender, batch(dispatch, after_message_id=rejected.last_message_id), at=end_at
    )
    assert late.finished == 1
    assert [m.status for m in await rows(db, dispatch)] == ["cancelled", "failed", "expired"]
    assert simulator.state.stats()["received"] == 1


async def test_deleted_dispatch_stops_the_batch(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    dispatch, _, _ = await cohort_of(db, 3)
    async with db.sessions() as session:
        await session.execute(sa.delete(Dispatch).where(Dispatch.id == dispatch.id))
        await session.commit()
    result = await run_batch(sender, batch(dispatch))
    assert (result.sent, result.exhausted, result.stopped) == (0, True, "deleted")
    assert simulator.state.stats()["received"] == 0


async def test_handoffs_an_attempt_could_not_return_come_back_until_confirmed(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    """A batch attempt that wrote its hand-offs and then failed: the next attempt returns them,
    and they stop coming once the cohort confirmed their deliveries."""
    dispatch, _, messages = await cohort_of(db, 3)
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message)
            .where(Message.id == messages[0].id)
            .values(status="retrying", sender="owed", attempts=1)
        )
        await session.commit()
    retried = await run_batch(sender, batch(dispatch, retry_delay_seconds=3))
    assert retried.sent == 2
    assert [(h.message_id, h.delay_seconds) for h in retried.handoffs] == [(messages[0].id, 3)]
    again = await run_batch(sender, batch(dispatch))
    assert [h.message_id for h in again.handoffs] == [messages[0].id]

    activities = DispatchActivities(sessions=db.sessions)
    assert messages[0].id is not None
    confirmed = await ActivityEnvironment().run(
        activities.confirm_handoffs, ConfirmHandoffsInput([messages[0].id])
    )
    assert confirmed.confirmed == 1
    assert (await run_batch(sender, batch(dispatch))).handoffs == []
    assert simulator.state.stats()["received"] == 2


async def test_a_client_on_the_stop_list_is_never_sent_to(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    dispatch, clients, _ = await cohort_of(db, 3)
    # Laid out before the opt-out: judged at the send, like the end time.
    async with db.sessions() as session:
        await session.execute(
            sa.update(Client).where(Client.id == clients[1].id).values(opted_out=True)
        )
        await session.commit()
    result = await run_batch(sender, batch(dispatch))
    assert (result.sent, result.finished) == (2, 1)
    stored = await rows(db, dispatch)
    assert [m.status for m in stored] == ["sent", "opted_out", "sent"]
    assert stored[1].last_error == "client opted out"
    assert simulator.state.stats()["received"] == 2


async def test_lanes_split_a_cohort_into_disjoint_shares_sent_at_once(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    """Parallel batches of one cohort: lane i takes the messages whose id % lanes == i, so that
    batches running at once (on one worker or several) never send the same message."""
    dispatch, _, messages = await cohort_of(db, 30)
    simulator.state.set_config(SimulatorConfig(latency_ms=20))
    results = await asyncio.gather(
        *(run_batch(sender, batch(dispatch, lane=lane, lanes=3)) for lane in range(3))
    )
    for lane, result in enumerate(results):
        share = [m.id for m in messages if m.id is not None and m.id % 3 == lane]
        assert (result.sent, result.exhausted, result.last_message_id) == (
            len(share),
            True,
            share[-1],
        )
    assert sum(result.sent for result in results) == 30
    stats = simulator.state.stats()
    assert (stats["unique_accepted"], stats["duplicates"]) == (30, 0)
    assert stats["max_in_flight"] > 1
    assert {m.status for m in await rows(db, dispatch)} == {"sent"}


async def test_one_batch_opening_its_breaker_stops_the_others_in_flight(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    """A batch whose breaker opens counts it on the dispatch's row; every other batch of the
    dispatch reads that with the status and stops too, instead of finding the outage alone."""
    dispatch, _, _ = await cohort_of(db, 200)
    assert dispatch.id is not None

    async def tripped_at() -> datetime | None:
        async with db.sessions() as session:
            return await session.scalar(
                sa.select(Dispatch.breaker_tripped_at).where(Dispatch.id == dispatch.id)
            )

    simulator.state.set_config(SimulatorConfig(outage=True))
    tripped = await run_batch(sender, batch(dispatch, lane=0, lanes=2, breaker_failures=3))
    assert tripped.stopped == "remote_down"
    assert await tripped_at() is not None

    # The other lane, sending to a healthy remote when another batch's breaker opens (set by
    # hand, as that batch's write would): it stops without a failure of its own.
    # 100 messages, ten at a time, 200 ms each: two seconds, against a status read every 0.5 s.
    simulator.state.set_config(SimulatorConfig(latency_ms=200))
    await until_probed(db)
    sibling = asyncio.create_task(run_batch(sender, batch(dispatch, lane=1, lanes=2)))
    async with asyncio.timeout(10):
        while simulator.state.stats()["accepted"] < 5:
            await asyncio.sleep(0.01)
    async with db.sessions() as session:
        await session.execute(
            sa.update(Dispatch)
            .where(Dispatch.id == dispatch.id)
            .values(breaker_tripped_at=datetime.now(UTC))
        )
        await session.commit()
    result = await sibling
    assert result.stopped == "remote_down"
    assert result.last_message_id == 0  # its cursor stays: the next round reads them again
    assert result.handoffs == []
    # Within half a second of the count, with its ten requests in flight finishing: far from
    # its 100 messages.
    assert 5 <= result.sent < 100


async def test_an_edit_while_a_chunk_sends_reaches_the_rest_of_it(
    db: Database, sender: SendActivities, simulator: RunningSimulator
) -> None:
    """Found by the soak run: a batch read its messages fifty at a time with their dispatch's
    text, end and window, and sent a chunk's rest with the text as it was before an edit.
    Now an edit seen with the status (read every half second) makes the batch read the rest
    of its chunk again: what leaves after the edit carries the new text."""
    dispatch, _, _ = await cohort_of(db, 40, text="Before the edit")
    assert dispatch.id is not None
    # 40 messages, ten at a time, 200 ms each: under a second, one chunk.
    simulator.state.set_config(SimulatorConfig(latency_ms=200))
    sending = asyncio.create_task(run_batch(sender, batch(dispatch)))
    async with asyncio.timeout(10):
        while simulator.state.stats()["received"] < 10:
            await asyncio.sleep(0.005)
    async with db.sessions() as session:
        await session.execute(
            sa.update(Dispatch).where(Dispatch.id == dispatch.id).values(text="After the edit")
        )
        await session.commit()
    edited_at = time_module.time()
    result = await sending
    assert result.sent == 40
    texts = {msg_id: record[3] for msg_id, record in simulator.state.messages.items()}
    arrivals = {msg_id: arrived for arrived, _, msg_id in simulator.state.arrivals_log()}
    before = [m for m in texts if arrivals[m] < edited_at]
    # Within a status read's age of the edit (0.5 s), the new text.
    after = [m for m in texts if arrivals[m] > edited_at + 0.6]
    assert before and after
    assert {texts[m] for m in before} == {"Before the edit"}
    assert {texts[m] for m in after} == {"After the edit"}
