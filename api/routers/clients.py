import logging
from typing import IO, Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import guarded
from api.deps import IdPath, RouteQuery, SessionDep, SettingsDep, TemporalClientDep
from api.errors import ErrorItem, error_response
from api.imports.reading import (
    COLUMNS,
    CSV_TYPES,
    NDJSON_TYPES,
    FileFormat,
    FileRefused,
    TooLarge,
    UnsupportedFile,
    format_of,
    spool,
)
from api.imports.writing import Importer, OnDuplicate, OnError
from api.paging import PagingDep
from api.schemas.clients import (
    ATTRIBUTE_VALUE_MAX_LENGTH,
    ClientCreate,
    ClientPublic,
    ClientUpdate,
    ImportRefused,
    ImportReport,
    OptOut,
)
from api.schemas.common import FILTER_MAX_ITEMS, ErrorBody, OperatorCode, Page, Tag
from api.schemas.messages import MessagePublic
from api.services import clients as clients_service
from api.services import common as common_service
from api.services import messages as messages_service
from core.auth import Permission
from core.errors import InvalidRequest
from core.models import PHONE_LENGTH, MessageStatus
from core.settings import Settings
from core.templates import ATTRIBUTE_KEY

log = logging.getLogger(__name__)

router = APIRouter(prefix="/clients", tags=["clients"])

_IMPORT_BODY = {
    "required": True,
    "description": f"A CSV file with a header row (columns {', '.join(COLUMNS)} "
    "and `attributes.<key>`, one per attribute, in any order; only phone required), or JSON "
    "lines with the same fields (attributes also as an object `attributes`); as the raw "
    "body, or as the `file` field of a form. An empty cell is a field not given.",
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "phone,tag,timezone,attributes.name\n79161234567,vip,Europe/Moscow,Anna\n",
        },
        "application/x-ndjson": {
            "schema": {"type": "string"},
            "example": '{"phone": "79161234567", "tag": "vip", "attributes": {"name": "Anna"}}\n',
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


@router.post(
    "",
    response_model=ClientPublic,
    status_code=status.HTTP_201_CREATED,
    **guarded(Permission.CLIENTS_WRITE),
)
async def create_client(
    data: ClientCreate, session: SessionDep, settings: SettingsDep
) -> ClientPublic:
    """Add a client; the operator code and time zone are derived from the phone when omitted."""
    client = await clients_service.create_client(session=session, data=data, settings=settings)
    return ClientPublic.model_validate(client)


_IMPORT_GUARD = guarded(Permission.CLIENTS_WRITE)


@router.post(
    "/import",
    response_model=ImportReport,
    dependencies=_IMPORT_GUARD["dependencies"],
    openapi_extra={**_IMPORT_GUARD["openapi_extra"], "requestBody": _IMPORT_BODY},
    responses={
        413: {"model": ErrorBody, "description": "The file is larger than IMPORT_MAX_BYTES."},
        415: {"model": ErrorBody, "description": "Neither CSV nor JSON lines."},
        422: {
            "model": ImportRefused,
            "description": "The file cannot be read, or (on_error=reject_file) a row is "
            "invalid: then nothing is imported, and `report` lists the rejected rows.",
        },
    },
)
async def import_clients(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalClientDep,
    on_duplicate: Annotated[
        OnDuplicate,
        Query(
            description="A phone that is a client already: skip the row, or update the "
            "client with the row's non-empty fields (its attributes merged into the stored "
            "ones, key by key; none removed)."
        ),
    ] = OnDuplicate.SKIP,
    on_error: Annotated[
        OnError,
        Query(
            description="An invalid row: reject the whole file (nothing is imported), or "
            "leave out that row alone."
        ),
    ] = OnError.REJECT_FILE,
) -> ImportReport | JSONResponse:
    """Add (or update) many clients from one file, every row judged exactly as a single
    create. The rows are taken in one transaction: all of them, or (on_error=reject_file and
    an invalid row) none. The answer counts created, updated, skipped and rejected rows and
    lists the first rejected ones with their line and reason. About a million rows take well
    under a minute (see the README's Performance section); the request stays open until done."""
    body, file_format = await _import_body(request, settings)
    try:
        importer = Importer(
            session=session, settings=settings, on_duplicate=on_duplicate, on_error=on_error
        )
        report = await importer.run(body, file_format)
    finally:
        body.close()
    for kind, dispatch_id, client_id in importer.to_wake:
        await clients_service.wake_after_move(temporal, client_id, [(kind, dispatch_id)])
    log.info(
        "import %s: %d rows, %d created, %d updated, %d skipped, %d rejected",
        "taken" if report.committed else "rejected",
        report.rows,
        report.created,
        report.updated,
        report.skipped,
        report.rejected,
    )
    if report.committed:
        return report
    items = [
        ErrorItem(f"line {row.line}" + (f", {row.field}" if row.field else ""), row.message)
        for row in report.rejected_rows
    ]
    return error_response(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [ErrorItem(None, f"{report.rejected} invalid rows: nothing imported"), *items],
        report=report.model_dump(),
    )


async def _import_body(request: Request, settings: Settings) -> tuple[IO[bytes], FileFormat]:
    """The file, spooled, and its format: the raw body, or the form's `file` field."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except StarletteHTTPException as error:  # a malformed form, too many parts
            raise FileRefused(f"form: {error.detail}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UnsupportedFile("a form upload needs the file in a field named file")
        if upload.size is not None and upload.size > settings.import_max_bytes:
            raise TooLarge(
                f"the file is larger than {settings.import_max_bytes} bytes (IMPORT_MAX_BYTES)"
            )
        file_format = format_of(upload.content_type or "", upload.filename) or FileFormat.CSV
        return upload.file, file_format
    raw_format = format_of(content_type)
    if raw_format is None:
        raise UnsupportedFile(
            f"Content-Type {content_type or 'missing'}: send "
            + ", ".join((*CSV_TYPES, *NDJSON_TYPES))
            + " or multipart/form-data"
        )
    return await spool(request.stream(), max_bytes=settings.import_max_bytes), raw_format


@router.post("/opt-out", response_model=ClientPublic, **guarded(Permission.CLIENTS_OPT_OUT))
async def opt_out(data: OptOut, session: SessionDep) -> ClientPublic:
    """Put a number on the stop list: for the SMS provider's STOP callback or an unsubscribe
    page (a token with only `clients:opt-out` may call it). The client is never sent to
    again: each send checks, as it checks the end time, and its messages not yet sent end
    `opted_out`. Calling it again changes nothing. `PATCH /clients/{id}` with
    `{"opted_out": false}` takes the client off the list."""
    client = await clients_service.opt_out(session=session, phone=str(data.phone))
    return ClientPublic.model_validate(client)


@router.get("", response_model=Page[ClientPublic], **guarded(Permission.CLIENTS_READ))
async def list_clients(
    session: SessionDep,
    paging: PagingDep,
    tag: Annotated[
        list[Tag], Query(max_length=FILTER_MAX_ITEMS, description="Any of these tags.")
    ] = [],  # noqa: B006
    operator_code: Annotated[
        list[OperatorCode], Query(max_length=FILTER_MAX_ITEMS, description="Any of these codes.")
    ] = [],  # noqa: B006
    timezone: Annotated[
        list[str], Query(max_length=FILTER_MAX_ITEMS, description="Any of these zones.")
    ] = [],  # noqa: B006
    phone: Annotated[
        str | None,
        Query(
            pattern=rf"^\d{{1,{PHONE_LENGTH}}}$", description="Numbers starting with these digits."
        ),
    ] = None,
    opted_out: Annotated[
        bool | None,
        Query(description="Only those on the stop list (true), or only those off it (false)."),
    ] = None,
    attribute: Annotated[
        list[str],
        Query(
            max_length=FILTER_MAX_ITEMS,
            description="`key:value` (split at the first colon): only clients whose attribute "
            "`key` is exactly `value`. Repeated, all must hold.",
            examples=["city:Omsk"],
        ),
    ] = [],  # noqa: B006
) -> Page[ClientPublic]:
    """List clients by id. Filters combine (all must hold); a repeated one matches any of its
    values (`?tag=vip&tag=gold&operator_code=916`), but for `attribute`, whose every value must
    hold (`?attribute=city:Omsk&attribute=plan:gold`)."""
    clients, total, next_cursor = await clients_service.list_clients(
        session=session,
        tags=tag,
        operator_codes=operator_code,
        timezones=timezone,
        phone_prefix=phone,
        opted_out=opted_out,
        attributes=[_attribute_filter(given) for given in attribute],
        paging=paging,
    )
    return Page(
        items=[ClientPublic.model_validate(c) for c in clients],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )


def _attribute_filter(given: str) -> tuple[str, str]:
    """`key:value` as (key, value), or InvalidRequest on `attribute`."""
    key, colon, value = given.partition(":")
    if not colon:
        raise InvalidRequest(f"{given!r}: expected key:value, e.g. city:Omsk", field="attribute")
    if not ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidRequest(
            f"{key!r}: a key is a-z, 0-9 and _, starting with a letter, up to 32 characters",
            field="attribute",
        )
    if len(value) > ATTRIBUTE_VALUE_MAX_LENGTH or "\x00" in value:
        raise InvalidRequest(
            f"the value of {key}: up to {ATTRIBUTE_VALUE_MAX_LENGTH} characters, no NUL",
            field="attribute",
        )
    return key, value


@router.get("/{client_id}", response_model=ClientPublic, **guarded(Permission.CLIENTS_READ))
async def get_client(client_id: IdPath, session: SessionDep) -> ClientPublic:
    """One client."""
    return ClientPublic.model_validate(
        await common_service.get_client(session=session, client_id=client_id)
    )


@router.patch("/{client_id}", response_model=ClientPublic, **guarded(Permission.CLIENTS_WRITE))
async def update_client(
    client_id: IdPath, data: ClientUpdate, session: SessionDep, temporal: TemporalClientDep
) -> ClientPublic:
    """Change some of a client's fields; `attributes` sets the keys it gives, removes those
    given as null and keeps the others. Messages not yet sent follow: a new phone is where
    they go, a new time zone is the window they wait for (also a message already waiting)."""
    client = await clients_service.update_client(
        session=session, temporal=temporal, client_id=client_id, data=data
    )
    return ClientPublic.model_validate(client)


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    **guarded(Permission.CLIENTS_WRITE),
)
async def delete_client(
    client_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    erase: Annotated[
        bool,
        Query(
            description="Erase the client's personal data (a data subject's request): no "
            "message keeps the phone, nor a text rendered with the client's attributes."
        ),
    ] = False,
) -> None:
    """Delete a client and its attributes; its messages stay in the statistics with the phone
    they were for, and unsent ones end cancelled at once. With `erase=true` the phone and the
    personal texts rendered for the client go from its messages too (the counts stay), and its
    test sends go."""
    await clients_service.delete_client(
        session=session, temporal=temporal, client_id=client_id, erase=erase
    )


@router.get(
    "/{client_id}/messages",
    response_model=Page[MessagePublic],
    **guarded(Permission.CLIENTS_READ),
)
async def client_messages(
    client_id: IdPath,
    session: SessionDep,
    paging: PagingDep,
    status: MessageStatus | None = None,
    route: RouteQuery = None,
) -> Page[MessagePublic]:
    """One client's messages across every dispatch, by id, optionally of one status and of
    one send route."""
    return await messages_service.list_client_messages(
        session=session, client_id=client_id, status=status, route=route, paging=paging
    )
