"""Bulk import of clients: a CSV or JSON-lines file, judged row by row exactly as a single create
is (the same `ClientCreate` and the same derived operator code and zone), written in batches of
multi-row statements inside one transaction.

The body is first spooled to a temporary file (in memory up to 1 MiB, then on disk), then read
back in batches: a worker thread parses and validates a batch while the event loop writes the
one before. The API's memory is a batch or two, whatever the file's size.
"""

import asyncio
import contextlib
import csv
import io
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

import asyncpg
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ErrorItem
from api.schemas import ClientCreate, ImportReport, RejectedRow
from api.services import follow_move, new_client_values
from core.errors import InvalidRequest
from core.settings import Settings

log = logging.getLogger(__name__)

COLUMNS = ("phone", "tag", "timezone", "operator_code", "opted_out")
# Rows validated and written together: one multi-row statement (or two) per batch.
BATCH_ROWS = 5000
# The body is kept in memory up to this size, then spooled to disk.
SPOOL_MEMORY_BYTES = 1 << 20
CSV_TYPES = ("text/csv", "application/csv")
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class OnDuplicate(StrEnum):
    """What a row whose phone is already a client's does."""

    SKIP = "skip"  # the stored client stays as it is
    UPDATE = "update"  # the row's non-empty fields replace the stored ones


class OnError(StrEnum):
    """What an invalid row does."""

    REJECT_FILE = "reject_file"  # nothing is imported; every rejected row is reported
    SKIP_ROW = "skip_row"  # the row alone is left out and reported


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
class _Row:
    """A valid row: the fields a create stores, and those the file gave (for an update)."""

    line: int
    values: dict[str, Any]
    given: dict[str, Any]


@dataclass
class _Batch:
    rows: list[_Row]
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


class _Rows:
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
        names = [name.strip().lower() for name in header]
        unknown = [name for name in names if name not in COLUMNS]
        if unknown:
            raise FileRefused(
                f"unknown column {unknown[0]!r} in the header; the columns are "
                + ", ".join(COLUMNS)
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
            unknown = [key for key in item if key not in COLUMNS]
            if unknown:
                yield (
                    line,
                    _reject(
                        line, unknown[0], "unknown field; the fields are " + ", ".join(COLUMNS)
                    ),
                )
                continue
            yield (
                line,
                {
                    key: value if value is None or isinstance(value, str) else _json_text(value)
                    for key, value in item.items()
                },
            )

    def batch(self) -> _Batch:
        rows: list[_Row] = []
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
                return _Batch(rows, rejected, end=False)
        return _Batch(rows, rejected, end=True)

    def _judge(self, line: int, record: dict[str, str | None]) -> _Row | RejectedRow:
        """The row as a single create would take it: empty cells are fields not given."""
        given: dict[str, Any] = {}
        for name, value in record.items():
            if value is None or value.strip() == "":
                continue
            given[name] = value.strip() if name != "tag" else value
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
        values = new_client_values(data, self.settings)
        given["phone"] = values["phone"]
        for name in ("operator_code", "timezone"):
            if name in given:
                given[name] = values[name]
        return _Row(line, values, given)

    def close(self) -> None:
        self.text.close()


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


_INSERT = """
    INSERT INTO client (phone, operator_code, tag, timezone, opted_out, opted_out_at)
    SELECT phone, code, tag, zone, opted, CASE WHEN opted THEN now() END
    FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bool[])
        AS row (phone, code, tag, zone, opted)
    ON CONFLICT (phone) DO NOTHING
    RETURNING phone
"""

# Fields the file did not give are NULL and keep the stored value. `old` is the row before
# this statement, for the clients whose zone changed.
_UPDATE = """
    UPDATE client c SET
        operator_code = coalesce(row.code, c.operator_code),
        tag = coalesce(row.tag, c.tag),
        timezone = coalesce(row.zone, c.timezone),
        opted_out = coalesce(row.opted, c.opted_out),
        opted_out_at = CASE
            WHEN row.opted IS NULL THEN c.opted_out_at
            WHEN row.opted THEN coalesce(c.opted_out_at, now())
        END,
        updated_at = now()
    FROM (
        SELECT row.*, old.timezone AS old_zone
        FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bool[])
            AS row (phone, code, tag, zone, opted)
        JOIN client old ON old.phone = row.phone
    ) AS row
    WHERE c.phone = row.phone
    RETURNING c.id, c.phone, row.old_zone <> c.timezone AS moved
"""

_MOVED_WITH_OPEN_MESSAGES = """
    SELECT DISTINCT client_id FROM message
    WHERE client_id = ANY($1::bigint[]) AND status IN ('pending', 'retrying')
"""


class Importer:
    """One import: the batches written in the session's transaction, counted in `report`."""

    def __init__(
        self,
        *,
        session: AsyncSession,
        settings: Settings,
        on_duplicate: OnDuplicate,
        on_error: OnError,
    ) -> None:
        self.session = session
        self.settings = settings
        self.on_duplicate = on_duplicate
        self.on_error = on_error
        self.report = ImportReport()
        # Workflows to wake after the commit: clients moved zone with messages waiting.
        self.to_wake: list[tuple[str, int, int]] = []
        self._connection: asyncpg.Connection | None = None

    @property
    def failed(self) -> bool:
        return self.on_error is OnError.REJECT_FILE and self.report.rejected > 0

    async def run(self, body: IO[bytes], file_format: FileFormat) -> ImportReport:
        rows = _Rows(body, file_format, self.settings)
        next_batch = asyncio.create_task(asyncio.to_thread(rows.batch))
        try:
            while True:
                batch = await next_batch
                if not batch.end:
                    # The thread judges the next batch while this one is written.
                    next_batch = asyncio.create_task(asyncio.to_thread(rows.batch))
                self._count_rejected(batch.rejected)
                if not self.failed:
                    await self._write(batch.rows)
                self.report.rows += len(batch.rows) + len(batch.rejected)
                if batch.end:
                    break
        finally:
            # A write that failed leaves the thread reading: it finishes before the file closes.
            if not next_batch.done():
                with contextlib.suppress(Exception):
                    await next_batch
            rows.close()
        if self.failed:
            await self.session.rollback()
            self.report.created = self.report.updated = self.report.skipped = 0
            self.to_wake = []
        else:
            await self.session.commit()
            self.report.committed = True
        return self.report

    def _count_rejected(self, rejected: list[RejectedRow]) -> None:
        self.report.rejected += len(rejected)
        room = self.settings.import_errors_shown - len(self.report.rejected_rows)
        self.report.rejected_rows.extend(rejected[: max(room, 0)])

    async def _raw(self) -> asyncpg.Connection:
        if self._connection is None:
            connection = await self.session.connection()
            # The dialect begins its transaction at its first statement: one goes through it,
            # so that the statements sent to the driver itself belong to that transaction.
            await connection.exec_driver_sql("SELECT 1")
            raw = await connection.get_raw_connection()
            self._connection = raw.driver_connection
        return self._connection

    async def _write(self, rows: list[_Row]) -> None:
        """Writes one batch as rows taken one after another would be: a phone seen again in
        the batch is skipped, or updates the client its first row made."""
        if not rows:
            return
        merged: dict[str, _Row] = {}
        seen: dict[str, int] = {}
        for row in rows:
            phone = row.values["phone"]
            seen[phone] = seen.get(phone, 0) + 1
            if phone not in merged:
                merged[phone] = _Row(row.line, dict(row.values), dict(row.given))
            elif self.on_duplicate is OnDuplicate.UPDATE:
                merged[phone].values.update(row.given)
                merged[phone].given.update(row.given)
        connection = await self._raw()
        remaining = list(merged.values())
        if self.on_duplicate is OnDuplicate.UPDATE:
            updated = await connection.fetch(_UPDATE, *_columns(remaining, given=True))
            updated_phones = {record["phone"] for record in updated}
            self.report.updated += sum(seen[phone] for phone in updated_phones)
            moved = [record["id"] for record in updated if record["moved"]]
            if moved:
                await self._follow_moves(moved)
            remaining = [row for row in remaining if row.values["phone"] not in updated_phones]
        created = {
            record["phone"]
            for record in await connection.fetch(_INSERT, *_columns(remaining, given=False))
        }
        for row in remaining:
            phone = row.values["phone"]
            if phone in created:
                self.report.created += 1
                extra = seen[phone] - 1
            else:
                # Another writer created it meanwhile (or the policy is skip).
                extra = seen[phone]
            if self.on_duplicate is OnDuplicate.UPDATE and phone in created:
                self.report.updated += extra
            else:
                self.report.skipped += extra

    async def _follow_moves(self, client_ids: list[int]) -> None:
        connection = await self._raw()
        waiting = await connection.fetch(_MOVED_WITH_OPEN_MESSAGES, client_ids)
        for record in waiting:
            client_id = record["client_id"]
            for kind, dispatch_id in await follow_move(self.session, client_id):
                self.to_wake.append((kind, dispatch_id, client_id))


def _columns(rows: list[_Row], *, given: bool) -> tuple[list[Any], ...]:
    source = [row.given if given else row.values for row in rows]
    return (
        [fields["phone"] for fields in source],
        [fields.get("operator_code") for fields in source],
        [fields.get("tag") for fields in source],
        [fields.get("timezone") for fields in source],
        [fields.get("opted_out") for fields in source],
    )
