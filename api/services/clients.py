"""The client directory: create, change (its messages not yet sent follow; its attributes merged
in SQL), opt out, delete or erase, list (by its fields and its attributes). A client's messages
are read in `messages`."""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from temporalio.client import Client as TemporalClient

from api.paging import Paging
from api.schemas.clients import ATTRIBUTES_MAX, ClientCreate, ClientUpdate
from api.services import common as common_service
from core.contracts.cohort import COHORT_ALL
from core.contracts.dispatch import CLIENT_MOVED
from core.contracts.shared import delivery_workflow_id, dispatch_workflow_id
from core.errors import Conflict, InvalidRequest, NotFoundByPhone
from core.logging import ids
from core.models import (
    OPEN_MESSAGE_STATUSES,
    Client,
    DispatchStatus,
    Message,
    MessageSender,
    MessageStatus,
    client_t,
    dispatch_t,
    message_t,
    test_message_t,
    utcnow,
)
from core.phones import default_timezone, operator_code
from core.settings import Settings

log = logging.getLogger(__name__)


async def _commit_unique_phone(session: AsyncSession, phone: str) -> None:
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"a client with phone {phone} already exists") from None


def new_client_values(data: ClientCreate, settings: Settings) -> dict[str, Any]:
    """The stored fields of a new client: what was given, the operator code and the zone
    derived from the phone when not. One place for a single create and a bulk import."""
    phone = str(data.phone)
    return {
        "phone": phone,
        "operator_code": data.operator_code or operator_code(phone),
        "tag": data.tag,
        "timezone": data.timezone or default_timezone(phone, fallback=settings.default_timezone),
        "opted_out": data.opted_out,
        "attributes": dict(data.attributes),
    }


async def create_client(*, session: AsyncSession, data: ClientCreate, settings: Settings) -> Client:
    values = new_client_values(data, settings)
    phone = values["phone"]
    client = Client(**values, opted_out_at=utcnow() if data.opted_out else None)
    session.add(client)
    await _commit_unique_phone(session, phone)
    log.info("client created", extra=ids(client_id=client.id))
    return client


async def update_client(
    *, session: AsyncSession, temporal: TemporalClient, client_id: int, data: ClientUpdate
) -> Client:
    """Changes the client, its attributes key by key (`change_attributes`); its messages not
    yet sent follow: a new phone is where they go, and a new zone reaches a message already
    waiting for its window (see `follow_move`)."""
    client = await common_service.get_client(session=session, client_id=client_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True, exclude={"attributes"})
    if "phone" in changes and "operator_code" not in changes:
        changes["operator_code"] = operator_code(changes["phone"])
    moved = "timezone" in changes and changes["timezone"] != client.timezone
    if changes.get("opted_out") is not None and changes["opted_out"] != client.opted_out:
        changes["opted_out_at"] = utcnow() if changes["opted_out"] else None
    for field, value in changes.items():
        setattr(client, field, value)
    open_messages = (
        col(Message.client_id) == client_id,
        col(Message.status).in_(OPEN_MESSAGE_STATUSES),
    )
    if "phone" in changes:
        await session.execute(sa.update(Message).where(*open_messages).values(phone=client.phone))
    if data.attributes:
        await change_attributes(session=session, client=client, change=data.attributes)
        changes["attributes"] = True  # named in the log, never its values
    to_wake: list[tuple[str, int]] = []
    if moved:
        to_wake = await follow_move(session, client_id)
    await _commit_unique_phone(session, client.phone)
    log.info("client updated: %s", sorted(changes), extra=ids(client_id=client_id))
    await wake_after_move(temporal, client_id, to_wake)
    return client


async def change_attributes(
    *, session: AsyncSession, client: Client, change: Mapping[str, str | None]
) -> None:
    """Sets the keys given with a value and removes those given as None, in one statement on
    the stored object (a concurrent change of other keys is kept); InvalidRequest on
    `attributes`, the transaction rolled back, when the client would then hold more than
    ATTRIBUTES_MAX."""
    given = {key: value for key, value in change.items() if value is not None}
    removed = [key for key, value in change.items() if value is None]
    merged = client_t.c.attributes.op("||", return_type=postgresql.JSONB)(
        sa.bindparam("given", given, type_=postgresql.JSONB)
    ).op("-", return_type=postgresql.JSONB)(
        sa.bindparam("removed", removed, type_=postgresql.ARRAY(sa.Text))
    )
    stored = (
        await session.execute(
            sa.update(client_t)
            .where(client_t.c.id == client.id)
            .values(attributes=merged)
            .returning(client_t.c.attributes, client_t.c.updated_at)
        )
    ).one()
    if len(stored.attributes) > ATTRIBUTES_MAX:
        await session.rollback()
        raise InvalidRequest(
            f"a client holds at most {ATTRIBUTES_MAX} attributes; this change would leave "
            f"it {len(stored.attributes)}",
            field="attributes",
        )
    # The row as stored, without marking the object changed (its flush would write it again).
    set_committed_value(client, "attributes", stored.attributes)
    set_committed_value(client, "updated_at", stored.updated_at)


async def wake_after_move(
    temporal: TemporalClient, client_id: int, to_wake: list[tuple[str, int]]
) -> None:
    """Wakes, after the commit, the workflows `follow_move` named."""
    for kind, dispatch_id in to_wake:
        workflow_id = (
            dispatch_workflow_id(dispatch_id)
            if kind == "dispatch"
            else delivery_workflow_id(dispatch_id, client_id)
        )
        await common_service.signal_changed(temporal, workflow_id, CLIENT_MOVED, dispatch_id)


async def follow_move(session: AsyncSession, client_id: int) -> list[tuple[str, int]]:
    """A client moved zone: each of its messages a zone cohort still holds becomes a hand-off
    the cohort owes (its dispatch workflow wakes the cohorts; the next batch starts a delivery
    that waits for the new zone's window); a delivery of its own is woken to judge the message
    with the new zone. Says which workflows to wake, after the commit."""
    owed = await session.execute(
        sa.update(message_t)
        .where(
            message_t.c.client_id == client_id,
            message_t.c.status == MessageStatus.PENDING,
            message_t.c.sender == MessageSender.COHORT,
            message_t.c.cohort != COHORT_ALL,
            message_t.c.dispatch_id.in_(
                sa.select(dispatch_t.c.id).where(
                    dispatch_t.c.status.in_([DispatchStatus.RUNNING, DispatchStatus.PAUSED])
                )
            ),
        )
        .values(sender=MessageSender.OWED)
        .returning(message_t.c.dispatch_id)
    )
    waking = [("dispatch", dispatch_id) for dispatch_id in owed.scalars()]
    deliveries = await session.execute(
        sa.select(message_t.c.dispatch_id).where(
            message_t.c.client_id == client_id,
            message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
            message_t.c.sender == MessageSender.DELIVERY,
        )
    )
    return waking + [("delivery", dispatch_id) for dispatch_id in deliveries.scalars()]


async def opt_out(*, session: AsyncSession, phone: str) -> Client:
    """Puts the client with this number on the stop list (again: nothing changes). Its
    messages not yet sent end `opted_out` when a send comes to them."""
    client = (
        await session.execute(select(Client).where(col(Client.phone) == phone))
    ).scalar_one_or_none()
    if client is None:
        raise NotFoundByPhone(f"no client with phone {phone}")
    if not client.opted_out:
        client.opted_out = True
        client.opted_out_at = utcnow()
        await session.commit()
        log.info("client opted out", extra=ids(client_id=client.id))
    return client


async def delete_client(
    *, session: AsyncSession, temporal: TemporalClient, client_id: int, erase: bool = False
) -> None:
    """Deletes the client, its attributes with it; its messages not yet sent end cancelled at
    once (not when their window would have opened), each keeping the phone it was for (unless
    `erase`: then no message keeps it, nor a text rendered with the client's values, and its
    test sends go), and the delivery workflows waiting to send them are woken to end."""
    client = await common_service.get_client(session=session, client_id=client_id)
    if erase:
        # Personal data goes; the messages stay, counted, with no number, no client and no
        # personal text (it held the client's attributes; NULL reads as the dispatch's text).
        await session.execute(
            sa.update(message_t)
            .where(message_t.c.client_id == client_id)
            .values(phone=None, text=None)
        )
        # A test send rendered for the client is counted nowhere: nothing of it is kept.
        await session.execute(
            sa.delete(test_message_t).where(test_message_t.c.client_id == client_id)
        )
    cancelled = (
        await session.execute(
            sa.update(message_t)
            .where(
                message_t.c.client_id == client_id,
                message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
            )
            .values(status=MessageStatus.CANCELLED, last_error="client deleted")
            .returning(message_t.c.dispatch_id, message_t.c.sender)
        )
    ).all()
    await session.delete(client)
    await session.commit()
    log.info(
        "client %s; %d open messages cancelled",
        "erased" if erase else "deleted",
        len(cancelled),
        extra=ids(client_id=client_id),
    )
    for row in cancelled:
        if row.sender == MessageSender.DELIVERY:
            await common_service.signal_changed(
                temporal,
                delivery_workflow_id(row.dispatch_id, client_id),
                "client deleted",
                row.dispatch_id,
            )


async def list_clients(
    *,
    session: AsyncSession,
    tags: list[str],
    operator_codes: list[str],
    timezones: list[str],
    phone_prefix: str | None,
    opted_out: bool | None,
    paging: Paging,
    attributes: Sequence[tuple[str, str]] = (),
) -> tuple[list[Client], int | None, str | None]:
    """One page of the clients matching every filter given (a list: any of its values; each
    attribute `(key, value)`: all of them), by id, with the count on the same conditions."""
    conditions: list[Any] = []
    if tags:
        conditions.append(col(Client.tag).in_(tags))
    if operator_codes:
        conditions.append(col(Client.operator_code).in_(operator_codes))
    if timezones:
        conditions.append(col(Client.timezone).in_(timezones))
    if phone_prefix:
        conditions.append(col(Client.phone).startswith(phone_prefix, autoescape=True))
    if opted_out is not None:
        conditions.append(col(Client.opted_out) == opted_out)
    if attributes:
        conditions.append(attributes_match(attributes))
    return await common_service.fetch_page(
        session=session, model=Client, conditions=conditions, paging=paging
    )


def attributes_match(pairs: Sequence[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """Clients holding every (key, value): one containment, which the GIN index on attributes
    serves; a key asked with two values matches nobody."""
    wanted: dict[str, str] = {}
    for key, value in pairs:
        if wanted.setdefault(key, value) != value:
            return sa.false()
    return client_t.c.attributes.contains(wanted)
