"""Request and response bodies, apart from the table models."""

from datetime import UTC, datetime, time
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.contracts.shared import DeliveryShape
from core.models import TAG_MAX_LENGTH, TEXT_MAX_LENGTH, DispatchStatus, MessageStatus
from core.phones import normalize_phone, validate_timezone
from core.windows import SendWindow, parse_hhmm

# PostgreSQL text cannot hold NUL characters: refused here, not failed on at insert.
NO_NUL = r"^[^\x00]*$"
OperatorCode = Annotated[str, StringConstraints(pattern=r"^\d{3}$")]
Tag = Annotated[str, StringConstraints(max_length=TAG_MAX_LENGTH, pattern=NO_NUL)]
FILTER_MAX_ITEMS = 100

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, by id."""

    items: list[T]
    total: int | None = Field(
        description="Every item that matched: on a page asked for without a cursor, or with "
        "with_total=true; else null."
    )
    limit: int
    offset: int
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page; null on the last page.",
    )


# Clients


def _phone(value: Any) -> str:
    return normalize_phone(value)


class ClientCreate(BaseModel):
    """A new client. operator_code defaults to digits 2-4 of the phone; timezone to the
    number's own zone, or the service's default zone."""

    model_config = ConfigDict(json_schema_extra={"example": {"phone": "79161234567", "tag": "vip"}})

    phone: str | int = Field(description="11 digits 7XXXXXXXXXX, a Russian mobile number")
    operator_code: OperatorCode | None = None
    tag: Tag = ""
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Asia/Yekaterinburg")
    opted_out: bool = Field(
        default=False, description="On the stop list: never sent to (checked at each send)."
    )

    _normalize_phone = field_validator("phone", mode="before")(_phone)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else validate_timezone(value)


class ClientUpdate(BaseModel):
    """Fields to change; a new phone without an operator_code re-derives the code."""

    phone: str | int | None = None
    operator_code: OperatorCode | None = None
    tag: Tag | None = None
    timezone: str | None = None
    opted_out: bool | None = Field(
        default=None, description="true puts the client on the stop list, false takes it off."
    )

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: Any) -> str | None:
        return None if value is None else normalize_phone(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else validate_timezone(value)


class OptOut(BaseModel):
    """A number that asked for no more messages (a STOP reply, an unsubscribe link)."""

    model_config = ConfigDict(json_schema_extra={"example": {"phone": "79161234567"}})

    phone: str | int = Field(description="The client's number, in any form a create takes.")

    _normalize_phone = field_validator("phone", mode="before")(_phone)


class ClientPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    phone: str
    operator_code: str
    tag: str
    timezone: str
    opted_out: bool
    opted_out_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RejectedRow(BaseModel):
    """A row an import left out: its line in the file (the header is line 1), the field at
    fault (None for the row as a whole) and why."""

    line: int
    field: str | None
    message: str


class ImportReport(BaseModel):
    """What an import did with each row of the file."""

    rows: int = Field(default=0, description="Rows read (blank lines aside).")
    created: int = 0
    updated: int = Field(
        default=0, description="Rows that changed an existing client (on_duplicate=update)."
    )
    skipped: int = Field(
        default=0, description="Rows whose phone was a client already (on_duplicate=skip)."
    )
    rejected: int = Field(default=0, description="Invalid rows, all of them counted.")
    rejected_rows: list[RejectedRow] = Field(
        default_factory=list,
        description="The first IMPORT_ERRORS_SHOWN (100) invalid rows, in file order.",
    )
    committed: bool = Field(
        default=False,
        description="Whether the rows were taken: false when on_error=reject_file found an "
        "invalid row, and then nothing was.",
    )


# Dispatches


class DispatchFilter(BaseModel):
    """Which clients a dispatch targets. A client matches when its operator code is in
    operator_codes (if given) and its tag is in tags (if given). Both empty would target every
    client, which must be asked for with `all: true`."""

    operator_codes: list[OperatorCode] = Field(default_factory=list, max_length=FILTER_MAX_ITEMS)
    tags: list[Tag] = Field(default_factory=list, max_length=FILTER_MAX_ITEMS)
    all: bool = False

    @model_validator(mode="after")
    def _explicit_everyone(self) -> "DispatchFilter":
        targets_everyone = not self.operator_codes and not self.tags
        if targets_everyone and not self.all:
            raise ValueError(
                "filter is empty and would target every client; "
                "give operator_codes or tags, or set all: true"
            )
        if self.all and not targets_everyone:
            raise ValueError("all: true cannot be combined with operator_codes or tags")
        return self


class WindowSchema(BaseModel):
    """Local times of day ("HH:MM") in each client's own zone; end before start crosses
    midnight (22:00-06:00). The end is exclusive."""

    start: str = Field(examples=["09:00"])
    end: str = Field(examples=["21:00"])

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        parse_hhmm(value)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "WindowSchema":
        SendWindow(start=parse_hhmm(self.start), end=parse_hhmm(self.end))
        return self

    def times(self) -> tuple[time, time]:
        return parse_hhmm(self.start), parse_hhmm(self.end)


Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_LENGTH, pattern=NO_NUL)]


def _ends_after_start(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise ValueError("end_at must be after start_at")


class DispatchCreate(BaseModel):
    """A new dispatch; it starts by itself at start_at, and nothing is sent after end_at."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "start_at": "2026-12-01T09:00:00+03:00",
                "end_at": "2026-12-02T21:00:00+03:00",
                "text": "Our shop is open on Sunday",
                "filter": {"operator_codes": ["916"], "tags": ["vip"]},
                "window": {"start": "09:00", "end": "21:00"},
            }
        }
    )

    start_at: AwareDatetime
    end_at: AwareDatetime
    text: Text
    filter: DispatchFilter
    window: WindowSchema | None = None
    delivery: DeliveryShape = Field(
        default=DeliveryShape.COHORTS,
        description=(
            "`cohorts` (default): clients whose window opens together (one time zone) wait in "
            "one workflow and are sent in batches; a client whose send fails gets a workflow "
            "of its own that retries. `per_client`: one workflow per client from the start, "
            "each visible in the Temporal UI (for small dispatches: it moves about 10 "
            "messages per second on one machine)."
        ),
    )

    @model_validator(mode="after")
    def _order(self) -> "DispatchCreate":
        _ends_after_start(self.start_at, self.end_at)
        if self.end_at <= datetime.now(UTC):
            raise ValueError("end_at is in the past: nothing could be sent")
        return self


class DispatchUpdate(BaseModel):
    """Fields to change. Before the start any field; while running or paused `end_at`
    (earlier or later), `text` (for messages not yet sent) and `window`, which reach the
    workflows already running; after the end nothing. `window: null` removes the window."""

    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    text: Text | None = None
    filter: DispatchFilter | None = None
    window: WindowSchema | None = None

    @model_validator(mode="after")
    def _order(self) -> "DispatchUpdate":
        _ends_after_start(self.start_at, self.end_at)
        if self.end_at is not None and self.end_at <= datetime.now(UTC):
            raise ValueError("end_at is in the past: nothing could be sent")
        return self


class ControlBody(BaseModel):
    """Why the operator pauses, resumes or cancels (kept in the logs, and on cancelled
    messages)."""

    reason: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None


class StatusCounts(BaseModel):
    """Messages counted by status."""

    pending: int = 0
    retrying: int = 0
    sent: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    opted_out: int = Field(default=0, description="Not sent: the client opted out first.")
    total: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> "StatusCounts":
        return cls(**counts, total=sum(counts.values()))


class DispatchPublic(BaseModel):
    id: int
    start_at: datetime
    end_at: datetime
    text: str
    filter: DispatchFilter
    window: WindowSchema | None
    delivery: DeliveryShape
    status: DispatchStatus
    status_reason: str | None = Field(
        default=None, description="Why it is paused or cancelled, when it is."
    )
    # Only in the answer to a create: how many clients the filter matches now (0 is accepted,
    # since clients may be added before start_at, and said here).
    audience: int | None = None
    created_at: datetime
    updated_at: datetime
    messages: StatusCounts


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dispatch_id: int
    client_id: int | None
    phone: str | None = Field(
        description="The number it goes (or went) to; kept when the client is deleted."
    )
    timezone: str | None = Field(
        default=None, description="The client's zone now (None once the client is deleted)."
    )
    status: MessageStatus
    attempts: int
    last_error: str | None
    waiting_until: datetime | None = Field(
        default=None,
        description="For a pending message outside its send window: when the window next opens.",
    )
    created_at: datetime
    sent_at: datetime | None


class DispatchEventPublic(BaseModel):
    """A control action on a dispatch: create, edit, pause, resume, cancel, delete."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    dispatch_id: int
    at: datetime
    action: str
    actor: str = Field(
        description="api (the caller), temporal (a signal from the Temporal UI or CLI), "
        "or worker (the service: refused credentials, error budget)."
    )
    reason: str | None
    details: dict[str, Any] | None


class DispatchStats(BaseModel):
    """One dispatch's messages counted by status."""

    dispatch_id: int
    status: DispatchStatus
    messages: StatusCounts


class OverallStats(BaseModel):
    """Every dispatch with its message counts, and the totals over all of them."""

    dispatches: list[DispatchStats]
    totals: StatusCounts
    dispatch_count: int
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page of dispatches."
    )


class Liveness(BaseModel):
    status: str


class Health(BaseModel):
    status: str
    database: str
    temporal: str


class ErrorField(BaseModel):
    field: str | None = Field(
        description="Dotted path of the field, e.g. `window.start`; null "
        "when the problem is the request as a whole."
    )
    message: str


class ErrorBody(BaseModel):
    """The one shape of every error answer."""

    detail: str = Field(description="Every problem on one line, each prefixed by its field.")
    errors: list[ErrorField]


class ImportRefused(ErrorBody):
    """An import that took nothing: the error shape, and what became of each row."""

    report: ImportReport | None = None


# Insights (the admin page reads them too)


class AudienceCount(BaseModel):
    """How many clients a dispatch with this filter would target now."""

    clients: int = Field(description="Matching clients, the stop list left out.")
    operator_codes: list[str]
    tags: list[str]


class TimelinePoint(BaseModel):
    at: datetime = Field(description="Start of the bucket (UTC).")
    sent: int


class RemoteHealth(BaseModel):
    """The remote's error rate over the last `hours`."""

    hours: int
    attempts: int = Field(description="Requests made for the messages that changed meanwhile.")
    sent: int
    failed: int = Field(description="Messages the remote refused for good.")
    error_rate: float | None = Field(
        description="Share of those requests that did not end in `sent` (null without any)."
    )


class FailureReason(BaseModel):
    status: MessageStatus
    reason: str
    count: int


class CohortState(BaseModel):
    cohort: str = Field(description="A zone name, or `all` for a dispatch without a window.")
    phase: str
    sent: int = 0
    handed_off: int = 0
    waiting_until: datetime | None = Field(
        default=None, description="When its sleep ends (its window opening), if asleep."
    )


class DispatchProgressPublic(BaseModel):
    """The dispatch workflow's own account, and its cohorts'."""

    available: bool = Field(
        description="False when no workflow answers (not started, long finished, no worker)."
    )
    phase: str | None = None
    clients_laid_out: int = 0
    cohorts: list[CohortState] = Field(default_factory=list)
