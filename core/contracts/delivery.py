"""The delivery workflow (`DeliveryWorkflow.v2`, and the frozen `DeliveryWorkflow`): one message
to one client, its send attempts and the move of its message to a final status."""

from dataclasses import dataclass, field
from datetime import datetime

from core.contracts.shared import SendOptions, SendOutcome, Window
from core.models import MessageStatus


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
    """A message status the attempt left (sent, expired, cancelled, opted_out, or the status it
    already had), or what it waits for (`outside_window`, `paused`) with `next_open_at`."""

    message_id: int
    status: MessageStatus | SendOutcome
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
