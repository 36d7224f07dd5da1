"""What every admin page module uses: its router's shape, the templates (with the domain's facts
they read as globals), rendering, the redirect after an action, a refused form's errors in the
form's words, the zone the operator reads times in, and the page size."""

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup
from pydantic import ValidationError

from api.admin.session import AdminSession, current_session
from api.imports.reading import COLUMNS
from api.schemas.statistics import StatusCounts
from core.auth import Permission
from core.control import TRANSITIONS, Command
from core.errors import Conflict
from core.models import (
    CONTROL_REASON_MAX_LENGTH,
    FINAL_MESSAGE_STATUSES,
    TEXT_MAX_LENGTH,
    UNFINISHED_DISPATCH_STATUSES,
    WENT_OUT_STATUSES,
    DispatchStatus,
    MessageStatus,
)
from core.windows import RUSSIA_ZONES

SessionUser = Annotated[AdminSession, Depends(current_session)]
PAGE_SIZE = 50
NOTICE_MAX_LENGTH = 300


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


# The cookie that keeps the zone the operator reads times in (not a secret: a preference).
ZONE_COOKIE = "mailing_admin_zone"
_NOT_ZONES = {"Factory", "localtime", "posixrules"}
# Every IANA zone the system knows: Russia's first (where the clients mostly are), then UTC,
# then the rest by name.
OTHER_ZONES = tuple(
    sorted(zoneinfo.available_timezones() - set(RUSSIA_ZONES) - _NOT_ZONES - {"UTC"})
)
ZONES = (*RUSSIA_ZONES, "UTC", *OTHER_ZONES)
_KNOWN_ZONES = frozenset(ZONES)


def known_zone(name: str) -> bool:
    return name in _KNOWN_ZONES


def zone_of(request: Request) -> str:
    """The zone the operator picked (its cookie), else the service's DEFAULT_TIMEZONE."""
    chosen = request.cookies.get(ZONE_COOKIE, "")
    if known_zone(chosen):
        return chosen
    return str(request.app.state.settings.default_timezone)


TIME_FORMATS = {
    "minute": "%Y-%m-%d %H:%M",
    "second": "%Y-%m-%d %H:%M:%S",
    "clock": "%H:%M:%S",
}


@pass_context
def when(context: Mapping[str, Any], value: datetime | None, style: str = "minute") -> Markup:
    """An instant in the operator's zone, the same in UTC on hover (and for machines)."""
    if value is None:
        return Markup("")
    zone = context.get("zone") or zone_of(context["request"])
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}" title="{} UTC">{}</time>').format(
        utc.isoformat(),
        utc.strftime(TIME_FORMATS["second"]),
        value.astimezone(ZoneInfo(zone)).strftime(TIME_FORMATS[style]),
    )


def plural(count: int, one: str, many: str | None = None) -> str:
    """`1 dispatch`, `2 dispatches`."""
    return f"{count} {one if count == 1 else many or one + 's'}"


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["when"] = when
templates.env.globals.update(
    Permission=Permission,
    MessageStatus=MessageStatus,
    DispatchStatus=DispatchStatus,
    Command=Command,
    TRANSITIONS=TRANSITIONS,
    UNFINISHED_DISPATCH_STATUSES=UNFINISHED_DISPATCH_STATUSES,
    IMPORT_COLUMNS=COLUMNS,
    TEXT_MAX_LENGTH=TEXT_MAX_LENGTH,
    CONTROL_REASON_MAX_LENGTH=CONTROL_REASON_MAX_LENGTH,
    finished_messages=finished_messages,
    went_out=went_out,
    delivered_share=delivered_share,
    plural=plural,
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
    """A page (or a part of one, for htmx), with what every page reads: the session, the zone
    of its times, and the notice an action sent it back with."""
    notice = request.query_params.get("notice", "")[:NOTICE_MAX_LENGTH]
    return templates.TemplateResponse(
        request,
        name,
        {"session": session, "zone": zone_of(request), "notice": notice, **context},
        status_code=status_code,
    )


def back(url: str, notice: str | None = None) -> RedirectResponse:
    if notice:
        url += ("&" if "?" in url else "?") + "notice=" + quote(notice)
    return RedirectResponse(url, status_code=303)


@dataclass(frozen=True)
class FormField:
    """A field as its form names it, and the id of its input."""

    label: str
    target: str | None = None


@dataclass(frozen=True)
class FormError:
    """A refused form's problem in the form's words: the field's label (`field`, None for the
    form as a whole), what to do about it, and the input to link to."""

    field: str | None
    message: str
    target: str | None = None


# The API's words for a problem, in the form's, with the field it is about when the API names
# none (a check of the whole body): (pattern, field or None to keep the API's, replacement).
PHRASES: tuple[tuple[re.Pattern[str], str | None, str], ...] = tuple(
    (re.compile(pattern), field, replacement)
    for pattern, field, replacement in (
        (
            r"^filter is empty and would target every client.*",
            "filter",
            "name a tag or an operator code, or tick \u201cevery client\u201d",
        ),
        (
            r"^all: true cannot be combined.*",
            "filter",
            "either name tags or operator codes, or tick \u201cevery client\u201d: not both",
        ),
        (r"^end_at must be after start_at$", "end_at", "choose a time after the start"),
        (
            r"^end_at is in the past.*",
            "end_at",
            "that time has passed, so nothing could be sent: choose a later one",
        ),
        (r"^expected a time as HH:MM.*, got ''$", None, "type a time, such as 09:00"),
        (r"^expected a time as HH:MM.*", None, "type a time as HH:MM, such as 09:00"),
        (r"^expected a time between 00:00 and 23:59.*", None, "type a time from 00:00 to 23:59"),
        (r"^Input should be a valid datetime.*", None, "pick a date and a time"),
        (r"^Field required$", None, "fill this in"),
        (r"^String should have at least 1 character$", None, "type something here"),
        (r"^String should match pattern '\^\\d\{3\}\$'$", None, "three digits, such as 916"),
        (r"^String should have at most (\d+) characters$", None, "at most \\1 characters"),
        (r"^List should have at most (\d+) items.*", None, "at most \\1 of them"),
        (r"^Input should be '.*'$", None, "choose one of the options"),
        (
            r"^(\d+) SMS segments \((.*), (\d+) characters\) exceeds MAX_SEGMENTS=(\d+)$",
            None,
            "\\3 characters make \\1 SMS parts (\\2): at most \\4 are allowed, so shorten it",
        ),
    )
)
# The API's field names that may remain in a message, as the form says them.
_API_WORDS = (("start_at", "the start"), ("end_at", "the end"), ("operator_codes", "codes"))


def form_errors(error: Exception, fields: Mapping[str, FormField] | None = None) -> list[FormError]:
    """A refused form's errors in the form's words: each field named by its label in `fields`
    (keyed by the API's dotted field, the longest that names it), the message saying what to
    type; a value of a list (`filter.tags.1`) quoted."""
    if isinstance(error, ValidationError):
        return [
            _in_form_words(
                ".".join(str(part) for part in item["loc"] if part != "[key]") or None,
                str(item["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, "),
                item,
                fields or {},
            )
            for item in error.errors()
        ]
    field = getattr(error, "field", None)
    if isinstance(error, Conflict) and "phone" in str(error):
        field = "phone"
    return [_in_form_words(field, str(error), {}, fields or {})]


def _in_form_words(
    field: str | None, message: str, item: Mapping[str, Any], fields: Mapping[str, FormField]
) -> FormError:
    if item.get("type") == "extra_forbidden":
        message = "not a field of this form"
    for pattern, named, replacement in PHRASES:
        if pattern.match(message):
            message = pattern.sub(replacement, message)
            field = named or field
            break
    for word, said in _API_WORDS:
        message = message.replace(word, said)
    if field is None:
        return FormError(None, message)
    parts = field.split(".")
    for cut in range(len(parts), 0, -1):
        known = fields.get(".".join(parts[:cut]))
        if known is None:
            continue
        rest = parts[cut:]
        value = item.get("input")
        if rest and rest[0].isdigit() and isinstance(value, str) and value not in message:
            message = f"\u201c{value}\u201d: {message}"
        return FormError(known.label, message, known.target)
    return FormError(field.replace("_", " "), message)


def error_status(error: Exception) -> int:
    return 409 if isinstance(error, Conflict) else 422


def split_list(value: str) -> list[str]:
    """A form's list: values separated by commas or semicolons."""
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
