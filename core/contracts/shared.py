"""What every workflow of a dispatch shares: error types, timeouts, workflow ids, the send
options a dispatch keeps for its life, its plan as loaded from its row, and the `dispatch_changed`
signal that the dispatch, its cohorts and its deliveries all take."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from core.windows import SendWindow, format_hhmm, parse_hhmm

if TYPE_CHECKING:
    from core.settings import Settings

# Error types the workflows and retry policies name.
REMOTE_REJECTED = "RemoteRejected"  # a 4xx other than 408/429: permanent, never retried

REMOTE_UNAVAILABLE = "RemoteUnavailable"  # timeouts, refused connections, 5xx, 429, garbage

# start_to_close of every database activity a workflow runs.
DB_TIMEOUT = timedelta(seconds=30)

# Errors kept on a message row are cut to this many characters (the column's size).
ERROR_MAX_LENGTH = 500

DISPATCH_CHANGED = "dispatch_changed"


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
    # Batches a cohort keeps in flight (1: one at a time, as runs started before it do), and
    # their queue (empty: task_queue, as before).
    parallel_batches: int = 1
    batch_task_queue: str = ""
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
            parallel_batches=settings.cohort_parallel_batches,
            batch_task_queue=settings.temporal_batch_task_queue,
        )


@dataclass
class LoadDispatchInput:
    dispatch_id: int


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
class DispatchChanged:
    """Signal from the API: the dispatch row was edited; reload it."""

    reason: str = "edited"
