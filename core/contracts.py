"""The Temporal side of the domain: workflow ids, signal names and every input and output.

One dataclass in and one out for each workflow, activity and signal, so that fields can be added
without breaking running workflows. They carry ids and small values, never rows or audiences.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from core.windows import SendWindow, format_hhmm, parse_hhmm

if TYPE_CHECKING:
    from core.settings import Settings

# Error types the workflows and retry policies name.
REMOTE_REJECTED = "RemoteRejected"  # a 4xx other than 408/429: permanent, never retried
REMOTE_UNAVAILABLE = "RemoteUnavailable"  # timeouts, refused connections, 5xx, 429, garbage
CONTROL_REFUSED = "ControlRefused"  # a pause, resume or cancel the dispatch's status refuses
DISPATCH_NOT_FOUND = "DispatchNotFound"  # a command for a dispatch deleted meanwhile
CONTROL_UPDATE = "control"  # the dispatch workflow's update: pause, resume or cancel
REPORT_WORKFLOW = "DailyReportWorkflow"

# Signal names, shared by the senders and the workflows that define them.
DELIVERY_FINISHED = "delivery_finished"
COHORT_FINISHED = "cohort_finished"
AUDIENCE_COMPLETE = "audience_complete"
DISPATCH_CHANGED = "dispatch_changed"
CLIENT_MOVED = "client moved"  # the reason of a dispatch_changed sent for a client's new zone

# The cohort of a dispatch without a window: every client can be sent to at once.
COHORT_ALL = "all"
# start_to_close of every database activity a workflow runs.
DB_TIMEOUT = timedelta(seconds=30)
# Errors kept on a message row are cut to this many characters (the column's size).
ERROR_MAX_LENGTH = 500


class DeliveryShape(StrEnum):
    """How a dispatch sends: zone cohorts with batch sends, or one child workflow per client."""

    COHORTS = "cohorts"
    PER_CLIENT = "per_client"


class SendOutcome(StrEnum):
    """What one send attempt ended in, besides the message statuses it may set."""

    OUTSIDE_WINDOW = "outside_window"
    PAUSED = "paused"
    DELETED = "deleted"
    # Why a batch stopped early, besides the above.
    REMOTE_DOWN = "remote_down"  # its breaker opened: failures in a row
    FAILED = "failed"  # a send or a write raised: the attempt fails and is retried
    # The worker is stopping (SIGTERM): no new request; the cohort's next batch goes to
    # another worker at once.
    WORKER_SHUTDOWN = "worker_shutdown"


def dispatch_workflow_id(dispatch_id: int) -> str:
    return f"dispatch-{dispatch_id}"


def delivery_workflow_id(dispatch_id: int, client_id: int) -> str:
    return f"dispatch-{dispatch_id}-client-{client_id}"


def cohort_workflow_id(dispatch_id: int, cohort: str) -> str:
    """`dispatch-7-zone-Asia/Tokyo`, or `dispatch-7-zone-all` without a window."""
    return f"dispatch-{dispatch_id}-zone-{cohort}"


@dataclass
class Window:
    """A send window as local "HH:MM" times; end before start crosses midnight."""

    start: str
    end: str

    @classmethod
    def of(cls, window: SendWindow | None) -> "Window | None":
        if window is None:
            return None
        return cls(format_hhmm(window.start), format_hhmm(window.end))

    def send_window(self) -> SendWindow:
        return SendWindow(start=parse_hhmm(self.start), end=parse_hhmm(self.end))


@dataclass
class SendOptions:
    """How deliveries send: read from settings when the dispatch starts, kept for its life."""

    task_queue: str = "mailing-send"
    attempt_timeout_seconds: float = 15.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    # Children started per workflow run before it continues as new, bounding its history.
    children_per_run: int = 2000
    page_size: int = 500
    # Cohort shape: clients laid out per page, messages per batch activity, and the
    # consecutive transient failures after which a batch stops and its cohort backs off.
    layout_page_size: int = 10_000
    batch_size: int = 500
    breaker_failures: int = 20
    # History events after which a dispatch or cohort run continues as new.
    history_limit: int = 5000

    @classmethod
    def from_settings(cls, settings: "Settings") -> "SendOptions":
        """The one place settings become send options (kept by a dispatch for its life)."""
        return cls(
            task_queue=settings.temporal_send_task_queue,
            attempt_timeout_seconds=settings.send_timeout_seconds + 5,
            retry_initial_seconds=settings.send_retry_initial_seconds,
            retry_max_seconds=settings.send_retry_max_seconds,
            page_size=settings.audience_page_size,
            batch_size=settings.send_batch_size,
        )


@dataclass
class DispatchInput:
    """Starts (or continues as new) the workflow of one dispatch."""

    dispatch_id: int
    send: SendOptions = field(default_factory=SendOptions)
    # Audience cursor: clients with ids above it are still to be started (continue-as-new).
    after_client_id: int = 0
    audience_done: bool = False
    started: int = 0
    # Cohort shape: the cohorts started so far (zone names, or COHORT_ALL), and those done.
    cohorts: list[str] = field(default_factory=list)
    cohorts_finished: list[str] = field(default_factory=list)


@dataclass
class DispatchResult:
    dispatch_id: int
    status: str
    messages: int


@dataclass
class DispatchPlan:
    """What the dispatch workflow needs to know of its row; reloaded on every `refresh`."""

    dispatch_id: int
    status: str
    start_at: datetime
    end_at: datetime
    window: Window | None
    found: bool = True
    delivery: str = DeliveryShape.COHORTS


@dataclass
class LoadDispatchInput:
    dispatch_id: int


@dataclass
class SetDispatchStatusInput:
    dispatch_id: int
    status: str
    # Only rows now in one of these statuses change (empty: any).
    from_statuses: list[str] = field(default_factory=list)


@dataclass
class SetDispatchStatusResult:
    changed: bool


@dataclass
class AudiencePageInput:
    """Selects the next page of matching clients and creates their messages (idempotent)."""

    dispatch_id: int
    after_client_id: int
    limit: int


@dataclass
class Recipient:
    client_id: int
    message_id: int
    timezone: str


@dataclass
class AudiencePage:
    recipients: list[Recipient]
    # Highest client id of the page; the next page starts above it.
    last_client_id: int
    done: bool


@dataclass
class LayOutInput:
    """Creates the messages of the next page of matching clients (idempotent)."""

    dispatch_id: int
    after_client_id: int
    limit: int
    # Per-client shape: the page's recipients come back, and their messages get no cohort.
    per_client: bool = False


@dataclass
class LayOutResult:
    # Cohorts present in this page (zone names, or COHORT_ALL), each once.
    cohorts: list[str]
    last_client_id: int
    done: bool
    laid_out: int
    recipients: list[Recipient] = field(default_factory=list)


@dataclass
class CohortInput:
    """Starts (or continues as new) the cohort of one zone of one dispatch."""

    dispatch_id: int
    cohort: str
    send: SendOptions = field(default_factory=SendOptions)
    # Every pending message of the cohort with an id up to this one has been dealt with.
    after_message_id: int = 0
    audience_done: bool = False
    sent: int = 0
    handed_off: int = 0


@dataclass
class CohortProgress:
    """Query answer: where the cohort is and what it did so far."""

    phase: str
    sent: int
    handed_off: int
    # When its sleep ends (its zone's window opening, a backoff, a pause's recheck), if asleep.
    waiting_until: datetime | None = None
    batches: int = 0


@dataclass
class CohortResult:
    dispatch_id: int
    cohort: str
    sent: int
    handed_off: int


@dataclass
class SendBatchInput:
    """Sends the next pending messages of one cohort, in message id order."""

    dispatch_id: int
    cohort: str
    after_message_id: int
    limit: int
    breaker_failures: int = 20
    # A message whose send failed is retried by its own delivery after at least this long.
    retry_delay_seconds: float = 1.0


@dataclass
class Handoff:
    """A message the batch leaves to a delivery workflow of its own."""

    message_id: int
    client_id: int
    timezone: str
    # Not before this many seconds from now (the retry backoff, or the remote's Retry-After).
    delay_seconds: float = 0.0


@dataclass
class SendBatchResult:
    # The cohort's cursor after this batch (unchanged when the batch stopped early).
    last_message_id: int
    # Fewer pending messages than the limit were found: none are left for now.
    exhausted: bool
    sent: int = 0
    finished: int = 0  # moved to another final status: failed, expired, cancelled
    handoffs: list[Handoff] = field(default_factory=list)
    # Why the batch stopped before its end: outside_window, paused, remote_down, deleted.
    stopped: str | None = None
    # When the cohort may try again (the window's next opening, a pause's recheck).
    not_before: datetime | None = None


@dataclass
class ConfirmHandoffsInput:
    """The deliveries of these messages are started."""

    message_ids: list[int]


@dataclass
class ConfirmHandoffsResult:
    confirmed: int


@dataclass
class FinishCohortInput:
    """Moves the cohort's pending messages to a final status (expired at its end time)."""

    dispatch_id: int
    cohort: str
    status: str
    error: str


@dataclass
class FinishCohortResult:
    changed: int


@dataclass
class AudienceComplete:
    """Signal from the dispatch to its cohorts: every message is laid out."""


@dataclass
class CohortFinished:
    """Signal from a cohort to its dispatch: it has nothing more to send."""

    cohort: str


@dataclass
class CountOpenInput:
    dispatch_id: int


@dataclass
class CountOpenResult:
    open: int
    total: int


@dataclass
class DeliveryInput:
    """One message to one client: wait for the client's window, then send."""

    dispatch_id: int
    client_id: int
    message_id: int
    timezone: str
    start_at: datetime
    end_at: datetime
    window: Window | None
    send: SendOptions = field(default_factory=SendOptions)
    # A hand-off from a batch whose send just failed: the first attempt waits this long.
    delay_seconds: float = 0.0


@dataclass
class DeliveryResult:
    message_id: int
    status: str


@dataclass
class SendInput:
    """One attempt to send message_id; the row is re-read so every attempt sees the truth."""

    message_id: int


@dataclass
class SendResult:
    """status: sent, expired, cancelled, or `outside_window` with the next opening."""

    message_id: int
    status: str
    next_open_at: datetime | None = None


@dataclass
class FinishMessageInput:
    """Moves an open message (pending or retrying) to a final status."""

    message_id: int
    status: str
    error: str | None = None


@dataclass
class FinishMessageResult:
    changed: bool


@dataclass
class ControlInput:
    """A pause, resume or cancel of a dispatch, from the Temporal UI or CLI (signals of the same
    names on the dispatch workflow) or from the API."""

    dispatch_id: int
    command: str
    reason: str | None = None
    # Who asked: "temporal" for a signal from the Temporal UI or CLI, or the API's actor.
    actor: str = "temporal"


@dataclass
class ControlUpdate:
    """The `control` update of the dispatch workflow (what the API sends): the command, and
    the reason and actor kept with it."""

    command: str
    reason: str | None = None
    actor: str = "api"


@dataclass
class WakeDeliveriesInput:
    dispatch_id: int
    reason: str


@dataclass
class WakeDeliveriesResult:
    signalled: int


@dataclass
class ControlResult:
    status: str
    changed: bool
    messages_cancelled: int = 0


@dataclass
class ControlSignal:
    """The body of the `pause`, `resume` and `cancel` signals (all fields optional)."""

    reason: str | None = None


@dataclass
class DispatchChanged:
    """Signal from the API: the dispatch row was edited; reload it."""

    reason: str = "edited"


@dataclass
class DispatchProgress:
    """Query answer: where the dispatch workflow is."""

    phase: str
    started: int
    after_client_id: int
    # The cohorts started (query each, `dispatch-<id>-zone-<zone>`, for its own progress) and
    # those finished.
    cohorts: list[str] = field(default_factory=list)
    cohorts_finished: list[str] = field(default_factory=list)


@dataclass
class DeliveryFinished:
    """Signal from a delivery to its dispatch: one more message reached a final status."""

    message_id: int
    status: str


@dataclass
class ReportInput:
    """The daily report of `day` (ISO date; None: yesterday in `timezone`)."""

    timezone: str
    day: str | None = None


@dataclass
class ReportResult:
    day: str
    subject: str
    recipients: int
