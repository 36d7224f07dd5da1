"""The test send workflow (`TestSendWorkflow`): a dispatch's text sent now to a few numbers, each
a `test_message` row, through the normal send path, and the end of those that never went."""

from dataclasses import dataclass, field
from datetime import timedelta

from core.contracts.shared import SendOptions

# How long a test message is retried (the remote down, every route's circuit open) before it
# ends failed: an operator waiting for the phone to ring wants an answer, not a day of retries.
TEST_SEND_DEADLINE = timedelta(minutes=10)
# The longest wait between two attempts: a test goes out soon after the remote is back.
TEST_RETRY_MAX_SECONDS = 30.0


def workflow_id_of_test(first_message_id: int) -> str:
    """`test-send-<id>`, after the first of its messages (ids are never reused)."""
    return f"test-send-{first_message_id}"


@dataclass
class TestSendInput:
    """Sends the stored test messages of one dispatch now, concurrently."""

    dispatch_id: int
    message_ids: list[int]
    send: SendOptions = field(default_factory=SendOptions)
    # Each message's retries stop this many seconds after its first attempt was scheduled.
    deadline_seconds: float = TEST_SEND_DEADLINE.total_seconds()


@dataclass
class TestSendResult:
    """The messages by how they ended: sent, or failed (refused, or not sent in time)."""

    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@dataclass
class SendTestMessageInput:
    """One attempt at a test message; the row is read again so every attempt sees the truth."""

    message_id: int


@dataclass
class SendTestMessageResult:
    """`sent` or `failed` (the status the attempt left, or found), `deleted` when the row is
    gone (its dispatch was deleted)."""

    message_id: int
    status: str


@dataclass
class FailTestMessageInput:
    """Ends a test message still pending as failed: its retries ran out (`reason`)."""

    message_id: int
    reason: str


@dataclass
class FailTestMessageResult:
    changed: bool
