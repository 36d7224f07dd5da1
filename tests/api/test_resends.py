"""Resending to the clients a dispatch did not reach: `POST /dispatches/{id}/resend` refuses
what makes no sense, links both dispatches (answers, events, the list filter), and its workflow
lays out exactly the first's clients with those statuses, deleted and opted-out ones left out."""

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.auth import Permission
from core.db import Database
from core.models import Dispatch, Message, client_t, dispatch_t, message_t
from core.settings import Settings
from tests.api.test_admin import signed_in
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch, make_routed_messages
from tests.support import Queues, api_client, auth_headers, running_workers, settings_for

DISPATCHES = "/api/v1/dispatches"
LONG_AGO = datetime.now(UTC) - timedelta(hours=49)  # past RECEIPT_WAIT_HOURS (48)
# The first dispatch's messages, one client each, and whether a resend of the statuses
# below (undelivered, failed, expired, sent) takes the client.
STORY = [
    ("undelivered", True),
    ("failed", True),
    ("expired", True),
    ("sent-long-ago", True),  # no receipt in time
    ("sent", False),  # sent a moment ago: its receipt may still come
    ("delivered", False),
    ("cancelled", False),  # not asked for
    ("opted_out", False),
    ("undelivered-deleted", False),  # the client was deleted since
    ("undelivered-opted-out", False),  # the client went on the stop list since
]
STATUSES = ["undelivered", "failed", "expired", "sent"]
# As answered and recorded: each once, in the order of MessageStatus.
IN_ORDER = ["sent", "undelivered", "failed", "expired"]


def resend_body(**changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "statuses": STATUSES,
        "start_at": now.isoformat(),
        "end_at": (now + timedelta(hours=1)).isoformat(),
    }
    return body | changes


async def first_dispatch(db: Database, **fields: Any) -> tuple[Dispatch, dict[str, int]]:
    """A completed dispatch with the messages of STORY; the client id of each."""
    dispatch = await make_dispatch(db, text="First text", **fields)
    clients = {name: await make_client(db, tag="story") for name, _ in STORY}
    rows = [
        (clients[name], name.split("-")[0], "default" if name.startswith("sent") else None, 1)
        for name, _ in STORY
    ]
    messages = await make_routed_messages(db, dispatch, rows)
    by_name = dict(zip(clients, messages, strict=True))
    async with db.sessions() as session:
        await session.execute(
            sa.update(dispatch_t).where(dispatch_t.c.id == dispatch.id).values(status="completed")
        )
        await session.execute(
            sa.update(message_t)
            .where(message_t.c.id == by_name["sent-long-ago"].id)
            .values(sent_at=LONG_AGO)
        )
        await session.execute(
            sa.update(client_t)
            .where(client_t.c.id == clients["undelivered-opted-out"].id)
            .values(opted_out=True)
        )
        await session.commit()
    return dispatch, {name: client.id for name, client in clients.items() if client.id}


async def delete_client(api: httpx.AsyncClient, client_id: int) -> None:
    assert (await api.delete(f"/api/v1/clients/{client_id}")).status_code == 204


async def test_bad_resends_are_refused(api: httpx.AsyncClient, db: Database) -> None:
    first, _ = await first_dispatch(db)
    url = f"{DISPATCHES}/{first.id}/resend"
    cases = [
        (resend_body(statuses=["opted_out"]), "statuses", "opted_out cannot be resent"),
        (resend_body(statuses=["failed", "delivered"]), "statuses", "delivered cannot be"),
        (resend_body(statuses=["pending"]), "statuses", "pending cannot be resent"),
        (resend_body(statuses=[]), "statuses", ""),
        (resend_body(statuses=["lost"]), "statuses.0", ""),
        (
            resend_body(
                start_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                end_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            ),
            None,
            "end_at is in the past",
        ),
        (resend_body(text=""), "text", ""),
        (resend_body(window={"start": "10:00", "end": "10:00"}), "window", ""),
        ({"statuses": ["failed"]}, "start_at", ""),
    ]
    for body, field, words in cases:
        answer = await api.post(url, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert any(e["field"] == field for e in answer.json()["errors"]), answer.text
        assert words in answer.text
    long_text = resend_body(text="ю" * 1000)  # 15 SMS parts
    assert (await api.post(url, json=long_text)).json()["errors"][0]["field"] == "text"
    assert (await api.post(f"{DISPATCHES}/999999/resend", json=resend_body())).status_code == 404
    # One not started has no message to resend.
    scheduled = await make_dispatch(db)
    refused = await api.post(f"{DISPATCHES}/{scheduled.id}/resend", json=resend_body())
    assert refused.status_code == 409 and "has not started" in refused.text
    assert (await api.get(DISPATCHES, params={"resent_from": first.id})).json()["total"] == 0


async def test_only_dispatches_write_resends(
    api_app: FastAPI, settings: Settings, db: Database
) -> None:
    first, _ = await first_dispatch(db)
    reader = auth_headers(settings, frozenset({Permission.DISPATCHES_READ}))
    async with api_client(api_app, **reader) as api:
        answer = await api.post(f"{DISPATCHES}/{first.id}/resend", json=resend_body())
    assert answer.status_code == 403 and "dispatches:write" in answer.text


async def test_a_resend_is_linked_both_ways(
    api: httpx.AsyncClient, api_app: FastAPI, db: Database
) -> None:
    first, clients = await first_dispatch(db, window=(time(9), time(21)))
    await delete_client(api, clients["undelivered-deleted"])
    answer = await api.post(f"{DISPATCHES}/{first.id}/resend", json=resend_body())
    assert answer.status_code == 201, answer.text
    resend = answer.json()
    assert (resend["resent_from"], resend["resend_statuses"]) == (first.id, IN_ORDER)
    # The clients it would reach now; the first's text, window and filter (for the record).
    assert resend["audience"] == sum(taken for _, taken in STORY)
    assert (resend["text"], resend["window"]) == ("First text", {"start": "09:00", "end": "21:00"})
    assert resend["filter"] == {"operator_codes": [], "tags": [], "all": True}
    assert resend["status"] == "scheduled" and resend["messages"]["total"] == 0

    got = (await api.get(f"{DISPATCHES}/{first.id}")).json()
    assert (got["resent_as"], got["resent_from"]) == ([resend["id"]], None)
    again = (await api.get(f"{DISPATCHES}/{resend['id']}")).json()
    assert (again["resent_from"], again["resent_as"]) == (first.id, [])
    listed = (await api.get(DISPATCHES, params={"resent_from": first.id})).json()
    assert [d["id"] for d in listed["items"]] == [resend["id"]]
    everyone = (await api.get(DISPATCHES)).json()["items"]
    assert next(d for d in everyone if d["id"] == first.id)["resent_as"] == [resend["id"]]

    events = (await api.get(f"{DISPATCHES}/{first.id}/events")).json()["items"]
    assert [(e["action"], e["details"]) for e in events] == [
        ("resent", {"resent_as": resend["id"], "statuses": IN_ORDER})
    ]
    created = (await api.get(f"{DISPATCHES}/{resend['id']}/events")).json()["items"]
    assert [(e["action"], e["details"]) for e in created] == [
        ("created", {"resent_from": first.id, "statuses": IN_ORDER})
    ]
    assert created[0]["actor"] == "tester"
    async with signed_in(api_app) as browser:
        page = (await browser.get(f"/admin/dispatches/{resend['id']}")).text
        assert f'A resend of <a href="/admin/dispatches/{first.id}">#{first.id}</a>' in page
        assert "whose messages were sent, undelivered, failed, expired" in page
        page = (await browser.get(f"/admin/dispatches/{first.id}")).text
        assert f'Resent as <a href="/admin/dispatches/{resend["id"]}">' in page
        listed = (await browser.get("/admin/dispatches")).text
        assert f'(resend of <a href="/admin/dispatches/{first.id}">' in listed

    # Its audience is no filter: an edit of it is refused, of the rest allowed.
    url = f"{DISPATCHES}/{resend['id']}"
    refused = await api.patch(url, json={"filter": {"tags": ["story"]}})
    assert refused.status_code == 409 and "resends dispatch" in refused.text
    edited = await api.patch(url, json={"text": "Second try"})
    assert edited.status_code == 200 and edited.json()["text"] == "Second try"


async def test_text_and_window_given_or_taken(api: httpx.AsyncClient, db: Database) -> None:
    first, _ = await first_dispatch(db, window=(time(9), time(21)))
    url = f"{DISPATCHES}/{first.id}/resend"
    given = await api.post(
        url,
        json=resend_body(
            statuses=["cancelled"], text="Another", window={"start": "10:00", "end": "12:00"}
        ),
    )
    assert given.status_code == 201, given.text
    assert (given.json()["text"], given.json()["window"]) == (
        "Another",
        {"start": "10:00", "end": "12:00"},
    )
    assert given.json()["audience"] == 1
    none = await api.post(url, json=resend_body(window=None, text="“Hi”", normalize_text=True))
    assert none.status_code == 201, none.text
    assert (none.json()["window"], none.json()["text"]) == (None, '"Hi"')
    assert none.json()["normalization"]["changed"] is True
    # The same Idempotency-Key and body: the same resend, not a second one.
    headers = {"Idempotency-Key": "resend-7"}
    body = resend_body(statuses=["failed", "failed"])
    once = await api.post(url, json=body, headers=headers)
    twice = await api.post(url, json=body | {"statuses": ["failed"]}, headers=headers)
    assert once.status_code == twice.status_code == 201
    assert once.json()["id"] == twice.json()["id"]
    assert twice.headers["Idempotent-Replayed"] == "true"
    other = await api.post(url, json=body | {"statuses": ["expired"]}, headers=headers)
    assert other.status_code == 422 and "different request" in other.text
    assert (await api.get(f"{DISPATCHES}/{first.id}")).json()["resent_as"] == [
        given.json()["id"],
        none.json()["id"],
        once.json()["id"],
    ]


async def messages_of(db: Database, dispatch_id: int) -> dict[int | None, str]:
    async with db.sessions() as session:
        rows = await session.execute(
            sa.select(Message.client_id, Message.status).where(Message.dispatch_id == dispatch_id)
        )
        return {client_id: status for client_id, status in rows}


async def test_the_resend_lays_out_exactly_those_clients(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    first, clients = await first_dispatch(db)
    s = settings_for(settings, dev_env.client, queues, audience_page_size=2)
    app = create_app(s)
    async with app.router.lifespan_context(app), api_client(app) as api:
        await delete_client(api, clients["undelivered-deleted"])
        answer = await api.post(f"{DISPATCHES}/{first.id}/resend", json=resend_body())
        assert answer.status_code == 201, answer.text
        resend_id = answer.json()["id"]
        async with running_workers(s, dev_env.client, db):
            async with asyncio.timeout(60):
                while (await api.get(f"{DISPATCHES}/{resend_id}")).json()["status"] != "completed":
                    await asyncio.sleep(0.2)
        again = (await api.get(f"{DISPATCHES}/{resend_id}")).json()
    wanted = {clients[name] for name, taken in STORY if taken}
    assert await messages_of(db, resend_id) == {client_id: "sent" for client_id in wanted}
    assert again["messages"]["sent"] == len(wanted) == 4
    assert simulator.state.stats()["unique_accepted"] == 4
    # The first dispatch is left as it was.
    assert len(await messages_of(db, first.id)) == len(STORY)


async def test_a_per_client_resend_in_pages(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    first, clients = await first_dispatch(db, delivery="per_client")
    s = settings_for(settings, dev_env.client, queues, audience_page_size=2)
    app = create_app(s)
    async with app.router.lifespan_context(app), api_client(app) as api:
        body = resend_body(statuses=["failed", "expired", "cancelled"])
        answer = await api.post(f"{DISPATCHES}/{first.id}/resend", json=body)
        assert answer.status_code == 201 and answer.json()["delivery"] == "per_client"
        resend_id = answer.json()["id"]
        async with running_workers(s, dev_env.client, db):
            async with asyncio.timeout(60):
                while (await api.get(f"{DISPATCHES}/{resend_id}")).json()["status"] != "completed":
                    await asyncio.sleep(0.2)
    wanted = {clients["failed"], clients["expired"], clients["cancelled"]}
    assert await messages_of(db, resend_id) == {client_id: "sent" for client_id in wanted}


async def test_a_resend_whose_first_is_gone_finds_nobody(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    first, _ = await first_dispatch(db)
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with app.router.lifespan_context(app), api_client(app) as api:
        answer = await api.post(f"{DISPATCHES}/{first.id}/resend", json=resend_body())
        resend_id = answer.json()["id"]
        assert (await api.delete(f"{DISPATCHES}/{first.id}")).status_code == 204
        async with running_workers(s, dev_env.client, db):
            async with asyncio.timeout(60):
                while (await api.get(f"{DISPATCHES}/{resend_id}")).json()["status"] != "completed":
                    await asyncio.sleep(0.2)
        again = (await api.get(f"{DISPATCHES}/{resend_id}")).json()
        # The link is kept, for the record; the first's events too.
        assert (again["resent_from"], again["messages"]["total"]) == (first.id, 0)
        events = (await api.get(f"{DISPATCHES}/{first.id}/events")).json()["items"]
        assert [e["action"] for e in events] == ["resent", "deleted"]
    assert simulator.state.stats()["accepted"] == 0
