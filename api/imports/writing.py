"""Writing an import: the judged rows (see `reading`) written in batches of multi-row statements
inside one transaction, each batch as rows taken one after another would be; a worker thread
reads and judges the next batch while the event loop writes this one. The API's memory is a
batch or two, whatever the file's size."""

import asyncio
import contextlib
from enum import StrEnum
from typing import IO, Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from api.imports.reading import FileFormat, Row, Rows
from api.schemas.clients import ImportReport, RejectedRow
from api.services import clients as clients_service
from core.models import OPEN_MESSAGE_STATUSES
from core.settings import Settings


class OnDuplicate(StrEnum):
    """What a row whose phone is already a client's does."""

    SKIP = "skip"  # the stored client stays as it is
    UPDATE = "update"  # the row's non-empty fields replace the stored ones


class OnError(StrEnum):
    """What an invalid row does."""

    REJECT_FILE = "reject_file"  # nothing is imported; every rejected row is reported
    SKIP_ROW = "skip_row"  # the row alone is left out and reported


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

_OPEN = ", ".join(f"'{status}'" for status in OPEN_MESSAGE_STATUSES)
_MOVED_WITH_OPEN_MESSAGES = f"""
    SELECT DISTINCT client_id FROM message
    WHERE client_id = ANY($1::bigint[]) AND status IN ({_OPEN})
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
        rows = Rows(body, file_format, self.settings)
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

    async def _write(self, rows: list[Row]) -> None:
        """Writes one batch as rows taken one after another would be: a phone seen again in
        the batch is skipped, or updates the client its first row made."""
        if not rows:
            return
        merged: dict[str, Row] = {}
        seen: dict[str, int] = {}
        for row in rows:
            phone = row.values["phone"]
            seen[phone] = seen.get(phone, 0) + 1
            if phone not in merged:
                merged[phone] = Row(row.line, dict(row.values), dict(row.given))
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
            for kind, dispatch_id in await clients_service.follow_move(self.session, client_id):
                self.to_wake.append((kind, dispatch_id, client_id))


def _columns(rows: list[Row], *, given: bool) -> tuple[list[Any], ...]:
    source = [row.given if given else row.values for row in rows]
    return (
        [fields["phone"] for fields in source],
        [fields.get("operator_code") for fields in source],
        [fields.get("tag") for fields in source],
        [fields.get("timezone") for fields in source],
        [fields.get("opted_out") for fields in source],
    )
