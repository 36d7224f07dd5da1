"""What every resource's bodies use: one page of a list, the one error shape, the field types
a client and a dispatch filter share (an operator code, a tag, no NUL characters), and what
`normalize_text` did to a dispatch's text."""

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.models import TAG_MAX_LENGTH
from core.segments import Encoding

# PostgreSQL text cannot hold NUL characters: refused here, not failed on at insert.
NO_NUL = r"^[^\x00]*$"
OperatorCode = Annotated[str, StringConstraints(pattern=r"^\d{3}$")]
Tag = Annotated[str, StringConstraints(max_length=TAG_MAX_LENGTH, pattern=NO_NUL)]
FILTER_MAX_ITEMS = 100

T = TypeVar("T")


class RequestBody(BaseModel):
    """A request body: a field it does not know is a 422 naming it, never dropped without a
    word (a `time_zone` for `timezone` would otherwise leave the zone unset)."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list, by id."""

    items: list[T]
    total: int | None = Field(
        description="Every item that matched: on a page asked for without a cursor, or with "
        "with_total=true; else null."
    )
    limit: int
    offset: int
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page; null on the last page.",
    )


class ErrorField(BaseModel):
    field: str | None = Field(
        description="Dotted path of the field, e.g. `window.start`; null "
        "when the problem is the request as a whole."
    )
    message: str


class ErrorBody(BaseModel):
    """The one shape of every error answer."""

    detail: str = Field(description="Every problem on one line, each prefixed by its field.")
    errors: list[ErrorField]


class Normalization(BaseModel):
    """What `normalize_text: true` did: typographic quotes, dashes, the ellipsis, unicode
    spaces and invisible characters replaced by their GSM-7 look-alikes (Cyrillic and every
    other character kept), and the text's SMS size before and after."""

    changed: bool = Field(description="Whether any character was replaced or removed.")
    encoding_before: Encoding = Field(description="The encoding of the text as given.")
    encoding: Encoding = Field(description="The encoding of the text as stored.")
    segments_before: int = Field(description="SMS parts of the text as given.")
    segments: int = Field(description="SMS parts of the text as stored.")
