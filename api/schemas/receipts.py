"""Bodies of delivery receipts: what a gateway posts about a message it took, and the answer
that says what became of each receipt."""

from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from api.deps import MAX_ID
from api.schemas.common import RequestBody
from core.models import ROUTE_NAME_MAX_LENGTH

RECEIPTS_MAX = 1000
RECEIPT_ERROR_MAX_LENGTH = 200
# The most parts a text may have on any gateway (the GSM concatenation header holds 255).
PARTS_MAX = 255


class ReceiptStatus(StrEnum):
    """What the gateway says of one part: the phone got it, or why it did not."""

    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"  # the gateway gave up trying (the phone off for days)
    REJECTED = "rejected"  # the operator's network refused it


class Receipt(RequestBody):
    """One part's delivery receipt."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": 1234,
                "status": "delivered",
                "part": 1,
                "parts": 3,
                "at": "2026-12-01T09:00:05+03:00",
            }
        },
    )

    id: int = Field(
        ge=1, le=MAX_ID, description="Our message id: the msgId the send was posted with."
    )
    status: ReceiptStatus
    part: int = Field(default=1, ge=1, le=PARTS_MAX, description="Which part of the text.")
    parts: int = Field(default=1, ge=1, le=PARTS_MAX, description="How many parts the text has.")
    error: str | None = Field(
        default=None,
        max_length=RECEIPT_ERROR_MAX_LENGTH,
        description="The gateway's code or text for a part not delivered.",
    )
    at: AwareDatetime = Field(description="When the gateway says it happened (with its zone).")
    route: str | None = Field(
        default=None,
        max_length=ROUTE_NAME_MAX_LENGTH,
        description="The route it came through, for a gateway that shares this endpoint.",
    )

    @model_validator(mode="after")
    def _part_within_parts(self) -> Self:
        if self.part > self.parts:
            raise ValueError(f"part {self.part} is beyond its parts ({self.parts})")
        return self


Receipts = Annotated[list[Receipt], Field(min_length=1, max_length=RECEIPTS_MAX)]


class ReceiptOutcome(StrEnum):
    """What became of one receipt."""

    APPLIED = "applied"  # recorded; the message is delivered or undelivered if it now can be
    WAITING = "waiting"  # recorded before the send was: applied once it is
    DUPLICATE = "duplicate"  # this part's receipt was known already, saying the same
    OUT_OF_DATE = "out_of_date"  # a part already final says otherwise, or the message did not go
    UNKNOWN = "unknown"  # no such message, or its client was erased


class ReceiptResult(BaseModel):
    id: int
    part: int
    outcome: ReceiptOutcome


class ReceiptsAnswer(BaseModel):
    """How many receipts were applied, waiting, duplicates, out of date and unknown, and what
    became of each, in the order posted."""

    applied: int = 0
    waiting: int = 0
    duplicate: int = 0
    out_of_date: int = 0
    unknown: int = 0
    results: list[ReceiptResult] = Field(default_factory=list)
