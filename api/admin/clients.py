"""The client pages: the list with its filters, a client's form (new and edit), its deletion, and
the import of a file. Mirrors api/routers/clients.py; the import's routes come before
`/clients/{client_id}`, so that `import` is not taken for an id."""

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.admin.common import (
    PAGE_SIZE,
    ZONES,
    FormError,
    FormField,
    SessionUser,
    admin_router,
    back,
    error_status,
    form_errors,
    render,
    split_list,
)
from api.admin.session import AdminSession, check_csrf
from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.imports.reading import FileFormat, FileRefused, format_of
from api.imports.writing import Importer, OnDuplicate, OnError
from api.paging import Paging, decode_cursor
from api.schemas.clients import ClientCreate, ClientUpdate
from api.services import clients as clients_service
from api.services import common as common_service
from core.auth import Permission
from core.errors import Conflict, DomainError
from core.models import PHONE_LENGTH

router = admin_router()

# The API's fields as the client form names them, for its errors.
FIELDS = {
    "phone": FormField("Phone", "phone"),
    "tag": FormField("Tag", "tag"),
    "timezone": FormField("Time zone", "timezone"),
    "operator_code": FormField("Operator code", "operator_code"),
    "opted_out": FormField("Stop list"),
}


@router.get("/clients")
async def clients(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    tags: str = "",
    codes: str = "",
    zones: str = "",
    phone: str = "",
    cursor: str | None = None,
) -> HTMLResponse:
    session.require(Permission.CLIENTS_READ)
    filters = {"tags": tags, "codes": codes, "zones": zones, "phone": phone}
    error = None
    prefix = "".join(ch for ch in phone if ch.isdigit())[:PHONE_LENGTH] or None
    try:
        after_id = None if not cursor else decode_cursor(cursor)
    except DomainError as bad:
        after_id, error = None, str(bad)
    paging = Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True)
    rows, total, next_cursor = await clients_service.list_clients(
        session=db,
        tags=split_list(tags),
        operator_codes=split_list(codes),
        timezones=split_list(zones),
        phone_prefix=prefix,
        opted_out=None,
        paging=paging,
    )
    query = {key: value for key, value in filters.items() if value}
    next_url = None
    if next_cursor:
        next_url = "/admin/clients?" + urlencode({**query, "cursor": next_cursor})
    return render(
        request,
        "clients.html",
        session,
        clients=rows,
        total=total,
        filters=filters,
        next_url=next_url,
        first_url="/admin/clients?" + urlencode(query),
        paged=cursor is not None,
        error=error,
    )


@router.get("/clients/new")
async def new_client(request: Request, session: SessionUser) -> HTMLResponse:
    session.require(Permission.CLIENTS_WRITE)
    return _client_form_page(request, session, {}, [], None)


def _client_form_page(
    request: Request,
    session: AdminSession,
    values: dict[str, Any],
    errors: list[FormError],
    client: Any,
    status_code: int = 200,
) -> HTMLResponse:
    """The client form: a new one (`client` None) or an edit, with the errors it met."""
    return render(
        request,
        "client_form.html",
        session,
        status_code,
        client=client,
        values=values,
        errors=errors,
        zones=ZONES,
    )


def _client_form(form: Any) -> dict[str, Any]:
    values = {
        name: str(form.get(name, "")).strip()
        for name in ("phone", "tag", "timezone", "operator_code")
    }
    values["opted_out"] = form.get("opted_out") == "on"
    return values


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value != "" or key == "tag"}


@router.get("/clients/import")
async def import_page(request: Request, session: SessionUser) -> HTMLResponse:
    session.require(Permission.CLIENTS_WRITE)
    return render(request, "import.html", session, report=None, error=None, options={})


@router.post("/clients/import")
async def import_clients(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    temporal: TemporalClientDep,
) -> Response:
    """The import of a file, as POST /clients/import; the page again with its report, the
    options as they were chosen (with scripts, only the report changes: the file stays)."""
    session.require(Permission.CLIENTS_WRITE)
    # Parsed with its limits first: the CSRF check then reads the same form.
    form = await request.form(max_files=1, max_fields=10)
    await check_csrf(request, session)
    options = {name: str(form.get(name) or "") for name in ("on_duplicate", "on_error")}

    def page(status_code: int, report: Any = None, error: str | None = None) -> HTMLResponse:
        return render(
            request,
            "import.html",
            session,
            status_code,
            report=report,
            error=error,
            options=options,
        )

    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return page(422, error="Choose a file to import.")
    file_format = format_of(upload.content_type or "", upload.filename) or FileFormat.CSV
    try:
        on_duplicate = OnDuplicate(options["on_duplicate"] or OnDuplicate.SKIP)
        on_error = OnError(options["on_error"] or OnError.REJECT_FILE)
    except ValueError:
        return page(422, error="Choose one of the options for each question.")
    importer = Importer(session=db, settings=settings, on_duplicate=on_duplicate, on_error=on_error)
    try:
        report = await importer.run(upload.file, file_format)
    except FileRefused as error:
        return page(422, error=f"The file was refused: {error}.")
    for kind, dispatch_id, client_id in importer.to_wake:
        await clients_service.wake_after_move(temporal, client_id, [(kind, dispatch_id)])
    return page(200 if report.committed else 422, report=report)


@router.post("/clients")
async def create_client(
    request: Request, session: SessionUser, db: SessionDep, settings: SettingsDep
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    await check_csrf(request, session)
    values = _client_form(await request.form())
    try:
        data = ClientCreate.model_validate(_given(values))
        client = await clients_service.create_client(session=db, data=data, settings=settings)
    except (ValidationError, Conflict) as error:
        return _client_form_page(
            request, session, values, form_errors(error, FIELDS), None, error_status(error)
        )
    return back("/admin/clients", f"Client {client.id} added.")


@router.get("/clients/{client_id}/edit")
async def edit_client(
    request: Request, client_id: int, session: SessionUser, db: SessionDep
) -> HTMLResponse:
    session.require(Permission.CLIENTS_WRITE)
    client = await common_service.get_client(session=db, client_id=client_id)
    values = {
        "phone": client.phone,
        "tag": client.tag,
        "timezone": client.timezone,
        "operator_code": client.operator_code,
        "opted_out": client.opted_out,
    }
    return _client_form_page(request, session, values, [], client)


@router.post("/clients/{client_id}")
async def update_client(
    request: Request,
    client_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    await check_csrf(request, session)
    client = await common_service.get_client(session=db, client_id=client_id)
    values = _client_form(await request.form())
    try:
        data = ClientUpdate.model_validate(_given(values))
        await clients_service.update_client(
            session=db, temporal=temporal, client_id=client_id, data=data
        )
    except (ValidationError, Conflict) as error:
        return _client_form_page(
            request, session, values, form_errors(error, FIELDS), client, error_status(error)
        )
    return back("/admin/clients", f"Client {client_id} saved.")


@router.post("/clients/{client_id}/delete")
async def delete_client(
    request: Request,
    client_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    await check_csrf(request, session)
    await clients_service.delete_client(session=db, temporal=temporal, client_id=client_id)
    return back("/admin/clients", f"Client {client_id} deleted.")
