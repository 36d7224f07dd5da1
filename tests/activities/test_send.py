"""The send activity against real PostgreSQL and the simulator over HTTP, one attempt at a
time, with the attempt's clock set through the activity environment."""

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import pytest
import sqlalchemy as sa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.routing import Router
from activities.send import SendActivities
from core.contracts.delivery import SendInput, SendResult
from core.contracts.shared import REMOTE_REJECTED, REMOTE_UNAVAILABLE
from core.db import Database
from core.models import Message
from devstack.embedded import free_port
from simulator.app import SimulatorConfig
from tests.conftest import TOKEN, RunningSimulator
from tests.factories import make_client, make_dispatch
from tests.support import router_to


@pytest.fixture
async def remotes() -> AsyncIterator[list[Router]]:
    """Routers made by the test, closed after it."""
    made: list[Router] = []
    yield made
    for remote in made:
        await remote.aclose()


def activities(db: Database, remotes: list[Router], base_url: str) -> SendActivities:
    router = router_to(base_url, db.sessions, token=TOKEN, timeout_seconds=0.5)
    remotes.append(router)
    return SendActivities(sessions=db.sessions, router=router, concurrency=10)


async def new_message(
    db: Database,
    *,
    window: tuple[time, time] | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    timezone: str = "Europe/Moscow",
) -> Message:
    client = await make_client(db, timezone=timezone)
    dispatch = await make_dispatch(
        db,
        start_at=start_at or datetime.now(UTC) - timedelta(hours=1),
        end_at=end_at or datetime.now(UTC) + timedelta(days=1),
        window=window,
    )
    message = Message(dispatch_id=dispatch.id, client_id=client.id)
    async with db.sessions() as session:
        session.add(message)
        await session.commit()
    return message


async def reload(db: Database, message: Message) -> Message:
    async with db.sessions() as session:
        found = await session.get(Message, message.id)
        assert found is not None
        return found


def at(instant: datetime) -> ActivityEnvironment:
    """An activity environment whose attempt was scheduled at `instant`."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, current_attempt_scheduled_time=instant)
    return env


async def attempt(
    db: Database, remotes: list[Router], base_url: str, message: Message, when: datetime
) -> SendResult:
    assert message.id is not None
    send = activities(db, remotes, base_url)
    result: SendResult = await at(when).run(send.send_message, SendInput(message_id=message.id))
    return result


async def test_sent_once_and_idempotent(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    message = await new_message(db)
    now = datetime.now(UTC)
    first = await attempt(db, remotes, simulator.base_url, message, now)
    assert first.status == "sent"
    stored = await reload(db, message)
    assert stored.status == "sent" and stored.attempts == 1 and stored.sent_at is not None
    record = simulator.state.message(stored.id or 0)
    assert record is not None and record["accepted"] == 1

    # A retry of an attempt whose completion was lost sends nothing more.
    again = await attempt(db, remotes, simulator.base_url, message, now)
    assert again.status == "sent"
    assert simulator.state.stats()["received"] == 1


@pytest.mark.parametrize(
    ("config", "error_part"),
    [
        (SimulatorConfig(outage=True), "HTTP 503"),
        (SimulatorConfig(error_rate=1.0), "HTTP 500"),
        (SimulatorConfig(garbage_rate=1.0), "garbage answer"),
        (SimulatorConfig(garbage_code_rate=1.0), "code is not 0"),
        (SimulatorConfig(outage=True, outage_mode="hang", hang_seconds=3), "timed out"),
    ],
    ids=["503", "500", "garbage", "code-1", "timeout"],
)
async def test_transient_failures_are_retried(
    db: Database,
    remotes: list[Router],
    simulator: RunningSimulator,
    config: SimulatorConfig,
    error_part: str,
) -> None:
    message = await new_message(db)
    simulator.state.set_config(config)
    with pytest.raises(ApplicationError) as raised:
        await attempt(db, remotes, simulator.base_url, message, datetime.now(UTC))
    assert raised.value.type == REMOTE_UNAVAILABLE
    assert not raised.value.non_retryable
    stored = await reload(db, message)
    assert stored.status == "retrying"
    assert stored.attempts == 1
    assert stored.last_error is not None and error_part in stored.last_error


async def test_throttling_honours_retry_after(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    message = await new_message(db)
    simulator.state.set_config(SimulatorConfig(throttle_rate=1.0, retry_after_seconds=7))
    with pytest.raises(ApplicationError) as raised:
        await attempt(db, remotes, simulator.base_url, message, datetime.now(UTC))
    assert raised.value.type == REMOTE_UNAVAILABLE
    assert raised.value.next_retry_delay == timedelta(seconds=7)


async def test_refused_connection_is_retried(db: Database, remotes: list[Router]) -> None:
    message = await new_message(db)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ApplicationError) as raised:
        await attempt(db, remotes, closed, message, datetime.now(UTC))
    assert raised.value.type == REMOTE_UNAVAILABLE
    stored = await reload(db, message)
    assert stored.status == "retrying"
    assert stored.last_error is not None and "cannot connect" in stored.last_error


async def test_other_4xx_fails_for_good(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    message = await new_message(db)
    simulator.state.set_config(SimulatorConfig(reject_rate=1.0))
    with pytest.raises(ApplicationError) as raised:
        await attempt(db, remotes, simulator.base_url, message, datetime.now(UTC))
    assert raised.value.type == REMOTE_REJECTED
    assert raised.value.non_retryable
    assert (await reload(db, message)).status == "failed"


async def test_no_request_after_end_time(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    end_at = datetime.now(UTC) + timedelta(hours=1)
    message = await new_message(db, end_at=end_at)
    # A retry that the server scheduled after the end time.
    result = await attempt(db, remotes, simulator.base_url, message, end_at + timedelta(seconds=1))
    assert result.status == "expired"
    assert (await reload(db, message)).status == "expired"
    assert simulator.state.stats()["received"] == 0


async def test_attempt_outside_window_waits_for_next_opening(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    day = datetime(2026, 12, 1, tzinfo=UTC)
    message = await new_message(
        db,
        window=(time(9, 0), time(21, 0)),
        timezone="Europe/Moscow",
        start_at=day,
        end_at=day + timedelta(days=3),
    )
    # 22:30 in Moscow: the window has closed for the day; it reopens at 09:00 Moscow.
    late = datetime(2026, 12, 1, 19, 30, tzinfo=UTC)
    result = await attempt(db, remotes, simulator.base_url, message, late)
    assert result.status == "outside_window"
    assert result.next_open_at == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    assert simulator.state.stats()["received"] == 0
    assert (await reload(db, message)).status == "pending"


async def test_window_that_never_reopens_expires(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    day = datetime(2026, 12, 1, tzinfo=UTC)
    message = await new_message(
        db,
        window=(time(9, 0), time(10, 0)),
        timezone="UTC",
        start_at=day,
        end_at=day + timedelta(hours=20),
    )
    result = await attempt(db, remotes, simulator.base_url, message, day + timedelta(hours=11))
    assert result.status == "expired"
    assert simulator.state.stats()["received"] == 0


async def test_deleted_client_or_dispatch_sends_nothing(
    db: Database, remotes: list[Router], simulator: RunningSimulator
) -> None:
    orphan = await new_message(db)
    async with db.sessions() as session:
        await session.execute(
            sa.text("DELETE FROM client WHERE id = :id"), {"id": orphan.client_id}
        )
        await session.commit()
    result = await attempt(db, remotes, simulator.base_url, orphan, datetime.now(UTC))
    assert result.status == "cancelled"
    assert (await reload(db, orphan)).status == "cancelled"

    gone = await new_message(db)
    async with db.sessions() as session:
        await session.execute(
            sa.text("DELETE FROM dispatch WHERE id = :id"), {"id": gone.dispatch_id}
        )
        await session.commit()
    assert (await attempt(db, remotes, simulator.base_url, gone, datetime.now(UTC))).status == (
        "cancelled"
    )
    assert simulator.state.stats()["received"] == 0
