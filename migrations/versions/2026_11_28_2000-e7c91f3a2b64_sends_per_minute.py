"""sends per minute of each dispatch, kept by triggers (the admin page's charts)

Revision ID: e7c91f3a2b64
Revises: d4a8c61e5f02
Create Date: 2026-11-28 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7c91f3a2b64"
down_revision: str | None = "d4a8c61e5f02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As for message_count: each statement appends its net change of sent messages per (dispatch,
# minute of sent_at), in its own transaction; a row that stays sent nets to nothing.
SENT = "status = 'sent' AND sent_at IS NOT NULL"
MINUTE = "date_trunc('minute', sent_at)"
TRIGGERS = {
    "insert": (
        "NEW TABLE AS new_rows",
        f"SELECT dispatch_id, {MINUTE}, count(*) FROM new_rows WHERE {SENT} GROUP BY 1, 2",
    ),
    "update": (
        "NEW TABLE AS new_rows OLD TABLE AS old_rows",
        f"SELECT dispatch_id, minute, sum(n) FROM ("
        f" SELECT dispatch_id, {MINUTE} AS minute, 1 AS n FROM new_rows WHERE {SENT}"
        f" UNION ALL SELECT dispatch_id, {MINUTE}, -1 FROM old_rows WHERE {SENT}) AS change"
        " GROUP BY dispatch_id, minute HAVING sum(n) <> 0",
    ),
    "delete": (
        "OLD TABLE AS old_rows",
        f"SELECT dispatch_id, {MINUTE}, -count(*) FROM old_rows WHERE {SENT} GROUP BY 1, 2",
    ),
}


def upgrade() -> None:
    op.create_table(
        "message_sent_minute",
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_message_sent_minute_dispatch_id", "message_sent_minute", ["dispatch_id", "minute"]
    )
    op.create_index("ix_message_sent_minute_minute", "message_sent_minute", ["minute"])
    for event, (referencing, select) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION message_sent_minute_{event}() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN INSERT INTO message_sent_minute (dispatch_id, minute, n) {select}; "
            "RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER message_sent_minute_{event} AFTER {event.upper()} ON message "
            f"REFERENCING {referencing} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION message_sent_minute_{event}()"
        )
    op.execute(
        "INSERT INTO message_sent_minute (dispatch_id, minute, n) "
        f"SELECT dispatch_id, {MINUTE}, count(*) FROM message WHERE {SENT} GROUP BY 1, 2"
    )


def downgrade() -> None:
    for event in TRIGGERS:
        op.execute(f"DROP TRIGGER message_sent_minute_{event} ON message")
        op.execute(f"DROP FUNCTION message_sent_minute_{event}()")
    op.drop_table("message_sent_minute")
