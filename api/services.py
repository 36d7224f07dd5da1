"""Service functions behind the routes: they speak the domain and raise domain errors."""

import hashlib
import logging
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import (
    ClientCreate,
    ClientUpdate,
    DispatchCreate,
    DispatchFilter,
    DispatchPublic,
    DispatchStats,
    DispatchUpdate,
    OverallStats,
    StatusCounts,
    WindowSchema,
)
from core.contracts import (
    DispatchChanged,
    DispatchInput,
    SendOptions,
    Window,
    dispatch_workflow_id,
)
from core.control import Command, apply_command
from core.errors import Conflict, EngineUnavailable, InvalidRequest, NotFound
from core.logging import ids
from core.models import (
    OPEN_MESSAGE_STATUSES,
    Client,
    Dispatch,
    DispatchStatus,
    IdempotencyKey,
    Message,
    MessageStatus,
)
from core.phones import default_timezone, operator_code
from core.settings import Settings
from core.stats import counts_by_dispatch, total_counts
from core.windows import stored_window
from workflows.dispatch import DispatchWorkflow

log = logging.getLogger(__name__)

M = TypeVar("M", Client, Dispatch, Message)


async def fetch_page(
    *, session: AsyncSession, model: type[M], conditions: list[Any], limit: int, offset: int
) -> tuple[list[M], int]:
    """Rows of `model` matching all conditions, by id, and how many match in all."""
    total = (
        await session.execute(sa.select(sa.func.count()).select_from(model).where(*conditions))
    ).scalar_one()
    rows = await session.execute(
        select(model).where(*conditions).order_by(col(model.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars().all()), total


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


async def create_client(*, session: AsyncSession, data: ClientCreate, settings: Settings) -> Client:
    phone = str(data.phone)
    client = Client(
        phone=phone,
        operator_code=data.operator_code or operator_code(phone),
        tag=data.tag,
        timezone=data.timezone or default_timezone(phone, fallback=settings.default_timezone),
    )
    session.add(client)
    await _commit_unique_phone(session, phone)
    log.info("client created", extra=ids(client_id=client.id))
    return client


async def update_client(*, session: AsyncSession, client_id: int, data: ClientUpdate) -> Client:
    client = await get_client(session=session, client_id=client_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "phone" in changes and "operator_code" not in changes:
        changes["operator_code"] = operator_code(changes["phone"])
    for field, value in changes.items():
        setattr(client, field, value)
    await _commit_unique_phone(session, client.phone)
    log.info("client updated: %s", sorted(changes), extra=ids(client_id=client_id))
    return client


async def delete_client(*, session: AsyncSession, client_id: int) -> None:
    """Deletes the client; its messages not yet sent end cancelled at once (not when their
    window would have opened), and every message keeps its history."""
    client = await get_client(session=session, client_id=client_id)
    cancelled = await session.execute(
        sa.update(Message)
        .where(col(Message.client_id) == client_id, col(Message.status).in_(OPEN_MESSAGE_STATUSES))
        .values(status=MessageStatus.CANCELLED, last_error="client deleted")
    )
    await session.delete(client)
    await session.commit()
    log.info(
        "client deleted; %d open messages cancelled",
        cancelled.rowcount,  # type: ignore[attr-defined]
        extra=ids(client_id=client_id),
    )


async def list_clients(
    *, session: AsyncSession, tag: str | None, operator_code: str | None, limit: int, offset: int
) -> tuple[list[Client], int]:
    conditions: list[Any] = []
    if tag is not None:
        conditions.append(col(Client.tag) == tag)
    if operator_code is not None:
        conditions.append(col(Client.operator_code) == operator_code)
    return await fetch_page(
        session=session, model=Client, conditions=conditions, limit=limit, offset=offset
    )


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
    """The dispatch an earlier create with this Idempotency-Key made, if any; the same key
    with another body is refused."""
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
    *, session: AsyncSession, temporal: TemporalClient, dispatch_id: int, data: DispatchUpdate
) -> Dispatch:
    # The row lock orders this edit against the workflow moving the dispatch to running.
    dispatch = await session.get(Dispatch, dispatch_id, with_for_update=True)
    if dispatch is None:
        raise NotFound("dispatch", dispatch_id)
    if (current := dispatch.status) != DispatchStatus.SCHEDULED:
        await session.rollback()
        raise Conflict(f"dispatch {dispatch_id} is {current}; only a scheduled one can be edited")
    changes = data.model_dump(exclude_unset=True)
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
    await session.commit()
    log.info("dispatch updated: %s", sorted(changes), extra=ids(dispatch_id=dispatch_id))
    try:
        await temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id)).signal(
            DispatchWorkflow.dispatch_changed, DispatchChanged(reason="edited")
        )
    except RPCError as error:
        # The workflow re-reads the row when its timer fires; only an earlier start is late.
        log.warning("edit not signalled: %s", error, extra=ids(dispatch_id=dispatch_id))
    return dispatch


async def control_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    dispatch_id: int,
    command: Command,
    reason: str | None,
) -> Dispatch:
    """Pauses, resumes or cancels the dispatch: the row changes first (every batch and attempt
    reads it before a request), then its workflow is told, so that sleeping cohorts wake up.
    A repeat changes nothing; a command the status refuses is a Conflict."""
    applied = await apply_command(
        session=session, dispatch_id=dispatch_id, command=command, reason=reason
    )
    log.info(
        "dispatch %s (%s)%s",
        applied.status,
        reason or "no reason given",
        "" if applied.changed else ", unchanged",
        extra=ids(dispatch_id=dispatch_id),
    )
    if applied.changed:
        try:
            await temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id)).signal(
                DispatchWorkflow.dispatch_changed, DispatchChanged(reason=command)
            )
        except RPCError as error:
            # The batches read the row anyway; only a sleeping cohort wakes later (at its
            # window or its pause's recheck).
            log.warning("%s not signalled: %s", command, error, extra=ids(dispatch_id=dispatch_id))
    return await get_dispatch(session=session, dispatch_id=dispatch_id)


async def delete_dispatch(
    *, session: AsyncSession, temporal: TemporalClient, dispatch_id: int
) -> None:
    """Deletes the dispatch with its messages, then asks its workflow to cancel, which wakes
    its cohorts: they find the dispatch gone and finish. Rows first, so that no workflow woken
    by the cancellation can still see them; a workflow the request does not reach finds them
    gone the next time it looks (a cohort at its window, a delivery at its attempt)."""
    dispatch = await get_dispatch(session=session, dispatch_id=dispatch_id)
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


async def list_dispatches(
    *, session: AsyncSession, status: DispatchStatus | None, limit: int, offset: int
) -> tuple[list[DispatchPublic], int]:
    conditions: list[Any] = [] if status is None else [col(Dispatch.status) == status]
    rows, total = await fetch_page(
        session=session, model=Dispatch, conditions=conditions, limit=limit, offset=offset
    )
    counts = await counts_by_dispatch(session=session, dispatch_ids=[d.id for d in rows if d.id])
    return [dispatch_public(d, counts[d.id]) for d in rows if d.id is not None], total


async def list_messages(
    *,
    session: AsyncSession,
    dispatch_id: int,
    status: MessageStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Message], int]:
    await get_dispatch(session=session, dispatch_id=dispatch_id)
    conditions: list[Any] = [col(Message.dispatch_id) == dispatch_id]
    if status is not None:
        conditions.append(col(Message.status) == status)
    return await fetch_page(
        session=session, model=Message, conditions=conditions, limit=limit, offset=offset
    )


async def list_client_messages(
    *,
    session: AsyncSession,
    client_id: int,
    status: MessageStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Message], int]:
    """One client's messages across every dispatch, by id."""
    await get_client(session=session, client_id=client_id)
    conditions: list[Any] = [col(Message.client_id) == client_id]
    if status is not None:
        conditions.append(col(Message.status) == status)
    return await fetch_page(
        session=session, model=Message, conditions=conditions, limit=limit, offset=offset
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


async def overall_stats(*, session: AsyncSession, limit: int, offset: int) -> OverallStats:
    """A page of dispatches by id with their counts, and totals over every message."""
    dispatches = (
        await session.execute(
            select(Dispatch.id, Dispatch.status)
            .order_by(col(Dispatch.id))
            .limit(limit)
            .offset(offset)
        )
    ).all()
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
    )
