"""A resend: a new dispatch to the clients a dispatch did not reach (its messages undelivered,
failed, expired, cancelled, or sent with no receipt in time), linked to it by `resent_from`.
Its workflow is any dispatch's: the layout activity reads the link and takes those clients
instead of a filter's (core.audience.resend_audience), when the resend starts."""

import hashlib
import logging
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client as TemporalClient

from api.schemas.dispatches import DispatchResend
from api.services import common as common_service
from api.services.dispatches import Saved
from core.errors import Conflict, EngineUnavailable
from core.events import Action, Actor, record_event
from core.logging import ids
from core.models import (
    Dispatch,
    DispatchStatus,
    IdempotencyKey,
    MessageStatus,
    dispatch_event_t,
    utcnow,
)
from core.settings import Settings

log = logging.getLogger(__name__)


async def resend_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    dispatch_id: int,
    data: DispatchResend,
    idempotency_key: str | None = None,
    actor: str = Actor.API,
) -> Saved:
    """Stores the resend of dispatch `dispatch_id` (its text and window unless given, its
    delivery shape, its filter for the record), an event on both, then starts its workflow.
    `sent` takes the messages still sent RECEIPT_WAIT_HOURS after their send, reckoned now.
    A dispatch that has not started has no message to resend (Conflict). With an
    Idempotency-Key already used for the same request, the resend it made comes back."""
    first = await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    if first.status == DispatchStatus.SCHEDULED:
        await session.rollback()
        raise Conflict(f"dispatch {dispatch_id} has not started: it has no message to resend")
    text = common_service.storable_text(
        first.text if data.text is None else data.text,
        normalize_text=data.normalize_text,
        max_segments=settings.max_segments,
    )
    request_hash = hashlib.sha256(
        f"resend {dispatch_id} {data.model_dump_json()} {sorted(data.model_fields_set)}".encode()
    ).hexdigest()
    if idempotency_key is not None:
        earlier = await common_service.created_before(
            session=session, key=idempotency_key, request_hash=request_hash
        )
        if earlier is not None:
            return Saved(earlier, text.normalization, replayed=True)
    statuses = [str(status) for status in data.statuses]
    waited = utcnow() - timedelta(hours=settings.receipt_wait_hours)
    resend = Dispatch(
        start_at=data.start_at,
        end_at=data.end_at,
        text=text.text,
        delivery=first.delivery,
        transactional=first.transactional,
        operator_codes=list(first.operator_codes),
        tags=list(first.tags),
        target_all=first.target_all,
        window_start=first.window_start,
        window_end=first.window_end,
        resent_from=dispatch_id,
        resend_statuses=statuses,
        resend_sent_before=waited if MessageStatus.SENT in data.statuses else None,
    )
    if "window" in data.model_fields_set:
        times = (None, None) if data.window is None else data.window.times()
        resend.window_start, resend.window_end = times
    session.add(resend)
    await session.flush()
    assert resend.id is not None
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(key=idempotency_key, request_hash=request_hash, dispatch_id=resend.id)
        )
    await record_event(
        session,
        dispatch_id=resend.id,
        action=Action.CREATED,
        actor=actor,
        details={"resent_from": dispatch_id, "statuses": statuses},
    )
    await record_event(
        session,
        dispatch_id=dispatch_id,
        action=Action.RESENT,
        actor=actor,
        details={"resent_as": resend.id, "statuses": statuses},
    )
    earlier = await common_service.commit_or_earlier(
        session=session, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if earlier is not None:
        return Saved(earlier, text.normalization, replayed=True)
    try:
        await common_service.start_workflow(
            session=session, temporal=temporal, settings=settings, dispatch=resend
        )
    except EngineUnavailable:
        # The resend is gone: so is the first's record of it.
        await session.execute(
            sa.delete(dispatch_event_t).where(
                dispatch_event_t.c.dispatch_id == dispatch_id,
                dispatch_event_t.c.action == Action.RESENT,
                dispatch_event_t.c.details["resent_as"].as_integer() == resend.id,
            )
        )
        await session.commit()
        raise
    log.info(
        "dispatch %d resent to its %s clients",
        dispatch_id,
        ", ".join(statuses),
        extra=ids(dispatch_id=resend.id),
    )
    return Saved(resend, text.normalization)
