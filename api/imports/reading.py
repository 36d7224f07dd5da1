"""Reading an import's file: the body spooled to a temporary file (in memory up to 1 MiB, then on
disk), its format told from its Content-Type or name, its rows read back a batch at a time and
each judged exactly as a single create is (the same `ClientCreate` and the same derived operator
code and zone). Attributes come as columns `attributes.<key>` (and in JSON lines also as an
object `attributes`). A whole file that cannot be read is refused here; an invalid row is
reported."""

import asyncio
import csv
import io
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

from pydantic import ValidationError

from api.errors import ErrorItem
from api.schemas.clients import ClientCreate, RejectedRow
from api.services import clients as clients_service
from core.errors import InvalidRequest
from core.settings import Settings

COLUMNS = ("phone", "tag", "timezone", "operator_code", "opted_out")
# A column `attributes.city` is the attribute `city`; its key is judged with the row.
ATTRIBUTE_PREFIX = "attributes."
_KNOWN = ", ".join(COLUMNS) + f", {ATTRIBUTE_PREFIX}<key>"
# Rows validated and written together: one multi-row statement (or two) per batch.
BATCH_ROWS = 5000
# The body is kept in memory up to this size, then spooled to disk.
SPOOL_MEMORY_BYTES = 1 << 20
CSV_TYPES = ("text/csv", "application/csv")
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class FileFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


class FileRefused(InvalidRequest):
    """The file as a whole cannot be read: no header, no phone column, an unknown column, not
    UTF-8, too big."""


class TooLarge(FileRefused):
    """Larger than IMPORT_MAX_BYTES (413)."""


class UnsupportedFile(FileRefused):
    """Neither CSV nor JSON lines (415)."""


@dataclass
class Row:
    """A valid row: the fields a create stores, and those the file gave (for an update)."""

    line: int
    values: dict[str, Any]
    given: dict[str, Any]


@dataclass
class Batch:
    rows: list[Row]
    rejected: list[RejectedRow]
    end: bool


async def spool(chunks: AsyncIterator[bytes], *, max_bytes: int) -> IO[bytes]:
    """The request body in a temporary file, read back from its start."""
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
    size, pending = 0, bytearray()
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            body.close()
            raise TooLarge(f"the file is larger than {max_bytes} bytes (IMPORT_MAX_BYTES)")
        pending += chunk
        if len(pending) >= SPOOL_MEMORY_BYTES:
            # Past the first MiB the file is on disk: written off the event loop.
            await asyncio.to_thread(body.write, bytes(pending))
            pending.clear()
    await asyncio.to_thread(body.write, bytes(pending))
    body.seek(0)
    return body


def format_of(content_type: str, filename: str | None = None) -> FileFormat | None:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in CSV_TYPES:
        return FileFormat.CSV
    if kind in NDJSON_TYPES:
        return FileFormat.NDJSON
    if filename:
        lowered = filename.lower()
        if lowered.endswith((".ndjson", ".jsonl")):
            return FileFormat.NDJSON
        if lowered.endswith(".csv"):
            return FileFormat.CSV
    return None


class Rows:
    """Reads and judges the rows of a file, a batch at a time (called from a worker thread,
    one batch at a time)."""

    def __init__(self, body: IO[bytes], file_format: FileFormat, settings: Settings) -> None:
        self.settings = settings
        # utf-8-sig drops a byte order mark; newline="" lets csv see quoted line breaks.
        self.text = io.TextIOWrapper(body, encoding="utf-8-sig", newline="")
        self.records: Iterator[tuple[int, dict[str, str | None] | RejectedRow]]
        if file_format is FileFormat.CSV:
            self.records = self._csv()
        else:
            self.records = self._ndjson()

    def _csv(self) -> Iterator[tuple[int, dict[str, str | None] | RejectedRow]]:
        reader = csv.reader(self.text)
        try:
            header = next(reader, None)
        except UnicodeDecodeError:
            raise _not_utf8(1) from None
        except csv.Error as error:
            raise FileRefused(f"line 1: {_describe(error)}") from None
        if header is None:
            raise FileRefused("the file is empty: a header row naming the columns is expected")
        names = [_column(name) for name in header]
        unknown = [name for name in names if name not in COLUMNS and not _is_attribute(name)]
        if unknown:
            raise FileRefused(
                f"unknown column {unknown[0]!r} in the header; the columns are {_KNOWN}"
            )
        if "phone" not in names:
            raise FileRefused("the header has no phone column (phone is required)")
        if len(set(names)) != len(names):
            raise FileRefused("a column is named twice in the header")
        start = reader.line_num + 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise _not_utf8(start) from None
            except csv.Error as error:
                yield start, _reject(start, None, _describe(error))
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not record or record == [""]:
                continue  # a blank line
            if len(record) != len(names):
                yield (
                    line,
                    _reject(
                        line,
                        None,
                        f"expected {len(names)} fields ({','.join(names)}), found {len(record)}",
                    ),
                )
                continue
            yield line, dict(zip(names, record, strict=True))

    def _ndjson(self) -> Iterator[tuple[int, dict[str, str | None] | RejectedRow]]:
        line = 0
        while True:
            try:
                text = self.text.readline()
            except UnicodeDecodeError:
                raise _not_utf8(line + 1) from None
            if not text:
                return
            line += 1
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as error:
                yield line, _reject(line, None, f"not JSON: {error.msg}")
                continue
            if not isinstance(item, dict):
                yield line, _reject(line, None, "each line must be a JSON object")
                continue
            yield line, _ndjson_record(line, item)

    def batch(self) -> Batch:
        rows: list[Row] = []
        rejected: list[RejectedRow] = []
        for line, record in self.records:
            if isinstance(record, RejectedRow):
                rejected.append(record)
            else:
                judged = self._judge(line, record)
                if isinstance(judged, RejectedRow):
                    rejected.append(judged)
                else:
                    rows.append(judged)
            if len(rows) + len(rejected) >= BATCH_ROWS:
                return Batch(rows, rejected, end=False)
        return Batch(rows, rejected, end=True)

    def _judge(self, line: int, record: dict[str, str | None]) -> Row | RejectedRow:
        """The row as a single create would take it: empty cells are fields not given (an
        attribute's too); a tag and an attribute are taken as they are, the others stripped."""
        given: dict[str, Any] = {}
        attributes: dict[str, str] = {}
        for name, value in record.items():
            if value is None or value.strip() == "":
                continue
            if name.startswith(ATTRIBUTE_PREFIX):
                attributes[name[len(ATTRIBUTE_PREFIX) :]] = value
            else:
                given[name] = value.strip() if name != "tag" else value
        if attributes:
            given["attributes"] = attributes
        if "phone" not in given:
            return _reject(line, "phone", "phone is required")
        if "opted_out" in given:
            flag = str(given["opted_out"]).lower()
            if flag not in _TRUE | _FALSE:
                return _reject(line, "opted_out", "must be true or false (or 1/0, yes/no)")
            given["opted_out"] = flag in _TRUE
        try:
            data = ClientCreate.model_validate(given)
        except ValidationError as error:
            item = ErrorItem.of_validation(error.errors()[0])
            return _reject(line, item.field, item.message)
        values = clients_service.new_client_values(data, self.settings)
        given["phone"] = values["phone"]
        for name in ("operator_code", "timezone"):
            if name in given:
                given[name] = values[name]
        return Row(line, values, given)

    def close(self) -> None:
        self.text.close()


def _column(name: str) -> str:
    """A header's column name: any case and spacing, but an attribute's key as written (a
    key is lowercase: `attributes.City` is judged, and refused, with each row)."""
    name = name.strip()
    if name.lower().startswith(ATTRIBUTE_PREFIX):
        return ATTRIBUTE_PREFIX + name[len(ATTRIBUTE_PREFIX) :]
    return name.lower()


def _is_attribute(name: str) -> bool:
    return name.startswith(ATTRIBUTE_PREFIX)


def _ndjson_record(line: int, item: dict[str, Any]) -> dict[str, str | None] | RejectedRow:
    """A JSON line as the fields of a CSV row: numbers and flags as text (a phone may be a
    number), attributes flat (`attributes.city`) whether given flat or as an object, and
    only as strings (as a single create takes them)."""
    record: dict[str, str | None] = {}
    attributes: dict[str, Any] = {}
    for key, value in item.items():
        if key in COLUMNS:
            record[key] = value if value is None or isinstance(value, str) else _json_text(value)
        elif _is_attribute(key):
            attributes[key] = value
        elif key != "attributes":
            return _reject(line, key, f"unknown field; the fields are {_KNOWN}")
    nested = item.get("attributes")
    if nested is not None:
        if not isinstance(nested, dict):
            return _reject(line, "attributes", "must be an object of strings")
        for key, value in nested.items():
            name = ATTRIBUTE_PREFIX + key
            if name in attributes:
                return _reject(line, name, "given twice: flat and in attributes")
            attributes[name] = value
    for name, value in attributes.items():
        if value is not None and not isinstance(value, str):
            return _reject(line, name, "Input should be a valid string")
        record[name] = value
    return record


def _reject(line: int, field: str | None, message: str) -> RejectedRow:
    return RejectedRow(line=line, field=field, message=message)


def _json_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _describe(error: csv.Error) -> str:
    return f"malformed CSV: {error}"


def _not_utf8(line: int) -> FileRefused:
    """Text is decoded a block at a time: the rows of the block cannot be told apart, so the
    file as a whole is refused (and nothing of it taken), whatever on_error says."""
    return FileRefused(
        f"the file is not UTF-8 text (from about line {line}); save it as UTF-8 and send again"
    )
