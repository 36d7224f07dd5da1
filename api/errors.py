"""The one shape of every error answer."""

from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse


@dataclass(frozen=True)
class ErrorItem:
    """One problem: the field it is about (dotted, e.g. `filter.tags.0`; None for the request
    as a whole) and what is wrong, in words."""

    field: str | None
    message: str

    @classmethod
    def of_validation(cls, item: Any) -> "ErrorItem":
        location = [str(part) for part in item.get("loc", ())]
        if location and location[0] in {"body", "query", "path", "header"}:
            location = location[1:]
        if location[-1:] == ["[key]"]:
            # pydantic's mark of a bad dict key: the key itself names the field.
            location = location[:-1]
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "extra_forbidden":
            message = "unknown field"
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        return cls(".".join(location) or None, message)


def error_response(status_code: int, items: list[ErrorItem], **extra: Any) -> JSONResponse:
    """Every error has one shape: `detail`, one line naming each field with its problem, and
    `errors`, the same as a list of {field, message}; `extra` adds fields (an import's
    `report`)."""
    detail = "; ".join(f"{i.field}: {i.message}" if i.field else i.message for i in items)
    return JSONResponse(
        status_code=status_code,
        content={
            "detail": detail,
            "errors": [{"field": i.field, "message": i.message} for i in items],
            **extra,
        },
    )
