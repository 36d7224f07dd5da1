"""Delivery receipts through the API against real PostgreSQL: parts in any order, duplicates,
receipts before the send is recorded, a part's first answer never undone, unknown and erased
messages, the permission, and bad input refused whole."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import REGISTRY
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from api.services.receipts import apply_waiting
from core.auth import Permission
from core.db import Database
from core.models import Message, message_receipt_t
from core.settings import Settings
from tests.factories import make_client, make_dispatch, make_routed_messages
from tests.support import Queues, api_client, auth_headers, settings_for

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def app(settings: Settings, dev_env: WorkflowEnvironment, queues: Queues) -> FastAPI:
    return create_app(settings_for(settings, dev_env.client, queues))


@pytest.fixture
async def gateway(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a gateway's callback sees it: a token with receipts:write alone."""
    headers = auth_headers(settings, frozenset({Permission.RECEIPTS_WRITE}), subject="gateway")
    async with app.router.lifespan_context(app), api_client(app, **headers) as client:
        yield client


async def messages_as(db: Database, statuses: list[str]) -> list[Message]:
    dispatch = await make_dispatch(db)
    rows = []
    for status in statuses:
        client = await make_client(db)
        sent = status == "sent"
        rows.append((client, status, "main" if sent else None, 3 if sent else None))
    return await make_routed_messages(db, dispatch, rows)


def receipt(message: Message, status: str = "delivered", **fields: Any) -> dict[str, Any]:
    return {"id": message.id, "status": status, "at": AT.isoformat(), **fields}


async def stored(db: Database, message: Message) -> Message:
    async with db.sessions() as session:
        return (
            await session.execute(sa.select(Message).where(Message.id == message.id))
        ).scalar_one()


async def post(client: httpx.AsyncClient, body: Any, status: int = 200) -> dict[str, Any]:
    answer = await client.post("/api/v1/receipts", json=body)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_every_part_delivered_in_any_order(db: Database, gateway: httpx.AsyncClient) -> None:
    [message] = await messages_as(db, ["sent"])
    parts = [
        receipt(message, part=k, parts=3, at=(AT + timedelta(seconds=k)).isoformat())
        for k in (3, 1)
    ]
    answer = await post(gateway, parts)
    assert (answer["applied"], [r["outcome"] for r in answer["results"]]) == (2, ["applied"] * 2)
    assert (await stored(db, message)).status == "sent"  # two parts of three
    answer = await post(
        gateway, receipt(message, part=2, parts=3, at=(AT + timedelta(seconds=9)).isoformat())
    )
    assert answer["applied"] == 1
    done = await stored(db, message)
    assert (done.status, done.receipt_at) == ("delivered", AT + timedelta(seconds=9))


async def test_one_part_undelivered_makes_the_message_undelivered(
    db: Database, gateway: httpx.AsyncClient
) -> None:
    [message] = await messages_as(db, ["sent"])
    await post(
        gateway, receipt(message, "expired", part=2, parts=2, error="DLR 01 absent subscriber")
    )
    failed = await stored(db, message)
    assert failed.status == "undelivered"
    assert failed.last_error == "expired: DLR 01 absent subscriber"
    # The other part's success comes later: it never undoes the failure (postmangovsg #1150).
    answer = await post(gateway, receipt(message, "delivered", part=1, parts=2))
    assert answer["applied"] == 1
    assert (await stored(db, message)).status == "undelivered"


async def test_duplicates_and_a_part_saying_otherwise(
    db: Database, gateway: httpx.AsyncClient
) -> None:
    [message] = await messages_as(db, ["sent"])
    first = receipt(message, "delivered", part=1, parts=2)
    answer = await post(gateway, [first, first, receipt(message, "rejected", part=1, parts=2)])
    assert [r["outcome"] for r in answer["results"]] == ["applied", "duplicate", "out_of_date"]
    again = await post(gateway, [first, receipt(message, "undelivered", part=1, parts=2)])
    assert [r["outcome"] for r in again["results"]] == ["duplicate", "out_of_date"]
    assert (answer["applied"], answer["duplicate"], answer["out_of_date"]) == (1, 1, 1)
    assert (await stored(db, message)).status == "sent"


async def test_a_receipt_before_the_send_waits_for_it(
    db: Database, gateway: httpx.AsyncClient
) -> None:
    [message] = await messages_as(db, ["pending"])
    answer = await post(gateway, receipt(message))
    assert answer["results"][0]["outcome"] == "waiting"
    assert (await stored(db, message)).status == "pending"
    # The batch records its send; the waiting receipt is applied then (the API's loop).
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message).where(Message.id == message.id).values(status="sent", sent_at=AT)
        )
        await session.commit()
        assert await apply_waiting(session=session) == 1
    assert (await stored(db, message)).status == "delivered"
    async with db.sessions() as session:
        applied = await session.scalar(sa.select(message_receipt_t.c.applied))
    assert applied is True


async def test_unknown_erased_and_not_sent(
    db: Database, gateway: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    sent, expired = await messages_as(db, ["sent", "expired"])
    erased = sent.model_copy()
    headers = auth_headers(settings)
    async with api_client(app, **headers) as admin:
        assert (
            await admin.delete(f"/api/v1/clients/{sent.client_id}?erase=true")
        ).status_code == 204
    answer = await post(
        gateway,
        [
            {"id": 987654321, "status": "delivered", "at": AT.isoformat()},
            receipt(erased),
            receipt(expired),
        ],
    )
    assert [r["outcome"] for r in answer["results"]] == ["unknown", "unknown", "out_of_date"]
    assert (answer["unknown"], answer["out_of_date"]) == (2, 1)
    assert (await stored(db, sent)).status == "sent"
    async with db.sessions() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(message_receipt_t)) == 0


async def test_only_receipts_write_posts_receipts(
    db: Database, app: FastAPI, settings: Settings, gateway: httpx.AsyncClient
) -> None:
    [message] = await messages_as(db, ["sent"])
    # The gateway's token reads nothing and writes nothing else.
    assert (await gateway.get("/api/v1/dispatches")).status_code == 403
    assert (await gateway.post("/api/v1/clients", json={"phone": "79161234567"})).status_code == 403
    others = frozenset(Permission) - {Permission.RECEIPTS_WRITE}
    async with api_client(app, **auth_headers(settings, others)) as other:
        refused = await other.post("/api/v1/receipts", json=receipt(message))
    assert refused.status_code == 403
    assert "receipts:write" in refused.text
    assert (await stored(db, message)).status == "sent"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "delivered", "at": AT.isoformat()}, "receipt.id"),
        ({"id": 1, "status": "lost", "at": AT.isoformat()}, "receipt.status"),
        ({"id": 1, "status": "delivered"}, "receipt.at"),
        ({"id": 1, "status": "delivered", "at": "2026-12-01T09:00:00"}, "receipt.at"),
        ({"id": 1, "status": "delivered", "at": AT.isoformat(), "colour": 1}, "receipt.colour"),
        ({"id": 1, "status": "delivered", "at": AT.isoformat(), "part": 3, "parts": 2}, "receipt"),
        ([{"id": 1, "status": "delivered", "at": AT.isoformat()}] * 1001, "receipts"),
        ([{"id": 1, "status": "delivered", "at": AT.isoformat()}, {"id": 2}], "receipts.1.status"),
        ([], "receipts"),
    ],
    ids=[
        "no-id",
        "unknown-status",
        "no-time",
        "naive-time",
        "unknown-field",
        "part-beyond",
        "too-many",
        "second-bad",
        "empty",
    ],
)
async def test_bad_input_is_refused_whole(
    db: Database, gateway: httpx.AsyncClient, body: Any, field: str
) -> None:
    [message] = await messages_as(db, ["sent"])
    if isinstance(body, list) and body:
        body = [{**item, "id": message.id} if item.get("id") == 1 else item for item in body]
    answer = await post(gateway, body, status=422)
    assert any(error["field"] == field for error in answer["errors"]), answer
    # Nothing of the request applied, not even its good receipts.
    assert (await stored(db, message)).status == "sent"
    async with db.sessions() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(message_receipt_t)) == 0


async def test_receipts_posted_alone_at_once_are_applied_together(
    db: Database, gateway: httpx.AsyncClient
) -> None:
    """Fifty connections posting one receipt each, at once: their receipts share transactions,
    and each request is answered with its own receipt's outcome."""
    messages = await messages_as(db, ["sent"] * 12)
    failing = messages[0]
    bodies = [
        receipt(
            message,
            "rejected" if message is failing and part == 2 else "delivered",
            part=part,
            parts=3,
        )
        for message in messages
        for part in (3, 1, 2)
    ]
    bodies += bodies[:14]  # duplicates, some in the same batch as their first
    batches = REGISTRY.get_sample_value("mailing_receipt_batch_receipts_count") or 0.0
    answers = await asyncio.gather(*(post(gateway, body) for body in bodies))
    for body, answer in zip(bodies, answers, strict=True):
        [result] = answer["results"]
        assert (result["id"], result["part"]) == (body["id"], body["part"])
    outcomes = Counter(answer["results"][0]["outcome"] for answer in answers)
    assert outcomes == {"applied": 36, "duplicate": 14}
    statuses = Counter([(await stored(db, message)).status for message in messages])
    assert statuses == {"delivered": 11, "undelivered": 1}
    assert (await stored(db, failing)).last_error == "rejected"
    transactions = REGISTRY.get_sample_value("mailing_receipt_batch_receipts_count") - batches
    assert transactions < len(bodies)
