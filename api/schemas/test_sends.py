"""Bodies of a dispatch's test sends: the numbers to send its text to now, what became of each,
and a test message as stored."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.schemas.common import RequestBody
from core.models import TestMessageStatus
from core.phones import normalize_phone

TEST_PHONES_MAX = 10


def _phone(value: Any) -> str:
    return normalize_phone(value)


TestPhone = Annotated[
    str,
    BeforeValidator(_phone),
    Field(description="A Russian mobile number in any form a client's phone takes."),
]


class TestSendCreate(RequestBody):
    """The numbers to send the dispatch's text to now, each rendered for the client with that
    number (or with the placeholders' defaults for a number no client has)."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"phones": ["79161234567", "8 (903) 123-45-67"]}}
    )

    phones: list[TestPhone] = Field(
        min_length=1,
        max_length=TEST_PHONES_MAX,
        description=f"1 to {TEST_PHONES_MAX} numbers; one given twice is sent to once.",
    )


class TestEntryStatus(StrEnum):
    """What became of a number of a test send."""

    PENDING = "pending"  # stored and handed to its workflow: it goes now
    UNRENDERED = "unrendered"  # the text needs a key this client lacks: not sent, not stored
    OPTED_OUT = "opted_out"  # the number's client is on the stop list: not sent, not stored


class TestSendEntry(BaseModel):
    """One number of a test send."""

    id: int | None = Field(
        description="The test message's id (its msgId at the gateway); null when not sent."
    )
    phone: str = Field(description="The number, normalized.")
    client_id: int | None = Field(description="The client with this number; null for none.")
    text: str | None = Field(description="The text as rendered for it; null when unrendered.")
    segments: int | None = Field(description="SMS parts of that text; null when unrendered.")
    status: TestEntryStatus
    reason: str | None = Field(description="Why it is not sent; null when it is.")


class TestSendAnswer(BaseModel):
    """A test send: each number, in the order given."""

    messages: list[TestSendEntry]


class TestMessagePublic(BaseModel):
    """A test message as stored: never one of the dispatch's messages, nor in its counts."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    dispatch_id: int
    client_id: int | None
    phone: str
    text: str = Field(description="The text as rendered for its number when the test was asked.")
    segments: int
    status: TestMessageStatus = Field(
        description="`pending` (going, or retried while the remote fails), `sent`, or `failed` "
        "(refused, or not sent within TEST_SEND_DEADLINE: 10 minutes)."
    )
    route: str | None = Field(description="The send route that has it or may have it.")
    attempts: int
    last_error: str | None
    actor: str = Field(description="Who asked for the test (the token's subject).")
    created_at: datetime
    sent_at: datetime | None = Field(description="When the request the remote accepted went out.")
