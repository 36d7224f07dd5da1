"""What several service modules use: the lookups by id (NotFound when absent), one page of rows,
the Idempotency-Key check a create and a control command share, a new dispatch's commit and its
workflow's start (a create and a resend), the signal that wakes a workflow after a change, and
a dispatch's text as it would be stored (normalized when asked, measured in SMS parts, held to
MAX_SEGMENTS)."""

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from temporalio.client import Client as TemporalClient
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError

from api.paging import Paging
from api.schemas.common import Normalization
from core.contracts.dispatch import DispatchInput
from core.contracts.shared import (
    DISPATCH_CHANGED,
    DispatchChanged,
    SendOptions,
    dispatch_workflow_id,
)
from core.errors import Conflict, EngineUnavailable, InvalidRequest, NotFound
from core.logging import ids
from core.models import TEXT_MAX_LENGTH, Client, Dispatch, DispatchEvent, IdempotencyKey, Message
from core.search import of_dispatch
from core.segments import Segments, measure, normalize
from core.settings import Settings
from core.templates import TemplateRefused, TextTemplate, check
from workflows.dispatch import DispatchWorkflow

log = logging.getLogger(__name__)

M = TypeVar("M", Client, Dispatch, Message, DispatchEvent)


async def get_client(*, session: AsyncSession, client_id: int) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise NotFound("client", client_id)
    return client


async def get_dispatch(*, session: AsyncSession, dispatch_id: int) -> Dispatch:
    dispatch = await session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise NotFound("dispatch", dispatch_id)
    return dispatch


async def fetch_page(
    *, session: AsyncSession, model: type[M], conditions: list[Any], paging: Paging
) -> tuple[list[M], int | None, str | None]:
    """One page of the rows of `model` matching all conditions, by id; how many match in all
    (when the paging asks for it); the cursor of the next page."""
    total = await paging.total(session, model, conditions)
    query = paging.select(select(model).where(*conditions), col(model.id))
    rows, next_cursor = paging.cut(list((await session.execute(query)).scalars().all()), row_id)
    return rows, total, next_cursor


def row_id(row: Any) -> int:
    return int(row.id)


async def created_before(*, session: AsyncSession, key: str, request_hash: str) -> Dispatch | None:
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


async def commit_new(*, session: AsyncSession, idempotency_key: str | None) -> bool:
    """Commits a new dispatch; False when its Idempotency-Key was committed by a concurrent
    request a moment ago (rolled back: that request's dispatch wins)."""
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        if idempotency_key is None:
            raise
        return False
    return True


async def commit_or_earlier(
    *, session: AsyncSession, idempotency_key: str | None, request_hash: str
) -> Dispatch | None:
    """Commits a new dispatch; None when it was, or the dispatch of the concurrent request that
    committed its Idempotency-Key a moment ago (this one rolled back: that one wins)."""
    if await commit_new(session=session, idempotency_key=idempotency_key):
        return None
    assert idempotency_key is not None
    earlier = await created_before(session=session, key=idempotency_key, request_hash=request_hash)
    if earlier is None:
        raise Conflict("this Idempotency-Key is in use by a request that did not finish")
    return earlier


async def start_workflow(
    *, session: AsyncSession, temporal: TemporalClient, settings: Settings, dispatch: Dispatch
) -> None:
    """Starts the workflow of a dispatch just committed; without Temporal the row goes again
    (EngineUnavailable), and its idempotency key with it (cascade): a retry creates anew."""
    assert dispatch.id is not None
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
        await session.delete(dispatch)
        await session.commit()
        raise EngineUnavailable("the workflow service is unavailable; try again") from error


async def signal_changed(
    temporal: TemporalClient, workflow_id: str, reason: str, dispatch_id: int
) -> None:
    try:
        await temporal.get_workflow_handle(workflow_id).signal(
            DISPATCH_CHANGED, DispatchChanged(reason=reason)
        )
    except RPCError as error:
        # A finished workflow needs no wake-up; one asleep finds the change when it wakes.
        log.info("%s not signalled: %s", workflow_id, error, extra=ids(dispatch_id=dispatch_id))


@dataclass(frozen=True)
class PreparedText:
    """A dispatch's text as it would be stored, its SMS size, and what `normalize_text` did
    (None when it was not asked)."""

    text: str
    size: Segments
    normalization: Normalization | None


def prepare_text(text: str, *, normalize_text: bool) -> PreparedText:
    """The text as given, or normalized (core.segments.normalize) when asked, measured."""
    stored = normalize(text) if normalize_text else text
    size = measure(stored)
    normalization = None
    if normalize_text:
        before = measure(text)
        normalization = Normalization(
            changed=stored != text,
            encoding_before=before.encoding,
            encoding=size.encoding,
            segments_before=before.segments,
            segments=size.segments,
        )
    return PreparedText(text=stored, size=size, normalization=normalization)


def text_template(text: str) -> TextTemplate:
    """The text's placeholders, checked (core.templates), or InvalidRequest on `text` naming
    what a text may not use."""
    try:
        return check(text)
    except TemplateRefused as refused:
        raise InvalidRequest(str(refused), field="text") from None


def storable_text(text: str, *, normalize_text: bool, max_segments: int) -> PreparedText:
    """The text to store, or InvalidRequest on `text`: a placeholder a text may not use (checked
    once normalized: `default(“friend”)` is fine then), more SMS parts than MAX_SEGMENTS (the
    text as written), or, once normalized, nothing left or more than TEXT_MAX_LENGTH
    characters (an ellipsis becomes three dots)."""
    prepared = prepare_text(text, normalize_text=normalize_text)
    size = prepared.size
    if not prepared.text:
        raise InvalidRequest("nothing is left of it once normalized", field="text")
    text_template(prepared.text)
    if size.characters > TEXT_MAX_LENGTH:
        raise InvalidRequest(
            f"{size.characters} characters once normalized; at most {TEXT_MAX_LENGTH}",
            field="text",
        )
    if size.segments > max_segments:
        raise InvalidRequest(
            f"{size.segments} SMS segments ({size.encoding}, {size.characters} characters) "
            f"exceeds MAX_SEGMENTS={max_segments}",
            field="text",
        )
    return prepared
