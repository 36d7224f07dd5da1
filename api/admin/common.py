"""What every admin page module uses: its router's shape, the templates (with the domain's facts
they read as globals), rendering, the redirect after an action, a refused form's errors, and
the page size."""

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from api.admin.session import AdminSession, current_session
from api.errors import ErrorItem
from api.imports.reading import COLUMNS
from api.schemas.statistics import StatusCounts
from core.auth import Permission
from core.control import TRANSITIONS, Command
from core.errors import Conflict
from core.models import (
    FINAL_MESSAGE_STATUSES,
    TEXT_MAX_LENGTH,
    UNFINISHED_DISPATCH_STATUSES,
    WENT_OUT_STATUSES,
    DispatchStatus,
    MessageStatus,
)

SessionUser = Annotated[AdminSession, Depends(current_session)]
PAGE_SIZE = 50


def finished_messages(counts: StatusCounts) -> int:
    """Messages that reached a final status."""
    return sum(getattr(counts, status) for status in FINAL_MESSAGE_STATUSES)


def went_out(counts: StatusCounts) -> int:
    """Messages that went out: sent, and what their receipts made of them."""
    return sum(getattr(counts, status) for status in WENT_OUT_STATUSES)


def delivered_share(counts: StatusCounts) -> str:
    """`Delivered 180 of 200 sent (90 %)`, of the messages that went out (no share before
    one did)."""
    sent = went_out(counts)
    share = f" ({100 * counts.delivered // sent} %)" if sent else ""
    return f"Delivered {counts.delivered} of {sent} sent{share}"


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals.update(
    Permission=Permission,
    MessageStatus=MessageStatus,
    DispatchStatus=DispatchStatus,
    Command=Command,
    TRANSITIONS=TRANSITIONS,
    UNFINISHED_DISPATCH_STATUSES=UNFINISHED_DISPATCH_STATUSES,
    IMPORT_COLUMNS=COLUMNS,
    TEXT_MAX_LENGTH=TEXT_MAX_LENGTH,
    finished_messages=finished_messages,
    went_out=went_out,
    delivered_share=delivered_share,
)


def admin_router() -> APIRouter:
    """A router of admin pages: under /admin, HTML, left out of the OpenAPI document."""
    return APIRouter(prefix="/admin", include_in_schema=False, default_response_class=HTMLResponse)


def render(
    request: Request,
    name: str,
    session: AdminSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"session": session, **context}, status_code=status_code
    )


def back(url: str, notice: str | None = None) -> RedirectResponse:
    if notice:
        url += ("&" if "?" in url else "?") + "notice=" + quote(notice)
    return RedirectResponse(url, status_code=303)


def form_errors(error: Exception) -> list[ErrorItem]:
    """A refused form's errors, by field: the model's, or a domain error's message."""
    if isinstance(error, ValidationError):
        return [ErrorItem.of_validation(item) for item in error.errors()]
    field = getattr(error, "field", None)
    if isinstance(error, Conflict) and "phone" in str(error):
        field = "phone"
    return [ErrorItem(field, str(error))]


def error_status(error: Exception) -> int:
    return 409 if isinstance(error, Conflict) else 422


def split_list(value: str) -> list[str]:
    """A form's list: values separated by commas or semicolons."""
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
