"""Writing an import: the judged rows (see `reading`) written in batches of multi-row statements
inside one transaction, each batch as rows taken one after another would be; a worker thread
reads and judges the next batch while the event loop writes this one. The API's memory is a
batch or two, whatever the file's size."""

import asyncio
import contextlib
import json
from enum import StrEnum
from typing import IO, Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from api.imports.reading import FileFormat, Row, Rows
from api.schemas.clients import ATTRIBUTES_MAX, ImportReport, RejectedRow
from api.services import clients as clients_service
from core.models import OPEN_MESSAGE_STATUSES
from core.settings import Settings


class OnDuplicate(StrEnum):
    """What a row whose phone is already a client's does."""

    SKIP = "skip"  # the stored client stays as it is
    # The row's non-empty fields replace the stored ones; its attributes are merged into the
    # stored ones, key by key (an empty cell keeps the stored value, as for any field).
    UPDATE = "update"


class OnError(StrEnum):
    """What an invalid row does."""

    REJECT_FILE = "reject_file"  # nothing is imported; every rejected row is reported
    SKIP_ROW = "skip_row"  # the row alone is left out and reported


# Attributes travel as JSON text, NULL for a row without any.
_INSERT = """
    INSERT INTO client (phone, operator_code, tag, timezone, opted_out, opted_out_at, attributes)
    SELECT phone, code, tag, zone, opted, CASE WHEN opted THEN now() END,
        coalesce(attrs, '{}'::jsonb)
    FROM unnest(
        $1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bool[], $6::jsonb[]
    ) AS row (phone, code, tag, zone, opted, attrs)
    ON CONFLICT (phone) DO NOTHING
    RETURNING phone
"""

# Fields the file did not give are NULL and keep the stored value; attributes merge into the
# stored ones. `old` is the row before this statement, for the clients whose zone changed. A
# client whose attributes would then be more than $7 is left as it is and answered `over`
# (the cap judged on the row as the update locked it: a concurrent change cannot slip past).
_UPDATE = """
    WITH given AS (
        SELECT row.*, old.timezone AS old_zone
        FROM unnest(
            $1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bool[], $6::jsonb[]
        ) AS row (phone, code, tag, zone, opted, attrs)
        JOIN client old ON old.phone = row.phone
    ), updated AS (
        UPDATE client c SET
            operator_code = coalesce(g.code, c.operator_code),
            tag = coalesce(g.tag, c.tag),
            timezone = coalesce(g.zone, c.timezone),
            opted_out = coalesce(g.opted, c.opted_out),
            opted_out_at = CASE
                WHEN g.opted IS NULL THEN c.opted_out_at
                WHEN g.opted THEN coalesce(c.opted_out_at, now())
            END,
            attributes = c.attributes || coalesce(g.attrs, '{}'::jsonb),
            updated_at = now()
        FROM given g
        WHERE c.phone = g.phone AND (
            g.attrs IS NULL
            OR (SELECT count(*) FROM jsonb_object_keys(c.attributes || g.attrs)) <= $7
        )
        RETURNING c.id, c.phone, g.old_zone <> c.timezone AS moved
    )
    SELECT phone, id, moved, false AS over FROM updated
    UNION ALL
    SELECT phone, NULL, false, true FROM given
    WHERE attrs IS NOT NULL AND phone NOT IN (SELECT phone FROM updated)
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
    def _rejects_file(self) -> bool:
        return self.on_error is OnError.REJECT_FILE

    @property
    def failed(self) -> bool:
        return self._rejects_file and self.report.rejected > 0

    async def run(self, body: IO[bytes], file_format: FileFormat) -> ImportReport:
        rows = Rows(body, file_format, self.settings)
        next_batch = asyncio.create_task(asyncio.to_thread(rows.batch))
        try:
            while True:
                batch = await next_batch
                if not batch.end:
                    # The thread judges the next batch while this one is written.
                    next_batch = asyncio.create_task(asyncio.to_thread(rows.batch))
                rejected = batch.rejected
                if not self.failed and not (self._rejects_file and rejected):
                    # Rows the writer refuses join the reader's, in file order.
                    refused = await self._write(batch.rows)
                    rejected = sorted([*rejected, *refused], key=lambda row: row.line)
                self._count_rejected(rejected)
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

    async def _write(self, rows: list[Row]) -> list[RejectedRow]:
        """Writes one batch as rows taken one after another would be: a phone seen again in
        the batch is skipped, or updates the client its first row made. Returns the rows
        refused here: those that would leave a client more than ATTRIBUTES_MAX attributes."""
        if not rows:
            return []
        merged, taken, refused = self._merge(rows)
        remaining = list(merged.values())
        if self.on_duplicate is OnDuplicate.UPDATE:
            done, over = await self._update(remaining, taken)
            refused += over
            remaining = [row for row in remaining if row.values["phone"] not in done]
        connection = await self._raw()
        created = {
            record["phone"]
            for record in await connection.fetch(_INSERT, *_columns(remaining, given=False))
        }
        for row in remaining:
            phone = row.values["phone"]
            if phone in created:
                self.report.created += 1
                extra = len(taken[phone]) - 1
            else:
                # Another writer created it meanwhile (or the policy is skip).
                extra = len(taken[phone])
            if self.on_duplicate is OnDuplicate.UPDATE and phone in created:
                self.report.updated += extra
            else:
                self.report.skipped += extra
        return refused

    def _merge(
        self, rows: list[Row]
    ) -> tuple[dict[str, Row], dict[str, list[Row]], list[RejectedRow]]:
        """Each phone's rows as one (with `update`, the later rows' fields over the first's,
        attributes merged key by key), the rows taken into it, and the rows refused because
        the attributes of the phone's rows together would be more than ATTRIBUTES_MAX."""
        merged: dict[str, Row] = {}
        taken: dict[str, list[Row]] = {}
        refused: list[RejectedRow] = []
        for row in rows:
            phone = row.values["phone"]
            if phone not in merged:
                merged[phone] = Row(row.line, dict(row.values), dict(row.given))
                taken[phone] = [row]
                continue
            if self.on_duplicate is OnDuplicate.UPDATE:
                first = merged[phone]
                attributes = {**first.values["attributes"], **row.given.get("attributes", {})}
                if len(attributes) > ATTRIBUTES_MAX:
                    refused.append(_too_many_attributes(row.line))
                    continue
                first.values.update(row.given, attributes=attributes)
                first.given.update(row.given)
                if attributes:
                    first.given["attributes"] = attributes
            taken[phone].append(row)
        return merged, taken, refused

    async def _update(
        self, merged: list[Row], taken: dict[str, list[Row]]
    ) -> tuple[set[str], list[RejectedRow]]:
        """Updates the clients the rows' phones are already; says which phones it dealt with
        and the rows refused for the attribute cap. A phone whose rows together pass the cap
        is tried again a row at a time, so that the rows before the one too many are taken."""
        connection = await self._raw()
        done: set[str] = set()
        refused: list[RejectedRow] = []
        moved: dict[int, None] = {}  # in order, once each
        again: list[Row] = []
        for record in await connection.fetch(
            _UPDATE, *_columns(merged, given=True), ATTRIBUTES_MAX
        ):
            phone = record["phone"]
            done.add(phone)
            if not record["over"]:
                self.report.updated += len(taken[phone])
                if record["moved"]:
                    moved[record["id"]] = None
            elif len(taken[phone]) == 1:
                refused.append(_too_many_attributes(taken[phone][0].line))
            else:
                again += taken[phone]
        for row in again:
            for record in await connection.fetch(
                _UPDATE, *_columns([row], given=True), ATTRIBUTES_MAX
            ):
                if record["over"]:
                    refused.append(_too_many_attributes(row.line))
                else:
                    self.report.updated += 1
                    if record["moved"]:
                        moved[record["id"]] = None
        if moved:
            await self._follow_moves(list(moved))
        return done, refused

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
        [_json(fields.get("attributes")) for fields in source],
    )


def _json(attributes: dict[str, str] | None) -> str | None:
    return json.dumps(attributes, ensure_ascii=False) if attributes else None


def _too_many_attributes(line: int) -> RejectedRow:
    return RejectedRow(
        line=line,
        field="attributes",
        message=f"the client would hold more than {ATTRIBUTES_MAX} attributes",
    )
