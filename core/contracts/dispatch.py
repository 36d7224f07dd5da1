"""The dispatch workflow (`DispatchWorkflow.v2`): its input and result, the activities that lay
out its audience and move its status, its query, and the signals its children send it."""

from dataclasses import dataclass, field

from core.contracts.shared import SendOptions

# Signal names, shared by the senders and the workflows that define them.
DELIVERY_FINISHED = "delivery_finished"

COHORT_FINISHED = "cohort_finished"

CLIENT_MOVED = "client moved"  # the reason of a dispatch_changed sent for a client's new zone


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
class SetDispatchStatusInput:
    dispatch_id: int
    status: str
    # Only rows now in one of these statuses change (empty: any).
    from_statuses: list[str] = field(default_factory=list)


@dataclass
class SetDispatchStatusResult:
    changed: bool


@dataclass
class Recipient:
    client_id: int
    message_id: int
    timezone: str


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
class CountOpenInput:
    dispatch_id: int


@dataclass
class CountOpenResult:
    open: int
    total: int


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
class CohortFinished:
    """Signal from a cohort to its dispatch: it has nothing more to send."""

    cohort: str


@dataclass
class DeliveryFinished:
    """Signal from a delivery to its dispatch: one more message reached a final status."""

    message_id: int
    status: str
