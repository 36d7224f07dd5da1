from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response, status

from api.auth import DispatchesController, DispatchesWriter, guarded
from api.deps import MAX_ID, IdPath, RouteQuery, SessionDep, SettingsDep, TemporalClientDep
from api.paging import PagingDep
from api.schemas.common import Page
from api.schemas.dispatches import (
    ControlBody,
    DispatchCreate,
    DispatchEventPublic,
    DispatchProgressPublic,
    DispatchPublic,
    DispatchResend,
    DispatchUpdate,
)
from api.schemas.messages import MessagePublic
from api.schemas.previews import DispatchPreview, DispatchPreviewPublic
from api.schemas.statistics import DispatchStats, FailureReason, TimelinePoint
from api.services import common as common_service
from api.services import control as control_service
from api.services import dispatches as dispatches_service
from api.services import messages as messages_service
from api.services import previews as previews_service
from api.services import progress as progress_service
from api.services import resends as resends_service
from api.services import statistics as statistics_service
from core.auth import Permission, Principal
from core.control import Command
from core.models import IDEMPOTENCY_KEY_MAX_LENGTH, DispatchStatus, MessageStatus

router = APIRouter(prefix="/dispatches", tags=["dispatches"])

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="A retry with the same key and request acts once: a create returns the "
        "same dispatch, a command is not applied again (header Idempotent-Replayed: true); "
        "the same key with another request is a 422.",
    ),
]


@router.post(
    "",
    response_model=DispatchPublic,
    status_code=status.HTTP_201_CREATED,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def create_dispatch(
    principal: DispatchesWriter,
    data: DispatchCreate,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DispatchPublic:
    """Create a dispatch and start its workflow: it waits for start_at by itself."""
    saved = await dispatches_service.create_dispatch(
        session=session,
        temporal=temporal,
        settings=settings,
        data=data,
        idempotency_key=idempotency_key,
        actor=principal.subject,
    )
    if saved.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await dispatches_service.created_answer(session=session, saved=saved)


# Before the routes on /{dispatch_id}: "preview" is no id.
@router.post(
    "/preview",
    response_model=DispatchPreviewPublic,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def preview_dispatch(
    data: DispatchPreview,
    session: SessionDep,
    settings: SettingsDep,
) -> DispatchPreviewPublic:
    """Preview a create's body without storing it: its audience now, its text rendered for
    sample or named clients, the clients lacking a key it needs, and its SMS parts in all."""
    return await previews_service.preview_dispatch(
        session=session, data=data, max_segments=settings.max_segments
    )


@router.get("", response_model=Page[DispatchPublic], **guarded(Permission.DISPATCHES_READ))
async def list_dispatches(
    session: SessionDep,
    paging: PagingDep,
    status: DispatchStatus | None = None,
    resent_from: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only the resends of this dispatch.")
    ] = None,
    schedule_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="Only the dispatches this schedule made (after its deletion too).",
        ),
    ] = None,
) -> Page[DispatchPublic]:
    """List dispatches by id with their message counts, optionally of one status, and only
    the resends of one dispatch or the dispatches of one schedule."""
    return await dispatches_service.list_dispatches(
        session=session,
        status=status,
        paging=paging,
        resent_from=resent_from,
        schedule_id=schedule_id,
    )


@router.post(
    "/{dispatch_id}/resend",
    response_model=DispatchPublic,
    status_code=status.HTTP_201_CREATED,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def resend_dispatch(
    principal: DispatchesWriter,
    dispatch_id: IdPath,
    data: DispatchResend,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DispatchPublic:
    """Send again to the clients this dispatch did not reach: a new dispatch (`resent_from`)
    to its clients whose messages are in one of `statuses` when the new one starts (`sent`:
    no receipt RECEIPT_WAIT_HOURS after the send), deleted and opted-out clients left out.
    Its text and window are this one's unless given. 409 if this one has not started."""
    saved = await resends_service.resend_dispatch(
        session=session,
        temporal=temporal,
        settings=settings,
        dispatch_id=dispatch_id,
        data=data,
        idempotency_key=idempotency_key,
        actor=principal.subject,
    )
    if saved.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await dispatches_service.created_answer(session=session, saved=saved)


@router.get("/{dispatch_id}", response_model=DispatchPublic, **guarded(Permission.DISPATCHES_READ))
async def get_dispatch(dispatch_id: IdPath, session: SessionDep) -> DispatchPublic:
    """One dispatch with its messages counted by status."""
    dispatch = await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    return await dispatches_service.dispatch_with_counts(session=session, dispatch=dispatch)


@router.patch(
    "/{dispatch_id}", response_model=DispatchPublic, **guarded(Permission.DISPATCHES_WRITE)
)
async def update_dispatch(
    principal: DispatchesWriter,
    dispatch_id: IdPath,
    data: DispatchUpdate,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> DispatchPublic:
    """Edit a dispatch. Before its start, any field. Running or paused: `end_at` (earlier or
    later), `text` (for messages not yet sent) and `window`, which reach the workflows already
    running (409 naming any other field). After its end: 409."""
    saved = await dispatches_service.update_dispatch(
        session=session,
        temporal=temporal,
        dispatch_id=dispatch_id,
        data=data,
        max_segments=settings.max_segments,
        actor=principal.subject,
    )
    answer = await dispatches_service.dispatch_with_counts(session=session, dispatch=saved.dispatch)
    answer.normalization = saved.normalization
    return answer


@router.delete(
    "/{dispatch_id}", status_code=status.HTTP_204_NO_CONTENT, **guarded(Permission.DISPATCHES_WRITE)
)
async def delete_dispatch(
    principal: DispatchesWriter,
    dispatch_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> None:
    """Delete a dispatch with its messages. One not finished is cancelled first (nothing more
    is sent, every workflow of it ends); its events stay listed."""
    await dispatches_service.delete_dispatch(
        session=session,
        temporal=temporal,
        dispatch_id=dispatch_id,
        update_wait=timedelta(seconds=settings.control_timeout_seconds),
        actor=principal.subject,
    )


async def _control(
    principal: Principal,
    dispatch_id: int,
    command: Command,
    body: ControlBody | None,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: str | None,
) -> DispatchPublic:
    dispatch, replayed = await control_service.control_dispatch(
        session=session,
        temporal=temporal,
        dispatch_id=dispatch_id,
        command=command,
        reason=body.reason if body else None,
        update_wait=timedelta(seconds=settings.control_timeout_seconds),
        idempotency_key=idempotency_key,
        actor=principal.subject,
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await dispatches_service.dispatch_with_counts(session=session, dispatch=dispatch)


@router.post(
    "/{dispatch_id}/pause", response_model=DispatchPublic, **guarded(Permission.DISPATCHES_CONTROL)
)
async def pause_dispatch(
    principal: DispatchesController,
    dispatch_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    response: Response,
    body: ControlBody | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DispatchPublic:
    """Pause a running dispatch: no new request starts a second after the answer (one in
    flight may finish)."""
    return await _control(
        principal,
        dispatch_id,
        Command.PAUSE,
        body,
        session,
        temporal,
        settings,
        response,
        idempotency_key,
    )


@router.post(
    "/{dispatch_id}/resume", response_model=DispatchPublic, **guarded(Permission.DISPATCHES_CONTROL)
)
async def resume_dispatch(
    principal: DispatchesController,
    dispatch_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    response: Response,
    body: ControlBody | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DispatchPublic:
    """Resume a paused dispatch where it stopped; nothing already sent is sent again."""
    return await _control(
        principal,
        dispatch_id,
        Command.RESUME,
        body,
        session,
        temporal,
        settings,
        response,
        idempotency_key,
    )


@router.post(
    "/{dispatch_id}/cancel", response_model=DispatchPublic, **guarded(Permission.DISPATCHES_CONTROL)
)
async def cancel_dispatch(
    principal: DispatchesController,
    dispatch_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    response: Response,
    body: ControlBody | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DispatchPublic:
    """Cancel a dispatch: nothing more is sent, its unsent messages end cancelled, its history
    stays."""
    return await _control(
        principal,
        dispatch_id,
        Command.CANCEL,
        body,
        session,
        temporal,
        settings,
        response,
        idempotency_key,
    )


@router.get(
    "/{dispatch_id}/stats",
    response_model=DispatchStats,
    **guarded(Permission.DISPATCHES_READ),
)
async def dispatch_stats(
    dispatch_id: IdPath, session: SessionDep, settings: SettingsDep
) -> DispatchStats:
    """One dispatch's messages counted by status and by send route, and those still `sent`
    RECEIPT_WAIT_HOURS after their send (`sent_without_receipt`: no receipt came in time)."""
    return await statistics_service.dispatch_stats(
        session=session,
        dispatch_id=dispatch_id,
        receipt_wait=timedelta(hours=settings.receipt_wait_hours),
    )


@router.get(
    "/{dispatch_id}/messages",
    response_model=Page[MessagePublic],
    **guarded(Permission.DISPATCHES_READ),
)
async def dispatch_messages(
    dispatch_id: IdPath,
    session: SessionDep,
    paging: PagingDep,
    status: MessageStatus | None = None,
    route: RouteQuery = None,
) -> Page[MessagePublic]:
    """A dispatch's messages by id, optionally of one status and of one send route."""
    return await messages_service.list_messages(
        session=session, dispatch_id=dispatch_id, status=status, route=route, paging=paging
    )


@router.get(
    "/{dispatch_id}/events",
    response_model=Page[DispatchEventPublic],
    **guarded(Permission.DISPATCHES_READ),
)
async def dispatch_events(
    dispatch_id: IdPath,
    session: SessionDep,
    paging: PagingDep,
) -> Page[DispatchEventPublic]:
    """The dispatch's control actions, oldest first: created, edited, paused, resumed,
    cancelled, deleted, each with its time, actor and reason (kept after a delete)."""
    return await dispatches_service.list_events(
        session=session, dispatch_id=dispatch_id, paging=paging
    )


@router.get(
    "/{dispatch_id}/timeline",
    response_model=list[TimelinePoint],
    **guarded(Permission.DISPATCHES_READ),
)
async def dispatch_timeline(
    dispatch_id: IdPath, session: SessionDep, bucket: Literal["minute", "hour"] = "minute"
) -> list[TimelinePoint]:
    """The dispatch's messages sent per minute (or hour), from its first send to its last."""
    dispatch = await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    return await statistics_service.timeline(
        session=session, dispatch_id=dispatch_id, since=dispatch.created_at, bucket=bucket
    )


@router.get(
    "/{dispatch_id}/failures",
    response_model=list[FailureReason],
    **guarded(Permission.DISPATCHES_READ),
)
async def dispatch_failures(dispatch_id: IdPath, session: SessionDep) -> list[FailureReason]:
    """Why the dispatch's messages did not go, or not yet: each last error with its status,
    counted, most frequent first (20 at most)."""
    await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    return await statistics_service.failure_reasons(session=session, dispatch_id=dispatch_id)


@router.get(
    "/{dispatch_id}/progress",
    response_model=DispatchProgressPublic,
    **guarded(Permission.DISPATCHES_READ),
)
async def dispatch_progress(
    dispatch_id: IdPath, session: SessionDep, temporal: TemporalClientDep
) -> DispatchProgressPublic:
    """What the dispatch's workflow says of itself: its phase, the clients laid out, and each
    cohort's phase, sends and, while it sleeps for its zone's window, until when."""
    await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    return await progress_service.dispatch_progress(temporal=temporal, dispatch_id=dispatch_id)
