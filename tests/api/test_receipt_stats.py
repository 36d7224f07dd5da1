"""Delivery receipts wherever statuses show: the statistics (per dispatch, per route, overall)
with the messages still `sent` past RECEIPT_WAIT_HOURS, a message's receipt time, and the admin
pages' delivered share."""

from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from core.db import Database
from core.models import Dispatch, Message, message_t
from tests.api.test_admin import signed_in
from tests.factories import make_client, make_dispatch, make_routed_messages

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(hours=49)  # past the default RECEIPT_WAIT_HOURS (48)


async def receipted_dispatch(db: Database) -> tuple[Dispatch, list[Message]]:
    """Ten messages: 2 sent long ago with no receipt (mts, bulk), 1 sent an hour ago, 4
    delivered and 1 undelivered (their receipts an hour ago), 1 failed, 1 pending."""
    dispatch = await make_dispatch(db)
    rows = [
        ("sent", "mts", LONG_AGO),
        ("sent", "bulk", LONG_AGO),
        ("sent", "mts", NOW - timedelta(hours=1)),
        ("delivered", "mts", LONG_AGO),
        ("delivered", "mts", LONG_AGO),
        ("delivered", "mts", LONG_AGO),
        ("delivered", "bulk", LONG_AGO),
        ("undelivered", "mts", LONG_AGO),
        ("failed", "mts", None),
        ("pending", None, None),
    ]
    clients = [await make_client(db) for _ in rows]
    messages = await make_routed_messages(
        db,
        dispatch,
        [(c, status, route, 1) for c, (status, route, _) in zip(clients, rows, strict=True)],
    )
    async with db.sessions() as session:
        for message, (status, _, sent_at) in zip(messages, rows, strict=True):
            receipted = status in ("delivered", "undelivered")
            await session.execute(
                sa.update(message_t)
                .where(message_t.c.id == message.id)
                .values(sent_at=sent_at, receipt_at=NOW - timedelta(hours=1) if receipted else None)
            )
        await session.commit()
    return dispatch, messages


async def test_statistics_count_delivered_and_no_receipt(
    api: httpx.AsyncClient, db: Database
) -> None:
    dispatch, _ = await receipted_dispatch(db)
    other = await make_dispatch(db)
    await make_routed_messages(db, other, [(await make_client(db), "sent", "mts", 1)])
    async with db.sessions() as session:
        await session.execute(
            sa.update(message_t).where(message_t.c.dispatch_id == other.id).values(sent_at=LONG_AGO)
        )
        await session.commit()

    one = (await api.get(f"/api/v1/dispatches/{dispatch.id}/stats")).json()
    assert one["messages"] | {"total": 0} == {
        "pending": 1,
        "retrying": 0,
        "sent": 3,
        "delivered": 4,
        "undelivered": 1,
        "failed": 1,
        "expired": 0,
        "cancelled": 0,
        "opted_out": 0,
        "unrendered": 0,
        "capped": 0,
        "total": 0,
    }
    # The two sent 49 hours ago; the one sent an hour ago may still get its receipt.
    assert (one["sent_without_receipt"], one["receipt_wait_hours"]) == (2, 48)
    routes = {r["route"]: r for r in one["routes"]}
    assert {name: r["sent_without_receipt"] for name, r in routes.items()} == {"bulk": 1, "mts": 1}
    assert routes["mts"]["messages"]["delivered"] == 3 and routes["bulk"]["messages"]["sent"] == 1
    # Each went out through its route: sent, delivered, undelivered alike.
    assert routes["mts"]["segments_sent"] == 6 and routes["bulk"]["segments_sent"] == 2

    overall = (await api.get("/api/v1/stats")).json()
    assert overall["sent_without_receipt"] == 3
    assert overall["totals"]["delivered"] == 4 and overall["totals"]["sent"] == 4
    by_dispatch = {d["dispatch_id"]: d for d in overall["dispatches"]}
    assert by_dispatch[dispatch.id]["sent_without_receipt"] == 2
    assert by_dispatch[other.id]["sent_without_receipt"] == 1
    assert {r["route"]: r["sent_without_receipt"] for r in overall["routes"]} == {
        "bulk": 1,
        "mts": 2,
    }
    # A receipt takes a message out; its status, not the clock, decides.
    async with db.sessions() as session:
        await session.execute(
            sa.update(message_t)
            .where(message_t.c.dispatch_id == other.id)
            .values(status="delivered", receipt_at=NOW)
        )
        await session.commit()
    assert (await api.get("/api/v1/stats")).json()["sent_without_receipt"] == 2

    # The dispatch answers and lists count the receipts' statuses too.
    detail = (await api.get(f"/api/v1/dispatches/{dispatch.id}")).json()
    assert (detail["messages"]["delivered"], detail["messages"]["undelivered"]) == (4, 1)
    listed = (await api.get("/api/v1/dispatches")).json()["items"]
    assert next(d for d in listed if d["id"] == dispatch.id)["messages"]["delivered"] == 4
    # The remote's health counts every message that went out as sent.
    health = (await api.get("/api/v1/stats/remote")).json()
    assert health["sent"] == 9 and health["failed"] == 1


async def test_a_message_shows_its_receipt_time(api: httpx.AsyncClient, db: Database) -> None:
    dispatch, messages = await receipted_dispatch(db)
    url = f"/api/v1/dispatches/{dispatch.id}/messages"
    delivered = (await api.get(url, params={"status": "delivered"})).json()["items"]
    assert len(delivered) == 4
    assert all(
        datetime.fromisoformat(m["receipt_at"]) == NOW - timedelta(hours=1) for m in delivered
    )
    sent = (await api.get(url, params={"status": "sent"})).json()["items"]
    assert [m["receipt_at"] for m in sent] == [None] * 3
    client_id = messages[7].client_id
    mine = (await api.get(f"/api/v1/clients/{client_id}/messages")).json()["items"]
    assert mine[0]["status"] == "undelivered" and mine[0]["receipt_at"] is not None


async def test_the_admin_pages_show_the_delivered_share(api_app: FastAPI, db: Database) -> None:
    dispatch, _ = await receipted_dispatch(db)
    async with signed_in(api_app) as browser:
        page = (await browser.get(f"/admin/dispatches/{dispatch.id}")).text
        # 8 went out (3 sent, 4 delivered, 1 undelivered).
        assert "Delivered 4 of 8 sent (50 %); 1 undelivered." in page
        assert "2 sent more than 48 hours ago with no receipt" in page
        assert '<th scope="col">Receipt</th>' in page
        receipt_time = (NOW - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        assert f'title="{receipt_time} UTC">' in page  # shown in the zone, UTC on hover
        live = (await browser.get(f"/admin/dispatches/{dispatch.id}/live")).text
        assert 'id="no-receipt"' in live

        listed = (await browser.get("/admin/dispatches")).text
        assert "8 sent of 10" in listed
        assert "Delivered 4 of 8 sent (50 %); <strong>2 no receipt</strong>" in listed

        overview = (await browser.get("/admin")).text
        assert "Delivered 4 of 8 sent (50 %)" in overview
        assert "2 sent more than 48 hours ago with no receipt" in overview
        assert '<th scope="col">No receipt</th>' in overview

    empty = await make_dispatch(db)
    async with signed_in(api_app) as browser:
        page = (await browser.get(f"/admin/dispatches/{empty.id}")).text
        assert "Delivered 0 of 0 sent." in page and 'id="no-receipt"' not in page
