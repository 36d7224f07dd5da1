"""A message as answered, of a dispatch or of a client."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from core.models import MessageStatus


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dispatch_id: int
    client_id: int | None
    phone: str | None = Field(
        description="The number it goes (or went) to; kept when the client is deleted."
    )
    timezone: str | None = Field(
        default=None, description="The client's zone now (None once the client is deleted)."
    )
    status: MessageStatus
    route: str | None = Field(
        default=None,
        description="The send route (gateway) that has it or may have it: the one its request "
        "went through (sent, failed), or the one it is pinned to after a timeout lost the "
        "answer (its retries go there alone); null while no request has gone out.",
    )
    segments: int | None = Field(
        default=None,
        description="SMS parts of the text its request carried (null before any request).",
    )
    text: str | None = Field(
        default=None,
        description="What its request carried: a personal text as rendered for this client. "
        "Before any request, the dispatch's text as it stands (placeholders not rendered).",
    )
    attempts: int
    last_error: str | None
    waiting_until: datetime | None = Field(
        default=None,
        description="For a pending message outside its send window: when the window next opens.",
    )
    created_at: datetime
    sent_at: datetime | None = Field(
        description="When the request the remote accepted went out (not when its answer came)."
    )
    receipt_at: datetime | None = Field(
        default=None,
        description="For a delivered or undelivered message: when the receipt that decided it "
        "says that happened (the gateway's time).",
    )
