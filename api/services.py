"""Service functions behind the routes: they speak the domain and raise domain errors."""

import hashlib
import logging
from datetime import timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from temporalio.client import Client as TemporalClient
from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.paging import Paging
from api.schemas import (
    ClientCreate,
    ClientUpdate,
    DispatchCreate,
    DispatchEventPublic,
    DispatchFilter,
    DispatchPublic,
    DispatchStats,
    DispatchUpdate,
    MessagePublic,
    OverallStats,
    Page,
    StatusCounts,
    WindowSchema,
)
from core.contracts.control import CONTROL_UPDATE, DISPATCH_NOT_FOUND, ControlResult, ControlUpdate
from core.contracts.dispatch import CLIENT_MOVED, DispatchInput
from core.contracts.shared import (
    DISPATCH_CHANGED,
    DispatchChanged,
    SendOptions,
    Window,
    delivery_workflow_id,
    dispatch_workflow_id,
)
from core.control import Command, apply_command
from core.errors import Conflict, EngineUnavailable, InvalidRequest, NotFound, NotFoundByPhone
from core.events import Action, Actor, record_event
from core.logging import ids
from core.models import (
    OPEN_MESSAGE_STATUSES,
    UNFINISHED_DISPATCH_STATUSES,
    Client,
    Dispatch,
    DispatchEvent,
    DispatchStatus,
    IdempotencyKey,
    Message,
    MessageSender,
    MessageStatus,
    client_t,
    dispatch_t,
    message_t,
    utcnow,
)
from core.phones import default_timezone, operator_code
from core.search import of_dispatch
from core.settings import Settings
from core.stats import counts_by_dispatch, total_counts
from core.windows import next_send_instant, stored_window
from workflows.dispatch import DispatchWorkflow

log = logging.getLogger(__name__)

M = TypeVar("M", Client, Dispatch, Message, DispatchEvent)

# What a running or paused dispatch lets an edit change: the workflows already running read
# them again. The filter and start_at shaped the audience and its layout, and stay.
EDITABLE_WHILE_RUNNING = frozenset({"end_at", "text", "window"})


async def fetch_page(
    *, session: AsyncSession, model: type[M], conditions: list[Any], paging: Paging
) -> tuple[list[M], int | None, str | None]:
    """One page of the rows of `model` matching all conditions, by id; how many match in all
    (when the paging asks for it); the cursor of the next page."""
    total = await paging.total(session, model, conditions)
    query = paging.select(select(model).where(*conditions), col(model.id))
    rows, next_cursor = paging.cut(list((await session.execute(query)).scalars().all()), _id)
    return rows, total, next_cursor


def _id(row: Any) -> int:
    return int(row.id)


# Clients


async def get_client(*, session: AsyncSession, client_id: int) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise NotFound("client", client_id)
    return client


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
    """Changes the client; its messages not yet sent follow: a new phone is where they go, and
    a new zone reaches a message already waiting for its window (see `follow_move`)."""
    client = await get_client(session=session, client_id=client_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
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
    to_wake: list[tuple[str, int]] = []
    if moved:
        to_wake = await follow_move(session, client_id)
    await _commit_unique_phone(session, client.phone)
    log.info("client updated: %s", sorted(changes), extra=ids(client_id=client_id))
    await wake_after_move(temporal, client_id, to_wake)
    return client


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
        await _signal_changed(temporal, workflow_id, CLIENT_MOVED, dispatch_id)


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
            message_t.c.cohort != "all",
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


async def _signal_changed(
    temporal: TemporalClient, workflow_id: str, reason: str, dispatch_id: int
) -> None:
    try:
        await temporal.get_workflow_handle(workflow_id).signal(
            DISPATCH_CHANGED, DispatchChanged(reason=reason)
        )
    except RPCError as error:
        # A finished workflow needs no wake-up; one asleep finds the change when it wakes.
        log.info("%s not signalled: %s", workflow_id, error, extra=ids(dispatch_id=dispatch_id))


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
    """Deletes the client; its messages not yet sent end cancelled at once (not when their
    window would have opened), each keeping the phone it was for (unless `erase`: then no
    message keeps it), and the delivery workflows waiting to send them are woken to end."""
    client = await get_client(session=session, client_id=client_id)
    if erase:
        # Personal data goes; the messages stay, counted, with no number and no client.
        await session.execute(
            sa.update(message_t).where(message_t.c.client_id == client_id).values(phone=None)
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
            await _signal_changed(
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
) -> tuple[list[Client], int | None, str | None]:
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
    return await fetch_page(session=session, model=Client, conditions=conditions, paging=paging)


# Dispatches


def dispatch_public(dispatch: Dispatch, counts: dict[str, int]) -> DispatchPublic:
    stored = Window.of(stored_window(dispatch.window_start, dispatch.window_end))
    window = None if stored is None else WindowSchema(start=stored.start, end=stored.end)
    assert dispatch.id is not None
    return DispatchPublic(
        id=dispatch.id,
        start_at=dispatch.start_at,
        end_at=dispatch.end_at,
        text=dispatch.text,
        filter=DispatchFilter(
            operator_codes=dispatch.operator_codes, tags=dispatch.tags, all=dispatch.target_all
        ),
        window=window,
        delivery=dispatch.delivery,
        status=dispatch.status,
        status_reason=dispatch.status_reason,
        created_at=dispatch.created_at,
        updated_at=dispatch.updated_at,
        messages=StatusCounts.of(counts),
    )


async def get_dispatch(*, session: AsyncSession, dispatch_id: int) -> Dispatch:
    dispatch = await session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise NotFound("dispatch", dispatch_id)
    return dispatch


async def dispatch_with_counts(*, session: AsyncSession, dispatch: Dispatch) -> DispatchPublic:
    assert dispatch.id is not None
    counts = await counts_by_dispatch(session=session, dispatch_ids=[dispatch.id])
    return dispatch_public(dispatch, counts[dispatch.id])


def _apply_filter_and_window(
    dispatch: Dispatch, dispatch_filter: DispatchFilter | None, window: WindowSchema | None
) -> None:
    if dispatch_filter is not None:
        dispatch.operator_codes = list(dispatch_filter.operator_codes)
        dispatch.tags = list(dispatch_filter.tags)
        dispatch.target_all = dispatch_filter.all
    if window is not None:
        dispatch.window_start, dispatch.window_end = window.times()


async def _created_before(*, session: AsyncSession, key: str, request_hash: str) -> Dispatch | None:
    """The dispatch an earlier create (or control command) with this Idempotency-Key acted on,
    if any; the same key with another request is refused."""
    earlier = await session.get(IdempotencyKey, key)
    if earlier is None:
        return None
    if earlier.request_hash != request_hash:
        raise InvalidRequest(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    return await get_dispatch(session=session, dispatch_id=earlier.dispatch_id)


async def create_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    data: DispatchCreate,
    idempotency_key: str | None = None,
    actor: str = Actor.API,
) -> tuple[Dispatch, bool]:
    """Stores the dispatch, then starts its workflow; without Temporal nothing is kept. With an
    Idempotency-Key already used for the same body, the dispatch it made comes back instead
    (the bool says so)."""
    request_hash = hashlib.sha256(data.model_dump_json().encode()).hexdigest()
    if idempotency_key is not None:
        earlier = await _created_before(
            session=session, key=idempotency_key, request_hash=request_hash
        )
        if earlier is not None:
            return earlier, True
    dispatch = Dispatch(
        start_at=data.start_at, end_at=data.end_at, text=data.text, delivery=data.delivery
    )
    _apply_filter_and_window(dispatch, data.filter, data.window)
    session.add(dispatch)
    await session.flush()
    assert dispatch.id is not None
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(key=idempotency_key, request_hash=request_hash, dispatch_id=dispatch.id)
        )
    await record_event(session, dispatch_id=dispatch.id, action=Action.CREATED, actor=actor)
    try:
        await session.commit()
    except IntegrityError:
        # The same key, committed by a concurrent request a moment ago: its dispatch wins.
        await session.rollback()
        assert idempotency_key is not None
        earlier = await _created_before(
            session=session, key=idempotency_key, request_hash=request_hash
        )
        if earlier is None:
            raise
        return earlier, True
    try:
        await temporal.start_workflow(
            DispatchWorkflow.run,
            DispatchInput(dispatch_id=dispatch.id, send=SendOptions.from_settings(settings)),
            id=dispatch_workflow_id(dispatch.id),
            task_queue=settings.temporal_task_queue,
            search_attributes=of_dispatch(dispatch.id),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RPCError as error:
        log.error("workflow did not start: %s", error, extra=ids(dispatch_id=dispatch.id))
        # Its idempotency key goes with it (cascade): a retry with the key creates anew.
        await session.delete(dispatch)
        await session.commit()
        raise EngineUnavailable("the workflow service is unavailable; try again") from error
    log.info("dispatch created", extra=ids(dispatch_id=dispatch.id))
    return dispatch, False


async def update_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    dispatch_id: int,
    data: DispatchUpdate,
    actor: str = Actor.API,
) -> Dispatch:
    """Before the start any field; running or paused, EDITABLE_WHILE_RUNNING, which the
    workflows read again when signalled (cohorts, deliveries) or at their next send (batches
    and attempts read the row); after the end, a Conflict."""
    # The row lock orders this edit against the workflow moving the dispatch to running.
    dispatch = await session.get(Dispatch, dispatch_id, with_for_update=True)
    if dispatch is None:
        raise NotFound("dispatch", dispatch_id)
    changes = data.model_dump(exclude_unset=True)
    current = dispatch.status
    if current not in UNFINISHED_DISPATCH_STATUSES:
        await session.rollback()
        raise Conflict(f"dispatch {dispatch_id} is {current}: it can no longer be edited")
    if current != DispatchStatus.SCHEDULED and (
        frozen := sorted(set(changes) - EDITABLE_WHILE_RUNNING)
    ):
        await session.rollback()
        raise Conflict(
            f"dispatch {dispatch_id} is {current}: only end_at, text and window can change "
            f"now, not {', '.join(frozen)}"
        )
    start_at = data.start_at or dispatch.start_at
    end_at = data.end_at or dispatch.end_at
    if end_at <= start_at:
        await session.rollback()
        raise InvalidRequest("end_at must be after start_at")
    dispatch.start_at, dispatch.end_at = start_at, end_at
    if data.text is not None:
        dispatch.text = data.text
    _apply_filter_and_window(dispatch, data.filter, data.window)
    if "window" in changes and data.window is None:
        dispatch.window_start = dispatch.window_end = None
    await record_event(
        session,
        dispatch_id=dispatch_id,
        action=Action.EDITED,
        actor=actor,
        details={"fields": sorted(changes)},
    )
    await session.commit()
    log.info("dispatch updated: %s", sorted(changes), extra=ids(dispatch_id=dispatch_id))
    # The dispatch workflow wakes its cohorts and deliveries; if the signal is lost, they read
    # the row at their next timer or send.
    await _signal_changed(temporal, dispatch_workflow_id(dispatch_id), "edited", dispatch_id)
    return dispatch


async def control_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    dispatch_id: int,
    command: Command,
    reason: str | None,
    update_wait: timedelta,
    actor: str = Actor.API,
    idempotency_key: str | None = None,
) -> tuple[Dispatch, bool]:
    """Pauses, resumes or cancels the dispatch through its workflow's `control` update, which
    answers once the row has changed (every batch and attempt reads it before a request) and
    the sleeping cohorts are woken. A workflow that has ended (or never started) cannot take
    it, nor one that no worker runs within `update_wait`: the row is changed here (which also
    answers a repeat or refuses with the reason), and a running workflow is signalled to
    catch up. A repeat changes nothing; a command the status refuses is a Conflict. With an
    Idempotency-Key already used for the same command, nothing is applied again (the bool
    says so): a retried pause cannot undo a resume that came in between."""
    request_hash = hashlib.sha256(f"{command}\n{dispatch_id}\n{reason}".encode()).hexdigest()
    if idempotency_key is not None:
        earlier = await _created_before(
            session=session, key=idempotency_key, request_hash=request_hash
        )
        if earlier is not None:
            return earlier, True
    await get_dispatch(session=session, dispatch_id=dispatch_id)
    await session.rollback()
    handle: WorkflowHandle[Any, Any] = temporal.get_workflow_handle(
        dispatch_workflow_id(dispatch_id)
    )
    try:
        result = await handle.execute_update(
            CONTROL_UPDATE,
            ControlUpdate(command=command, reason=reason, actor=actor),
            result_type=ControlResult,
            rpc_timeout=update_wait,
        )
        changed = result.changed
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(error)
        if isinstance(cause, ApplicationError) and cause.type == DISPATCH_NOT_FOUND:
            raise NotFound("dispatch", dispatch_id) from None
        raise Conflict(message) from None
    except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as error:
        # No worker took it in time, or the workflow has ended (or never started): the row
        # changes here, which every batch and attempt reads, and a workflow still running is
        # signalled to wake its cohorts (an update delivered later is a harmless repeat).
        if isinstance(error, RPCError) and error.status != RPCStatusCode.NOT_FOUND:
            log.error("%s not delivered: %s", command, error, extra=ids(dispatch_id=dispatch_id))
            raise EngineUnavailable("the workflow service is unavailable; try again") from error
        log.warning("%s applied by the API: %s", command, error, extra=ids(dispatch_id=dispatch_id))
        applied = await apply_command(
            session=session, dispatch_id=dispatch_id, command=command, actor=actor, reason=reason
        )
        changed = applied.changed
        if changed:
            await _signal_changed(temporal, dispatch_workflow_id(dispatch_id), command, dispatch_id)
    log.info(
        "dispatch %s (%s)%s",
        command,
        reason or "no reason given",
        "" if changed else ", unchanged",
        extra=ids(dispatch_id=dispatch_id),
    )
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(key=idempotency_key, request_hash=request_hash, dispatch_id=dispatch_id)
        )
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()  # the same key, kept by a concurrent retry
    session.expire_all()
    return await get_dispatch(session=session, dispatch_id=dispatch_id), False


async def delete_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    dispatch_id: int,
    update_wait: timedelta,
    actor: str = Actor.API,
) -> None:
    """Deletes the dispatch with its messages. One that has not finished is cancelled first
    (its workflow ends every unsent message and wakes its cohorts and deliveries, which end),
    then the rows go, and its workflow is asked to cancel: no workflow keeps running for a
    deleted dispatch. Its events stay, with the deletion."""
    dispatch = await get_dispatch(session=session, dispatch_id=dispatch_id)
    if dispatch.status in UNFINISHED_DISPATCH_STATUSES:
        await session.rollback()
        dispatch, _ = await control_dispatch(
            session=session,
            temporal=temporal,
            dispatch_id=dispatch_id,
            command=Command.CANCEL,
            reason="deleted",
            update_wait=update_wait,
            actor=actor,
        )
    await record_event(session, dispatch_id=dispatch_id, action=Action.DELETED, actor=actor)
    await session.delete(dispatch)
    await session.commit()
    log.info("dispatch deleted", extra=ids(dispatch_id=dispatch_id))
    handle: WorkflowHandle[Any, Any] = temporal.get_workflow_handle(
        dispatch_workflow_id(dispatch_id)
    )
    try:
        await handle.cancel()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            log.warning(
                "workflow not cancelled: %s; it ends when it next finds the rows gone",
                error,
                extra=ids(dispatch_id=dispatch_id),
            )


async def list_events(
    *, session: AsyncSession, dispatch_id: int, paging: Paging
) -> Page[DispatchEventPublic]:
    """A dispatch's control actions, oldest first; kept after its deletion."""
    conditions = [col(DispatchEvent.dispatch_id) == dispatch_id]
    rows, total, next_cursor = await fetch_page(
        session=session, model=DispatchEvent, conditions=conditions, paging=paging
    )
    if not rows and paging.after_id is None and paging.offset == 0:
        await get_dispatch(session=session, dispatch_id=dispatch_id)
    return Page(
        items=[DispatchEventPublic.model_validate(row) for row in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )


async def list_dispatches(
    *, session: AsyncSession, status: DispatchStatus | None, paging: Paging
) -> Page[DispatchPublic]:
    conditions: list[Any] = [] if status is None else [col(Dispatch.status) == status]
    rows, total, next_cursor = await fetch_page(
        session=session, model=Dispatch, conditions=conditions, paging=paging
    )
    counts = await counts_by_dispatch(session=session, dispatch_ids=[d.id for d in rows if d.id])
    return Page(
        items=[dispatch_public(d, counts[d.id]) for d in rows if d.id is not None],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )


async def list_messages(
    *,
    session: AsyncSession,
    dispatch_id: int,
    status: MessageStatus | None,
    paging: Paging,
) -> Page[MessagePublic]:
    await get_dispatch(session=session, dispatch_id=dispatch_id)
    conditions: list[Any] = [message_t.c.dispatch_id == dispatch_id]
    if status is not None:
        conditions.append(message_t.c.status == status)
    return await _message_page(session, conditions, paging)


async def list_client_messages(
    *,
    session: AsyncSession,
    client_id: int,
    status: MessageStatus | None,
    paging: Paging,
) -> Page[MessagePublic]:
    """One client's messages across every dispatch, by id."""
    await get_client(session=session, client_id=client_id)
    conditions: list[Any] = [message_t.c.client_id == client_id]
    if status is not None:
        conditions.append(message_t.c.status == status)
    return await _message_page(session, conditions, paging)


async def _message_page(
    session: AsyncSession, conditions: list[Any], paging: Paging
) -> Page[MessagePublic]:
    """Messages by id with their client's zone and, for one waiting for its window, when the
    window next opens."""
    total = await paging.total(session, message_t, conditions)
    query = paging.select(
        sa.select(
            message_t,
            client_t.c.timezone,
            dispatch_t.c.start_at,
            dispatch_t.c.end_at,
            dispatch_t.c.window_start,
            dispatch_t.c.window_end,
        )
        .select_from(message_t)
        .join(dispatch_t, dispatch_t.c.id == message_t.c.dispatch_id)
        .outerjoin(client_t, client_t.c.id == message_t.c.client_id)
        .where(*conditions),
        message_t.c.id,
    )
    rows, next_cursor = paging.cut(list(await session.execute(query)), _id)
    now = utcnow()
    items = []
    for row in rows:
        item = MessagePublic.model_validate(row)
        if row.status == MessageStatus.PENDING and row.timezone is not None:
            opens = next_send_instant(
                now=now,
                start_at=row.start_at,
                end_at=row.end_at,
                window=stored_window(row.window_start, row.window_end),
                timezone=row.timezone,
            )
            if opens is not None and opens > now:
                item.waiting_until = opens
        items.append(item)
    return Page(
        items=items,
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )


# Statistics


async def dispatch_stats(*, session: AsyncSession, dispatch_id: int) -> DispatchStats:
    """One dispatch's messages counted by status."""
    dispatch = await get_dispatch(session=session, dispatch_id=dispatch_id)
    counts = await counts_by_dispatch(session=session, dispatch_ids=[dispatch_id])
    return DispatchStats(
        dispatch_id=dispatch_id,
        status=dispatch.status,
        messages=StatusCounts.of(counts[dispatch_id]),
    )


async def overall_stats(*, session: AsyncSession, paging: Paging) -> OverallStats:
    """A page of dispatches by id with their counts, and totals over every message."""
    query = paging.select(sa.select(dispatch_t.c.id, dispatch_t.c.status), dispatch_t.c.id)
    dispatches, next_cursor = paging.cut(list(await session.execute(query)), _id)
    counts = await counts_by_dispatch(session=session, dispatch_ids=[d.id for d in dispatches])
    dispatch_count = (
        await session.execute(sa.select(sa.func.count()).select_from(Dispatch))
    ).scalar_one()
    return OverallStats(
        dispatches=[
            DispatchStats(dispatch_id=d.id, status=d.status, messages=StatusCounts.of(counts[d.id]))
            for d in dispatches
        ],
        totals=StatusCounts.of(await total_counts(session=session)),
        dispatch_count=dispatch_count,
        next_cursor=next_cursor,
    )
