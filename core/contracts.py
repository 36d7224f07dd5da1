"""The Temporal side of the domain: workflow ids, signal names and every input and output.

One dataclass in and one out for each workflow, activity and signal, so that fields can be added
without breaking running workflows. They carry ids and small values, never rows or audiences.
"""

from dataclasses import dataclass, field
from datetime import datetime

# Error types the workflows and retry policies name.
REMOTE_REJECTED = "RemoteRejected"  # a 4xx other than 408/429: permanent, never retried
REMOTE_UNAVAILABLE = "RemoteUnavailable"  # timeouts, refused connections, 5xx, 429, garbage


def dispatch_workflow_id(dispatch_id: int) -> str:
    return f"dispatch-{dispatch_id}"


def delivery_workflow_id(dispatch_id: int, client_id: int) -> str:
    return f"dispatch-{dispatch_id}-client-{client_id}"


@dataclass
class Window:
    """A send window as local "HH:MM" times; end before start crosses midnight."""

    start: str
    end: str


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


@dataclass
class DispatchInput:
    """Starts (or continues as new) the workflow of one dispatch."""

    dispatch_id: int
    send: SendOptions = field(default_factory=SendOptions)
    # Audience cursor: clients with ids above it are still to be started (continue-as-new).
    after_client_id: int = 0
    audience_done: bool = False
    started: int = 0


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
class DispatchChanged:
    """Signal from the API: the dispatch row was edited; reload it."""

    reason: str = "edited"


@dataclass
class DispatchProgress:
    """Query answer: where the dispatch workflow is."""

    phase: str
    started: int
    after_client_id: int


@dataclass
class DeliveryFinished:
    """Signal from a delivery to its dispatch: one more message reached a final status."""

    message_id: int
    status: str
