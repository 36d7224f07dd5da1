"""Database activities of the workflows are idempotent on the ids their callers pass."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from temporalio.testing import ActivityEnvironment

from activities.dispatch import DispatchActivities
from core.contracts.delivery import FinishMessageInput
from core.contracts.dispatch import CountOpenInput, LayOutInput
from core.contracts.legacy import AudiencePageInput
from core.db import Database
from core.models import Message
from tests.factories import make_client, make_dispatch


async def test_audience_pages_are_idempotent(db: Database) -> None:
    clients = [await make_client(db, tag="vip" if i % 3 else "other") for i in range(10)]
    vip_ids = [c.id for c in clients if c.tag == "vip"]
    dispatch = await make_dispatch(db, tags=["vip"])
    assert dispatch.id is not None
    env = ActivityEnvironment()
    acts = DispatchActivities(sessions=db.sessions)

    first = await env.run(acts.next_audience_page, AudiencePageInput(dispatch.id, 0, 4))
    # The same page again, as after a retry of the activity or a replay after a crash.
    again = await env.run(acts.next_audience_page, AudiencePageInput(dispatch.id, 0, 4))
    assert first == again
    assert [r.client_id for r in first.recipients] == vip_ids[:4]
    assert not first.done

    second = await env.run(
        acts.next_audience_page, AudiencePageInput(dispatch.id, first.last_client_id, 4)
    )
    assert [r.client_id for r in second.recipients] == vip_ids[4:]
    assert second.done

    async with db.sessions() as session:
        count = (
            await session.execute(
                sa.select(sa.func.count()).where(Message.dispatch_id == dispatch.id)
            )
        ).scalar_one()
    assert count == len(vip_ids)

    # A final message is not handed out again.
    message_id = first.recipients[0].message_id
    await env.run(acts.finish_message, FinishMessageInput(message_id, "expired", "test"))
    third = await env.run(acts.next_audience_page, AudiencePageInput(dispatch.id, 0, 4))
    assert message_id not in {r.message_id for r in third.recipients}
    counts = await env.run(acts.count_open_messages, CountOpenInput(dispatch.id))
    assert (counts.open, counts.total) == (len(vip_ids) - 1, len(vip_ids))


async def test_finish_never_overwrites_a_final_status(db: Database) -> None:
    client = await make_client(db)
    dispatch = await make_dispatch(db)
    message = Message(dispatch_id=dispatch.id, client_id=client.id, status="sent")
    async with db.sessions() as session:
        session.add(message)
        await session.commit()
    assert message.id is not None
    acts = DispatchActivities(sessions=db.sessions)
    result = await ActivityEnvironment().run(
        acts.finish_message, FinishMessageInput(message.id, "expired", "late")
    )
    assert not result.changed
    async with db.sessions() as session:
        stored = await session.get(Message, message.id)
        assert stored is not None and stored.status == "sent"


async def test_a_per_client_page_expires_the_zones_the_window_misses(db: Database) -> None:
    """Found by the soak run: of 5,000 clients of a per-client dispatch, 4,385 were in zones
    whose window never opened before the end, and each got a delivery workflow only to expire
    it, minutes past the end. The page expires them itself; the others come back to start."""
    now = datetime.now(UTC)
    # A window opening in Moscow an hour from now and one hour long; the dispatch ends in
    # three hours: open in Moscow, never in Vladivostok (seven hours east).
    opens = (now + timedelta(hours=1)).astimezone(ZoneInfo("Europe/Moscow"))
    opens = opens.replace(second=0, microsecond=0)
    window = (opens.time(), (opens + timedelta(hours=1)).time())
    moscow = [await make_client(db, tag="pc", timezone="Europe/Moscow") for _ in range(2)]
    far = [await make_client(db, tag="pc", timezone="Asia/Vladivostok") for _ in range(3)]
    dispatch = await make_dispatch(
        db, tags=["pc"], window=window, end_at=now + timedelta(hours=3), delivery="per_client"
    )
    assert dispatch.id is not None
    acts = DispatchActivities(sessions=db.sessions)
    page = await ActivityEnvironment().run(
        acts.lay_out_audience, LayOutInput(dispatch.id, 0, 10, per_client=True)
    )
    assert {r.client_id for r in page.recipients} == {c.id for c in moscow}
    assert page.laid_out == 5
    async with db.sessions() as session:
        rows = (
            await session.execute(
                sa.select(Message.client_id, Message.status, Message.last_error).where(
                    Message.dispatch_id == dispatch.id
                )
            )
        ).all()
    by_client = {row.client_id: (row.status, row.last_error) for row in rows}
    assert {by_client[c.id] for c in far} == {("expired", "no window before end")}
    assert {by_client[c.id][0] for c in moscow} == {"pending"}
    # The same page again (a retried activity): nothing changes, nothing more comes back.
    again = await ActivityEnvironment().run(
        acts.lay_out_audience, LayOutInput(dispatch.id, 0, 10, per_client=True)
    )
    assert again.recipients == page.recipients
