"""The dispatch form, new and edit: its fields to and from the API's body (its times read in any
IANA zone, the operator's by default), its previews (its text's characters, encoding and SMS
parts as it is typed; the clients it targets with their SMS parts in all, and the text as they
would get it, with those lacking a key), its errors in the form's words, and its submissions
through the same service functions as the API. Included before `dispatches`, whose routes take
an id or a command where these have `new` and `edit`."""

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.admin.common import (
    OTHER_ZONES,
    FormError,
    FormField,
    SessionUser,
    admin_router,
    back,
    error_status,
    form_errors,
    known_zone,
    render,
    split_list,
    zone_of,
)
from api.admin.session import AdminSession, check_csrf
from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.schemas.common import FILTER_MAX_ITEMS
from api.schemas.dispatches import DispatchCreate, DispatchFilter, DispatchUpdate
from api.services import common as common_service
from api.services import dispatches as dispatches_service
from api.services import previews as previews_service
from core.auth import Permission
from core.contracts.shared import DeliveryShape
from core.errors import DomainError
from core.models import (
    EDITABLE_WHILE_RUNNING,
    TEXT_MAX_LENGTH,
    Dispatch,
    DispatchStatus,
    utcnow,
)
from core.settings import Settings
from core.windows import RUSSIA_ZONES

router = admin_router()

# The API's fields as the form names them, for its errors.
FIELDS = {
    "start_at": FormField("Start", "start_at"),
    "end_at": FormField("End", "end_at"),
    "text": FormField("Text", "text"),
    "filter": FormField("Who gets it", "tags"),
    "filter.tags": FormField("Tags", "tags"),
    "filter.operator_codes": FormField("Operator codes", "codes"),
    "window": FormField("Send window", "window_start"),
    "window.start": FormField("Send window, from", "window_start"),
    "window.end": FormField("Send window, until", "window_end"),
    "delivery": FormField("How it is sent", "delivery"),
}


class _FilterOnly(BaseModel):
    """The form's filter judged alone (its errors named as in a whole body's)."""

    filter: DispatchFilter


def _local_input(value: datetime, zone: str) -> str:
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def _dispatch_defaults(zone: str) -> dict[str, Any]:
    """A new dispatch's fields: it starts in a minute and lasts a day, its times in `zone`."""
    start = utcnow() + timedelta(minutes=1)
    return {
        "start_at": _local_input(start, zone),
        "end_at": _local_input(start + timedelta(days=1), zone),
        "zone": zone,
        "text": "",
        "tags": "",
        "codes": "",
        "all": False,
        "window_start": "",
        "window_end": "",
        "delivery": DeliveryShape.COHORTS.value,
        "normalize_text": False,
    }


def _dispatch_form_page(
    request: Request,
    session: AdminSession,
    values: dict[str, Any],
    errors: list[FormError],
    dispatch: Any,
    settings: Settings,
    status_code: int = 200,
) -> HTMLResponse:
    """The dispatch form: a new one (`dispatch` None) or an edit, with the errors it met; its
    times in any IANA zone, Russia's first."""
    return render(
        request,
        "dispatch_form.html",
        session,
        status_code,
        values=values,
        errors=errors,
        russia_zones=RUSSIA_ZONES,
        other_zones=("UTC", *OTHER_ZONES),
        dispatch=dispatch,
        **_text_size(values["text"], values["normalize_text"], settings.max_segments),
    )


def _text_size(text: str, normalize_text: bool, max_segments: int) -> dict[str, Any]:
    """What `_text_size.html` shows: the text's characters and SMS parts as a create would
    store it (the service measures, as for the API)."""
    prepared = common_service.prepare_text(text, normalize_text=normalize_text)
    return {
        "size": prepared.size,
        "normalization": prepared.normalization,
        "max_segments": max_segments,
    }


def _dispatch_form(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: str(form.get(name, "")).strip()
        for name in (
            "start_at",
            "end_at",
            "zone",
            "tags",
            "codes",
            "window_start",
            "window_end",
            "delivery",
        )
    }
    values["text"] = str(form.get("text", ""))
    values["all"] = form.get("all") == "on"
    values["normalize_text"] = form.get("normalize_text") == "on"
    return values


def _instant(local: str, zone: str) -> str | None:
    """A datetime-local value read in `zone`, as ISO 8601 with its offset (None if empty)."""
    if not local:
        return None
    try:
        naive = datetime.fromisoformat(local)
        return naive.replace(tzinfo=ZoneInfo(zone if known_zone(zone) else "UTC")).isoformat()
    except (ValueError, KeyError):
        return local  # the model names what is wrong with it


def _dispatch_body(values: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start_at": _instant(values["start_at"], values["zone"]),
        "end_at": _instant(values["end_at"], values["zone"]),
        "text": values["text"],
        "filter": {
            "tags": split_list(values["tags"]),
            "operator_codes": split_list(values["codes"]),
            "all": values["all"],
        },
        "delivery": values["delivery"] or DeliveryShape.COHORTS.value,
        "normalize_text": values["normalize_text"],
    }
    if values["window_start"] or values["window_end"]:
        body["window"] = {"start": values["window_start"], "end": values["window_end"]}
    return body


@router.get("/dispatches/new")
async def new_dispatch(
    request: Request, session: SessionUser, settings: SettingsDep
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_WRITE)
    defaults = _dispatch_defaults(zone_of(request))
    return _dispatch_form_page(request, session, defaults, [], None, settings)


@router.get("/text-size")
async def text_size(
    request: Request,
    session: SessionUser,
    settings: SettingsDep,
    text: str = "",
    normalize_text: str = "",
) -> HTMLResponse:
    """htmx: the form's text in characters and SMS parts (normalized when ticked)."""
    session.require(Permission.DISPATCHES_READ)
    size = _text_size(text[:TEXT_MAX_LENGTH], normalize_text == "on", settings.max_segments)
    return render(request, "_text_size.html", session, **size)


async def _locked(db: AsyncSession, dispatch_id: int | None) -> Dispatch | None:
    """The dispatch being edited when the form cannot change its audience (a resend, or one
    that has started); None for a new one or one still scheduled."""
    if dispatch_id is None:
        return None
    stored = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    if stored.resent_from is not None or stored.status != DispatchStatus.SCHEDULED:
        return stored
    return None


@router.post("/dispatches/preview")
async def text_preview(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    dispatch: int | None = None,
) -> HTMLResponse:
    """htmx: the clients the form targets now and their SMS parts in all (swapped into the
    audience line), and the text as they would get it, from the API preview's service (a few
    clients' texts, those lacking a key); `dispatch` is the one being edited, whose stored
    audience counts when the form cannot change it. A POST: the whole form comes with it, CSRF
    token and all."""
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    values = _dispatch_form(await request.form())
    locked = await _locked(db, dispatch)
    chosen = _dispatch_body(values)["filter"]
    errors: list[FormError] = []
    if locked is not None:
        audience = previews_service.Audience.of_dispatch(locked)
    else:
        try:
            _FilterOnly.model_validate({"filter": chosen})
        except ValidationError as error:
            # No filter yet is no error while typing: the audience line says what it needs.
            if chosen["tags"] or chosen["operator_codes"] or chosen["all"]:
                errors = form_errors(error, FIELDS)
        audience = previews_service.Audience.of_filter(
            operator_codes=chosen["operator_codes"][:FILTER_MAX_ITEMS],
            tags=chosen["tags"][:FILTER_MAX_ITEMS],
        )
    preview = None
    if values["text"] and not errors:
        try:
            preview = await previews_service.preview_text(
                session=db,
                text=values["text"][:TEXT_MAX_LENGTH],
                normalize_text=values["normalize_text"],
                audience=audience,
                max_segments=settings.max_segments,
            )
        except DomainError as error:
            errors = form_errors(error, FIELDS)
    clients = preview.audience if preview else await db.scalar(audience.select(sa.func.count()))
    return render(
        request,
        "_preview.html",
        session,
        preview=preview,
        errors=errors,
        audience={
            "clients": int(clients or 0),
            "locked": locked is not None,
            "everyone": not (chosen["tags"] or chosen["operator_codes"] or chosen["all"]),
        },
    )


@router.post("/dispatches")
async def create_dispatch(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    values = _dispatch_form(await request.form())
    try:
        data = DispatchCreate.model_validate(_dispatch_body(values))
        saved = await dispatches_service.create_dispatch(
            session=db,
            temporal=temporal,
            settings=settings,
            data=data,
            actor=session.principal.subject,
        )
    except (ValidationError, DomainError) as error:
        return _dispatch_form_page(
            request,
            session,
            values,
            form_errors(error, FIELDS),
            None,
            settings,
            error_status(error),
        )
    return back(f"/admin/dispatches/{saved.dispatch.id}", f"Dispatch {saved.dispatch.id} created.")


@router.get("/dispatches/{dispatch_id}/edit")
async def edit_dispatch(
    request: Request, dispatch_id: int, session: SessionUser, db: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_WRITE)
    dispatch = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = dispatches_service.dispatch_public(dispatch, {})
    zone = zone_of(request)
    values = _dispatch_defaults(zone)
    values.update(
        start_at=_local_input(dispatch.start_at, zone),
        end_at=_local_input(dispatch.end_at, zone),
        text=dispatch.text,
        tags=", ".join(dispatch.tags),
        codes=", ".join(dispatch.operator_codes),
        all=dispatch.target_all,
        window_start=public.window.start if public.window else "",
        window_end=public.window.end if public.window else "",
        delivery=dispatch.delivery,
    )
    return _dispatch_form_page(request, session, values, [], public, settings)


@router.post("/dispatches/{dispatch_id}/edit")
async def update_dispatch(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> Response:
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    dispatch = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = dispatches_service.dispatch_public(dispatch, {})
    values = _dispatch_form(await request.form())
    body = _dispatch_body(values)
    if dispatch.resent_from is not None:
        body.pop("filter")  # a resend's audience is its first dispatch's clients
    if dispatch.status != DispatchStatus.SCHEDULED:
        # A running or paused dispatch edits only what the workflows read again.
        kept = EDITABLE_WHILE_RUNNING | {"normalize_text"}
        body = {key: value for key, value in body.items() if key in kept}
    try:
        data = DispatchUpdate.model_validate(body)
        await dispatches_service.update_dispatch(
            session=db,
            temporal=temporal,
            dispatch_id=dispatch_id,
            data=data,
            max_segments=settings.max_segments,
            actor=session.principal.subject,
        )
    except (ValidationError, DomainError) as error:
        return _dispatch_form_page(
            request,
            session,
            values,
            form_errors(error, FIELDS),
            public,
            settings,
            error_status(error),
        )
    return back(f"/admin/dispatches/{dispatch_id}", f"Dispatch {dispatch_id} saved.")
