"""Bodies of the client directory: a client with its attributes, its changes, an opt-out, and a
bulk import's report."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from api.schemas.common import NO_NUL, ErrorBody, OperatorCode, RequestBody, Tag
from core.phones import normalize_phone, validate_timezone
from core.templates import ATTRIBUTE_KEY, CLIENT_FIELDS

ATTRIBUTES_MAX = 20
ATTRIBUTE_VALUE_MAX_LENGTH = 200


def _not_a_client_field(key: str) -> str:
    # A text's {{ phone }} is the client's own phone, whatever its attributes say.
    if key in CLIENT_FIELDS:
        raise ValueError(f"{key} is a field of the client itself, not an attribute")
    return key


AttributeKey = Annotated[
    str,
    StringConstraints(pattern=f"^{ATTRIBUTE_KEY.pattern}$"),
    AfterValidator(_not_a_client_field),
]
AttributeValue = Annotated[
    str, StringConstraints(max_length=ATTRIBUTE_VALUE_MAX_LENGTH, pattern=NO_NUL)
]
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=ATTRIBUTES_MAX)]
# Room to replace every attribute at once: each old key null, each new one set.
AttributesChange = Annotated[
    dict[AttributeKey, AttributeValue | None], Field(max_length=2 * ATTRIBUTES_MAX)
]


def _phone(value: Any) -> str:
    return normalize_phone(value)


class ClientCreate(RequestBody):
    """A new client. operator_code defaults to digits 2-4 of the phone; timezone to the
    number's own zone, or the service's default zone."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"phone": "79161234567", "tag": "vip", "attributes": {"name": "Anna"}}
        }
    )

    phone: str | int = Field(description="11 digits 7XXXXXXXXXX, a Russian mobile number")
    operator_code: OperatorCode | None = None
    tag: Tag = ""
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Asia/Yekaterinburg")
    opted_out: bool = Field(
        default=False, description="On the stop list: never sent to (checked at each send)."
    )
    attributes: Attributes = Field(
        default_factory=dict,
        description=f"The client's own values for personal texts ({{{{ key }}}}): at most "
        f"{ATTRIBUTES_MAX} keys (a-z, 0-9 and _, starting with a letter, up to 32 characters; "
        f"not phone, tag or timezone), each a string of up to {ATTRIBUTE_VALUE_MAX_LENGTH} "
        "characters.",
        examples=[{"name": "Anna", "city": "Omsk"}],
    )

    _normalize_phone = field_validator("phone", mode="before")(_phone)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else validate_timezone(value)


class ClientUpdate(RequestBody):
    """Fields to change; a new phone without an operator_code re-derives the code, and
    `attributes` changes only the keys it names."""

    phone: str | int | None = None
    operator_code: OperatorCode | None = None
    tag: Tag | None = None
    timezone: str | None = None
    opted_out: bool | None = Field(
        default=None, description="true puts the client on the stop list, false takes it off."
    )
    attributes: AttributesChange | None = Field(
        default=None,
        description="A partial change: each key given with a string is set, a key given as "
        f"null is removed, the others are kept. The client then holds at most {ATTRIBUTES_MAX} "
        f"(else 422, nothing of the request taken); at most {2 * ATTRIBUTES_MAX} keys named.",
        examples=[{"city": "Tomsk", "name": None}],
    )

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: Any) -> str | None:
        return None if value is None else normalize_phone(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else validate_timezone(value)


class OptOut(RequestBody):
    """A number that asked for no more messages (a STOP reply, an unsubscribe link)."""

    model_config = ConfigDict(json_schema_extra={"example": {"phone": "79161234567"}})

    phone: str | int = Field(description="The client's number, in any form a create takes.")

    _normalize_phone = field_validator("phone", mode="before")(_phone)


class ClientPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    phone: str
    operator_code: str
    tag: str
    timezone: str
    opted_out: bool
    opted_out_at: datetime | None
    attributes: dict[str, str] = Field(description="The client's values for personal texts.")
    created_at: datetime
    updated_at: datetime


class RejectedRow(BaseModel):
    """A row an import left out: its line in the file (the header is line 1), the field at
    fault (None for the row as a whole) and why."""

    line: int
    field: str | None
    message: str


class ImportReport(BaseModel):
    """What an import did with each row of the file."""

    rows: int = Field(default=0, description="Rows read (blank lines aside).")
    created: int = 0
    updated: int = Field(
        default=0, description="Rows that changed an existing client (on_duplicate=update)."
    )
    skipped: int = Field(
        default=0, description="Rows whose phone was a client already (on_duplicate=skip)."
    )
    rejected: int = Field(default=0, description="Invalid rows, all of them counted.")
    rejected_rows: list[RejectedRow] = Field(
        default_factory=list,
        description="The first IMPORT_ERRORS_SHOWN (100) invalid rows, in file order.",
    )
    committed: bool = Field(
        default=False,
        description="Whether the rows were taken: false when on_error=reject_file found an "
        "invalid row, and then nothing was.",
    )


class ImportRefused(ErrorBody):
    """An import that took nothing: the error shape, and what became of each row."""

    report: ImportReport | None = None
