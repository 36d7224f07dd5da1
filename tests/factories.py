"""Rows for tests, written through the real models and database."""

import itertools
from datetime import UTC, datetime, time, timedelta

from core.db import Database
from core.models import Client, Dispatch, Message

_phones = itertools.count(9161000000)


def next_phone() -> str:
    return f"7{next(_phones)}"


async def make_client(db: Database, **fields: object) -> Client:
    values: dict[str, object] = {"tag": "", "timezone": "Europe/Moscow", **fields}
    phone = str(values.pop("phone", None) or next_phone())
    client = Client(
        phone=phone, operator_code=str(values.pop("operator_code", phone[1:4])), **values
    )
    async with db.sessions() as session:
        session.add(client)
        await session.commit()
    return client


async def make_dispatch(
    db: Database,
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    window: tuple[time, time] | None = None,
    text: str = "Hello",
    operator_codes: list[str] | None = None,
    tags: list[str] | None = None,
    delivery: str = "cohorts",
) -> Dispatch:
    start_at = start_at or datetime.now(UTC)
    dispatch = Dispatch(
        start_at=start_at,
        end_at=end_at or start_at + timedelta(days=2),
        text=text,
        operator_codes=operator_codes or [],
        tags=tags or [],
        target_all=not operator_codes and not tags,
        window_start=window[0] if window else None,
        window_end=window[1] if window else None,
        delivery=delivery,
    )
    async with db.sessions() as session:
        session.add(dispatch)
        await session.commit()
    return dispatch


async def make_messages(
    db: Database, dispatch: Dispatch, clients: list[Client], *, cohort: str | None
) -> list[Message]:
    """One pending message per client, in the given cohort (None: a delivery's own)."""
    messages = [
        Message(
            dispatch_id=dispatch.id,
            client_id=client.id,
            cohort=cohort,
            sender="delivery" if cohort is None else "cohort",
        )
        for client in clients
    ]
    async with db.sessions() as session:
        session.add_all(messages)
        await session.commit()
    return sorted(messages, key=lambda m: m.id or 0)


async def make_routed_messages(
    db: Database, dispatch: Dispatch, rows: list[tuple[Client, str, str | None, int | None]]
) -> list[Message]:
    """Messages as the send left them: per client its status, route and segments (the triggers
    count them by route)."""
    messages = [
        Message(
            dispatch_id=dispatch.id,
            client_id=client.id,
            phone=client.phone,
            status=status,
            route=route,
            segments=segments,
            attempts=0 if route is None else 1,
            sent_at=datetime.now(UTC) if status == "sent" else None,
        )
        for client, status, route, segments in rows
    ]
    async with db.sessions() as session:
        session.add_all(messages)
        await session.commit()
    return sorted(messages, key=lambda m: m.id or 0)
