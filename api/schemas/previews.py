"""Bodies of a dispatch's preview: what a create would send, rendered for some of its clients
before it exists, and what it would cost."""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from api.deps import MAX_ID
from api.schemas.dispatches import DispatchCreate, _ends_after_start
from core.phones import normalize_phone
from core.segments import Encoding

# A preview lists this many samples and missing client ids at most, and takes this many named
# clients.
PREVIEW_SHOWN = 20


def _client_ref(value: Any) -> int | str:
    """A client id (an integer) as given, or a phone (a string) as 7XXXXXXXXXX."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a client is named by its id (an integer) or its phone (a string)")
    if isinstance(value, int):
        if not 1 <= value <= MAX_ID:
            raise ValueError(f"a client id is between 1 and {MAX_ID}")
        return value
    return normalize_phone(value)


ClientRef = Annotated[
    Annotated[int, Field(ge=1, le=MAX_ID)] | Annotated[str, Field(max_length=64)],
    BeforeValidator(_client_ref),
]


class DispatchPreview(DispatchCreate):
    """A create's body, previewed: nothing is stored or started. Every field is judged as on
    POST /dispatches (the text's placeholders, its filter, its window, unknown fields), but for
    one: an `end_at` already past is fine here, as long as it comes after `start_at` (a
    preview of a dispatch being drafted, or of one sent before). `clients` picks the samples."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "start_at": "2026-12-01T09:00:00+03:00",
                "end_at": "2026-12-02T21:00:00+03:00",
                "text": 'Здравствуйте, {{ name | default("друг") }}! Скидка для вас: {{ code }}',
                "filter": {"tags": ["vip"]},
                "clients": [42, "79161234567"],
            }
        }
    )

    clients: list[ClientRef] = Field(
        default_factory=list,
        max_length=PREVIEW_SHOWN,
        description="Up to 20 clients to render the text for instead of a sample of the "
        "audience: an integer is a client id, a string a phone (in any form POST /clients "
        "takes). Each must exist (else a 422 naming it, `clients.1`); they need not match the "
        "filter.",
    )

    # Replaces DispatchCreate's check of the same name, which also refuses a past end_at.
    @model_validator(mode="after")
    def _order(self) -> "DispatchPreview":
        _ends_after_start(self.start_at, self.end_at)
        return self


class PreviewSample(BaseModel):
    """The text as one client would get it."""

    client_id: int
    phone: str
    text: str | None = Field(
        description="The text rendered for this client; null when it lacks a key the text "
        "needs (its message would end `unrendered`)."
    )
    encoding: Encoding | None = Field(description="Of the rendered text; null when missing.")
    segments: int | None = Field(description="SMS parts of the rendered text; null when missing.")
    missing: list[str] = Field(
        description="The keys the text uses without a default that this client lacks (no such "
        "attribute, or an empty one; for `tag`, no tag), sorted; [] when rendered."
    )


class PreviewMissing(BaseModel):
    """The audience's clients that would get no message: they lack a key the text needs."""

    count: int = Field(description="How many, counted over the whole audience.")
    client_ids: list[int] = Field(description="The first 20 of them, by id.")


class DispatchPreviewPublic(BaseModel):
    """What a create with this body would send now, and to whom."""

    audience: int = Field(
        description="Clients the filter matches now, as the dispatch would lay them out (the "
        "stop list left out), as `audience` in the answer to a create."
    )
    personal: bool = Field(description="Whether the text has placeholders (`{{ key }}`).")
    keys: list[str] = Field(description="The keys its placeholders name, sorted.")
    samples: list[PreviewSample] = Field(
        description="The text rendered for the named `clients`, in their order, or else for "
        "the audience's first 20 clients by id."
    )
    missing: PreviewMissing
    segments_total: int = Field(
        description="The SMS parts the audience would be sent, estimated: a plain text's "
        "parts times `audience`; a personal text's mean parts over the first 100 clients by "
        "id that have every key it needs, times the clients that do (`audience` less "
        "`missing.count`), rounded up."
    )
    encoding: Encoding = Field(
        description="`UCS-2` if any message would go out in it (of the estimate's sample), "
        "else `GSM-7`."
    )
