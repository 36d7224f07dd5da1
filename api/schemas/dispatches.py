"""Bodies of a dispatch: its create and edit, a control command's reason, the dispatch as
answered, its events and its workflow's progress."""

from datetime import UTC, datetime, time
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from api.schemas.common import (
    FILTER_MAX_ITEMS,
    NO_NUL,
    Normalization,
    OperatorCode,
    RequestBody,
    Tag,
)
from api.schemas.statistics import StatusCounts
from core.contracts.shared import DeliveryShape
from core.models import (
    CONTROL_REASON_MAX_LENGTH,
    RESENDABLE_STATUSES,
    TEXT_MAX_LENGTH,
    DispatchStatus,
    MessageStatus,
)
from core.segments import Encoding
from core.windows import SendWindow, parse_hhmm


class DispatchFilter(RequestBody):
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


class WindowSchema(RequestBody):
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
TEXT_DESCRIPTION = (
    "1-1000 characters. More SMS parts than MAX_SEGMENTS (10 by default) is a 422 naming the "
    "count, e.g. `text: 12 SMS segments (UCS-2, 800 characters) exceeds MAX_SEGMENTS=10`. "
    'May hold placeholders, rendered for each client: `{{ key }}` and `{{ key | default("...") '
    '}}`, the key `phone`, `tag`, `timezone` or one of the client\'s attributes; `{{ "{{" }}` '
    "writes braces. Anything else of Jinja (statements, comments, attribute access, other "
    "filters, calls, operators) is a 422 on `text` naming it."
)
NORMALIZE_DESCRIPTION = (
    "Replace the text's typographic characters (curly quotes, dashes, the ellipsis, unicode "
    "spaces; invisible ones removed) by their GSM-7 look-alikes before it is stored and held "
    "to MAX_SEGMENTS; Cyrillic and every other character are kept. The answer's "
    "`normalization` says what it changed."
)


TRANSACTIONAL_DESCRIPTION = (
    "An order confirmation, a code: neither held back by FREQUENCY_CAP nor counted toward it. "
    "Set at creation only."
)


def _ends_after_start(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise ValueError("end_at must be after start_at")


class DispatchCreate(RequestBody):
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
    text: Text = Field(description=TEXT_DESCRIPTION)
    filter: DispatchFilter
    window: WindowSchema | None = None
    normalize_text: bool = Field(default=False, description=NORMALIZE_DESCRIPTION)
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
    transactional: bool = Field(default=False, description=TRANSACTIONAL_DESCRIPTION)

    @model_validator(mode="after")
    def _order(self) -> "DispatchCreate":
        _ends_after_start(self.start_at, self.end_at)
        if self.end_at <= datetime.now(UTC):
            raise ValueError("end_at is in the past: nothing could be sent")
        return self


class DispatchUpdate(RequestBody):
    """Fields to change. Before the start any field; while running or paused `end_at`
    (earlier or later), `text` (for messages not yet sent) and `window`, which reach the
    workflows already running; after the end nothing. `window: null` removes the window."""

    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    text: Text | None = Field(default=None, description=TEXT_DESCRIPTION)
    filter: DispatchFilter | None = None
    window: WindowSchema | None = None
    normalize_text: bool = Field(
        default=False,
        description=NORMALIZE_DESCRIPTION + " Without `text`, the stored text is normalized "
        "(an edit of `text` when it changes).",
    )

    @model_validator(mode="after")
    def _order(self) -> "DispatchUpdate":
        _ends_after_start(self.start_at, self.end_at)
        if self.end_at is not None and self.end_at <= datetime.now(UTC):
            raise ValueError("end_at is in the past: nothing could be sent")
        return self


# Why a status cannot be resent, for the 422.
_NOT_RESENDABLE = {
    MessageStatus.OPTED_OUT: "opted_out cannot be resent: those clients asked for no more messages",
    MessageStatus.DELIVERED: "delivered cannot be resent: those messages reached the phone",
    MessageStatus.PENDING: "pending cannot be resent: those messages are still to be sent",
    MessageStatus.RETRYING: "retrying cannot be resent: those messages are still being sent",
}


class DispatchResend(RequestBody):
    """A new dispatch to the clients of this one whose messages ended in one of `statuses`:
    the ones it did not reach. Its text and window are this dispatch's unless given."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "statuses": ["undelivered", "failed", "expired"],
                "start_at": "2026-12-03T09:00:00+03:00",
                "end_at": "2026-12-03T21:00:00+03:00",
            }
        }
    )

    statuses: list[MessageStatus] = Field(
        min_length=1,
        max_length=len(MessageStatus),
        description="Whose clients to send to again, any of "
        + ", ".join(f"`{s}`" for s in RESENDABLE_STATUSES)
        + " (`sent`: still sent RECEIPT_WAIT_HOURS after its send, at the time of this request: "
        "no receipt came). `opted_out`, `delivered`, `pending` and `retrying` are refused.",
        json_schema_extra={
            "items": {"type": "string", "enum": [str(s) for s in RESENDABLE_STATUSES]}
        },
    )
    start_at: AwareDatetime
    end_at: AwareDatetime
    text: Text | None = Field(
        default=None, description="The first dispatch's if not given. " + TEXT_DESCRIPTION
    )
    normalize_text: bool = Field(default=False, description=NORMALIZE_DESCRIPTION)
    window: WindowSchema | None = Field(
        default=None,
        description="As on POST /dispatches. Not given: the first dispatch's; `null`: none.",
    )

    @field_validator("statuses")
    @classmethod
    def _resendable(cls, statuses: list[MessageStatus]) -> list[MessageStatus]:
        for status in statuses:
            if status in _NOT_RESENDABLE:
                raise ValueError(_NOT_RESENDABLE[status])
        return sorted(set(statuses), key=list(MessageStatus).index)

    @model_validator(mode="after")
    def _order(self) -> "DispatchResend":
        _ends_after_start(self.start_at, self.end_at)
        if self.end_at <= datetime.now(UTC):
            raise ValueError("end_at is in the past: nothing could be sent")
        return self


class ControlBody(RequestBody):
    """Why the operator pauses, resumes or cancels (kept in the logs, and on cancelled
    messages)."""

    reason: (
        Annotated[str, StringConstraints(max_length=CONTROL_REASON_MAX_LENGTH, pattern=NO_NUL)]
        | None
    ) = None


class DispatchPublic(BaseModel):
    id: int
    start_at: datetime
    end_at: datetime
    text: str
    filter: DispatchFilter
    window: WindowSchema | None
    delivery: DeliveryShape
    transactional: bool = Field(default=False, description=TRANSACTIONAL_DESCRIPTION)
    status: DispatchStatus
    status_reason: str | None = Field(
        default=None, description="Why it is paused or cancelled, when it is."
    )
    # Only in the answer to a create: how many clients the filter matches now (0 is accepted,
    # since clients may be added before start_at, and said here).
    audience: int | None = Field(
        default=None,
        description="Only in the answer to a create: the clients its filter matches now.",
    )
    encoding: Encoding = Field(
        description="How its text goes out: `GSM-7` (160 characters in one SMS, 153 per part "
        "beyond; an extension character such as `€` or `{` counts 2) or `UCS-2` (any "
        "character outside GSM-7, Cyrillic among them: 70, then 67 per part)."
    )
    segments: int = Field(
        description="SMS parts each of its messages is sent in; for a personal text, those of "
        "the longest as rendered for a sample of its audience (the first 100 clients by id "
        "that have every key it needs)."
    )
    segments_total: int = Field(
        description="`segments` times its messages (`messages.total`). In the answer to a create, "
        "while it has no messages yet, `segments` times `audience`. What the gateways will count "
        "for the text as it is now (a message sent before an edit kept its own). For a personal "
        "text, the sample's mean parts instead of `segments`, rounded up, times the messages "
        "less the `unrendered` ones (in a create's answer: `audience` less the clients that "
        "lack a key it needs)."
    )
    normalization: Normalization | None = Field(
        default=None,
        description="Only in the answer to a create or edit with `normalize_text: true` (null "
        "otherwise): whether the text changed, and its encoding and SMS parts before and "
        "after.",
    )
    resent_from: int | None = Field(
        default=None,
        description="A resend's first dispatch: its audience is that dispatch's clients whose "
        "messages had one of `resend_statuses` (its `filter` is the first's, for the record).",
    )
    resend_statuses: list[MessageStatus] | None = Field(
        default=None, description="A resend's: the statuses of the first's messages it takes."
    )
    resent_as: list[int] = Field(
        default_factory=list, description="The resends of this dispatch, by id."
    )
    schedule_id: int | None = Field(
        default=None,
        description="The schedule whose run made it (kept after the schedule's deletion); "
        "null for one made otherwise.",
    )
    created_at: datetime
    updated_at: datetime
    messages: StatusCounts


class DispatchEventPublic(BaseModel):
    """A control action on a dispatch: create, edit, pause, resume, cancel, delete, resend."""

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


class CohortState(BaseModel):
    cohort: str = Field(description="A zone name, or `all` for a dispatch without a window.")
    phase: str
    sent: int = 0
    handed_off: int = 0
    waiting_until: datetime | None = Field(
        default=None, description="When its sleep ends (its window opening), if asleep."
    )
    batches_in_flight: int = Field(
        default=0, description="Its batch activities running now (up to its parallel batches)."
    )


class DispatchProgressPublic(BaseModel):
    """The dispatch workflow's own account, and its cohorts'."""

    available: bool = Field(
        description="False when no workflow answers (not started, long finished, no worker)."
    )
    phase: str | None = None
    clients_laid_out: int = 0
    cohorts: list[CohortState] = Field(default_factory=list)
