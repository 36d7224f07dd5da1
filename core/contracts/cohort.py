"""The cohort workflow (`CohortWorkflow`): its input, progress and result, the batch send and
its hand-offs, and the signal that the audience is complete."""

from dataclasses import dataclass, field
from datetime import datetime

from core.contracts.shared import SendOptions, SendOutcome

AUDIENCE_COMPLETE = "audience_complete"

# The cohort of a dispatch without a window: every client can be sent to at once.
COHORT_ALL = "all"


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
    # Parallel batches: each lane's cursor (lane i sends the messages whose id % lanes == i);
    # empty: every lane starts at after_message_id.
    lane_cursors: list[int] = field(default_factory=list)


@dataclass
class CohortProgress:
    """Query answer: where the cohort is and what it did so far."""

    phase: str
    sent: int
    handed_off: int
    # When its sleep ends (its zone's window opening, a backoff, a pause's recheck), if asleep.
    waiting_until: datetime | None = None
    batches: int = 0
    # Batch activities running now (parallel batches).
    batches_in_flight: int = 0


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
    # Its lane of the cohort: only messages whose id % lanes == lane (1 lane: all of them).
    lane: int = 0
    lanes: int = 1
    # Parallel batches: when the cohort's round began. A breaker any batch of the dispatch
    # opened since then stops this one too (None: since this batch began).
    round_started_at: datetime | None = None


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
    stopped: SendOutcome | None = None
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
