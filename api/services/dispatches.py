"""A dispatch itself: create (its workflow started), edit, delete, list, and its reads that answer
the dispatch (its row with its messages counted), its events, or what its workflow says of itself
(progress). Pause, resume and cancel are in `control`; reads that answer only numbers (its counts
alone, sends over time, failure reasons) in `statistics`; its messages in `messages`."""

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from api.paging import Paging
from api.schemas.common import Normalization, Page
from api.schemas.dispatches import (
    DispatchCreate,
    DispatchEventPublic,
    DispatchFilter,
    DispatchPublic,
    DispatchUpdate,
    WindowSchema,
)
from api.schemas.statistics import StatusCounts
from api.services import common as common_service
from api.services import control as control_service
from api.services import previews as previews_service
from core.audience import audience_size, resend_audience_size
from core.contracts.shared import Window, dispatch_workflow_id
from core.control import Command
from core.errors import Conflict, InvalidRequest, NotFound
from core.events import Action, Actor, record_event
from core.logging import ids
from core.models import (
    EDITABLE_WHILE_RUNNING,
    UNFINISHED_DISPATCH_STATUSES,
    Dispatch,
    DispatchEvent,
    DispatchStatus,
    IdempotencyKey,
    MessageStatus,
    dispatch_t,
)
from core.settings import Settings
from core.stats import counts_by_dispatch
from core.windows import stored_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saved:
    """The dispatch a create or an edit stored, and what its `normalize_text` did (None: not
    asked)."""

    dispatch: Dispatch
    normalization: Normalization | None = None
    replayed: bool = False  # an earlier create with the same Idempotency-Key, returned again


def dispatch_public(
    dispatch: Dispatch,
    counts: dict[str, int],
    *,
    audience: int | None = None,
    normalization: Normalization | None = None,
    resent_as: list[int] | None = None,
    estimate: previews_service.Estimate | None = None,
    missing: int = 0,
) -> DispatchPublic:
    """The dispatch as answered. Its `segments_total` counts its messages (those `unrendered`
    sent nothing), or, while it has none, the `audience` the answer to a create carries, less
    the `missing` clients that lack a key its text needs. A personal text's parts are the
    `estimate` (services.previews); without one, the text as written."""
    stored = Window.of(stored_window(dispatch.window_start, dispatch.window_end))
    window = None if stored is None else WindowSchema(start=stored.start, end=stored.end)
    assert dispatch.id is not None
    messages = StatusCounts.of(counts)
    size = estimate or previews_service.fixed_estimate(dispatch.text)
    if messages.total or audience is None:
        recipients = messages.total - counts.get(MessageStatus.UNRENDERED, 0)
    else:
        recipients = audience - missing
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
        transactional=dispatch.transactional,
        status=dispatch.status,
        status_reason=dispatch.status_reason,
        audience=audience,
        encoding=size.encoding,
        segments=size.segments,
        segments_total=size.total(recipients),
        normalization=normalization,
        resent_from=dispatch.resent_from,
        resend_statuses=dispatch.resend_statuses,
        resent_as=resent_as or [],
        schedule_id=dispatch.schedule_id,
        created_at=dispatch.created_at,
        updated_at=dispatch.updated_at,
        messages=messages,
    )


async def dispatch_with_counts(*, session: AsyncSession, dispatch: Dispatch) -> DispatchPublic:
    assert dispatch.id is not None
    counts = await counts_by_dispatch(session=session, dispatch_ids=[dispatch.id])
    resends = await resends_of(session=session, dispatch_ids=[dispatch.id])
    estimate = await previews_service.dispatch_estimate(session=session, dispatch=dispatch)
    return dispatch_public(
        dispatch, counts[dispatch.id], resent_as=resends[dispatch.id], estimate=estimate
    )


async def resends_of(*, session: AsyncSession, dispatch_ids: list[int]) -> dict[int, list[int]]:
    """For each dispatch id, the ids of its resends (ix_dispatch_resent_from)."""
    result: dict[int, list[int]] = {dispatch_id: [] for dispatch_id in dispatch_ids}
    if dispatch_ids:
        rows = await session.execute(
            sa.select(dispatch_t.c.resent_from, dispatch_t.c.id)
            .where(dispatch_t.c.resent_from.in_(dispatch_ids))
            .order_by(dispatch_t.c.id)
        )
        for resent_from, resend_id in rows:
            result[resent_from].append(resend_id)
    return result


def _apply_filter_and_window(
    dispatch: Dispatch, dispatch_filter: DispatchFilter | None, window: WindowSchema | None
) -> None:
    if dispatch_filter is not None:
        dispatch.operator_codes = list(dispatch_filter.operator_codes)
        dispatch.tags = list(dispatch_filter.tags)
        dispatch.target_all = dispatch_filter.all
    if window is not None:
        dispatch.window_start, dispatch.window_end = window.times()


async def create_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    data: DispatchCreate,
    idempotency_key: str | None = None,
    actor: str = Actor.API,
    schedule_id: int | None = None,
) -> Saved:
    """Stores the dispatch (its text normalized when asked, and held to MAX_SEGMENTS), then
    starts its workflow; without Temporal nothing is kept. With an Idempotency-Key already
    used for the same body, the dispatch it made comes back instead (`replayed`), with the
    same `normalization`: it is the request's own. `schedule_id`: the schedule whose run
    makes it (activities.schedules)."""
    text = common_service.storable_text(
        data.text, normalize_text=data.normalize_text, max_segments=settings.max_segments
    )
    # A body without normalize_text hashes as it did before the field existed: keys stored
    # then still match their retries.
    unasked = set() if data.normalize_text else {"normalize_text"}
    request_hash = hashlib.sha256(data.model_dump_json(exclude=unasked).encode()).hexdigest()
    if idempotency_key is not None:
        earlier = await common_service.created_before(
            session=session, key=idempotency_key, request_hash=request_hash
        )
        if earlier is not None:
            return Saved(earlier, text.normalization, replayed=True)
    dispatch = Dispatch(
        start_at=data.start_at,
        end_at=data.end_at,
        text=text.text,
        delivery=data.delivery,
        transactional=data.transactional,
        schedule_id=schedule_id,
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
    earlier = await common_service.commit_or_earlier(
        session=session, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if earlier is not None:
        return Saved(earlier, text.normalization, replayed=True)
    await common_service.start_workflow(
        session=session, temporal=temporal, settings=settings, dispatch=dispatch
    )
    log.info("dispatch created", extra=ids(dispatch_id=dispatch.id))
    return Saved(dispatch, text.normalization)


async def created_answer(*, session: AsyncSession, saved: Saved) -> DispatchPublic:
    """The answer to a create (or a resend): the dispatch with its counts (none yet, unless a
    replay finds some), how many clients its filter (a resend's first dispatch) matches now,
    its text's parts for them (a personal text's estimated, those lacking a key left out),
    and what normalize_text did."""
    dispatch = saved.dispatch
    assert dispatch.id is not None
    counts: dict[str, int] = {}
    if saved.replayed:
        counts = (await counts_by_dispatch(session=session, dispatch_ids=[dispatch.id]))[
            dispatch.id
        ]
    if dispatch.resent_from is not None and dispatch.resend_statuses is not None:
        audience = await resend_audience_size(
            session=session,
            resent_from=dispatch.resent_from,
            statuses=dispatch.resend_statuses,
            sent_before=dispatch.resend_sent_before,
        )
    else:
        audience = await audience_size(
            session=session, operator_codes=dispatch.operator_codes, tags=dispatch.tags
        )
    estimate = await previews_service.dispatch_estimate(session=session, dispatch=dispatch)
    missing = 0
    if not sum(counts.values()):
        missing = await previews_service.dispatch_missing(session=session, dispatch=dispatch)
    return dispatch_public(
        dispatch,
        counts,
        audience=audience,
        normalization=saved.normalization,
        estimate=estimate,
        missing=missing,
    )


def _and_list(names: list[str]) -> str:
    """`a, b and c`."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


async def update_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    dispatch_id: int,
    data: DispatchUpdate,
    max_segments: int,
    actor: str = Actor.API,
) -> Saved:
    """Before the start any field; running or paused, EDITABLE_WHILE_RUNNING, which the
    workflows read again when signalled (cohorts, deliveries) or at their next send (batches
    and attempts read the row); after the end, a Conflict. A new text is normalized when
    asked (without one, the stored text is) and held to MAX_SEGMENTS."""
    # The row lock orders this edit against the workflow moving the dispatch to running.
    dispatch = await session.get(Dispatch, dispatch_id, with_for_update=True)
    if dispatch is None:
        raise NotFound("dispatch", dispatch_id)
    changes = data.model_dump(exclude_unset=True)
    changes.pop("normalize_text", None)
    text = None
    if data.text is not None or data.normalize_text:
        try:
            text = common_service.storable_text(
                dispatch.text if data.text is None else data.text,
                normalize_text=data.normalize_text,
                max_segments=max_segments,
            )
        except InvalidRequest:
            await session.rollback()
            raise
        if text.text != dispatch.text:
            changes.setdefault("text", text.text)
    current = dispatch.status
    if (resent_from := dispatch.resent_from) is not None and "filter" in changes:
        await session.rollback()
        raise Conflict(
            f"dispatch {dispatch_id} resends dispatch {resent_from}: its audience is "
            "that dispatch's clients, not a filter"
        )
    if current not in UNFINISHED_DISPATCH_STATUSES:
        await session.rollback()
        raise Conflict(f"dispatch {dispatch_id} is {current}: it can no longer be edited")
    if current != DispatchStatus.SCHEDULED and (
        frozen := sorted(set(changes) - EDITABLE_WHILE_RUNNING)
    ):
        await session.rollback()
        raise Conflict(
            f"dispatch {dispatch_id} is {current}: only "
            f"{_and_list(sorted(EDITABLE_WHILE_RUNNING))} can change now, not {', '.join(frozen)}"
        )
    start_at = data.start_at or dispatch.start_at
    end_at = data.end_at or dispatch.end_at
    if end_at <= start_at:
        await session.rollback()
        raise InvalidRequest("end_at must be after start_at")
    dispatch.start_at, dispatch.end_at = start_at, end_at
    if text is not None:
        dispatch.text = text.text
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
    await common_service.signal_changed(
        temporal, dispatch_workflow_id(dispatch_id), "edited", dispatch_id
    )
    return Saved(dispatch, None if text is None else text.normalization)


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
    dispatch = await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    if dispatch.status in UNFINISHED_DISPATCH_STATUSES:
        await session.rollback()
        dispatch, _ = await control_service.control_dispatch(
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


async def list_dispatches(
    *,
    session: AsyncSession,
    status: DispatchStatus | None,
    paging: Paging,
    resent_from: int | None = None,
    schedule_id: int | None = None,
) -> Page[DispatchPublic]:
    """Dispatches by id, of one status, the resends of one dispatch and those one schedule
    made if given."""
    conditions: list[Any] = [] if status is None else [col(Dispatch.status) == status]
    if resent_from is not None:
        conditions.append(col(Dispatch.resent_from) == resent_from)
    if schedule_id is not None:
        conditions.append(col(Dispatch.schedule_id) == schedule_id)
    rows, total, next_cursor = await common_service.fetch_page(
        session=session, model=Dispatch, conditions=conditions, paging=paging
    )
    page_ids = [d.id for d in rows if d.id is not None]
    counts = await counts_by_dispatch(session=session, dispatch_ids=page_ids)
    resends = await resends_of(session=session, dispatch_ids=page_ids)
    estimates = [
        await previews_service.dispatch_estimate(session=session, dispatch=d) for d in rows
    ]
    return Page(
        items=[
            dispatch_public(d, counts[d.id], resent_as=resends[d.id], estimate=estimate)
            for d, estimate in zip(rows, estimates, strict=True)
            if d.id is not None
        ],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )


async def list_events(
    *, session: AsyncSession, dispatch_id: int, paging: Paging
) -> Page[DispatchEventPublic]:
    """A dispatch's control actions, oldest first; kept after its deletion."""
    conditions = [col(DispatchEvent.dispatch_id) == dispatch_id]
    rows, total, next_cursor = await common_service.fetch_page(
        session=session, model=DispatchEvent, conditions=conditions, paging=paging
    )
    if not rows and paging.after_id is None and paging.offset == 0:
        await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    return Page(
        items=[DispatchEventPublic.model_validate(row) for row in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )
