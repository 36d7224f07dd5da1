"""delivery receipts: statuses delivered and undelivered, each part's receipt

Revision ID: f1b7d2c9e4a6
Revises: c6e2f9a4b3d1
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f1b7d2c9e4a6"
down_revision: str | None = "c6e2f9a4b3d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "'pending', 'retrying', 'sent', 'failed', 'expired', 'cancelled', 'opted_out'"
NEW_STATUSES = OLD_STATUSES + ", 'delivered', 'undelivered'"


def _sent_minute_triggers(went_out: str) -> dict[str, str]:
    """The bodies of message_sent_minute's triggers (migration e7c91f3a2b64), counting the
    messages that went out: `went_out` is the condition on a row."""
    minute = "date_trunc('minute', sent_at)"
    return {
        "insert": f"SELECT dispatch_id, {minute}, count(*) FROM new_rows WHERE {went_out} "
        "GROUP BY 1, 2",
        "update": f"SELECT dispatch_id, minute, sum(n) FROM ("
        f" SELECT dispatch_id, {minute} AS minute, 1 AS n FROM new_rows WHERE {went_out}"
        f" UNION ALL SELECT dispatch_id, {minute}, -1 FROM old_rows WHERE {went_out}) AS change"
        " GROUP BY dispatch_id, minute HAVING sum(n) <> 0",
        "delete": f"SELECT dispatch_id, {minute}, -count(*) FROM old_rows WHERE {went_out} "
        "GROUP BY 1, 2",
    }


# A message that reached delivered or undelivered went out as much as one still sent: the
# sends over time keep counting it.
OLD_WENT_OUT = "status = 'sent' AND sent_at IS NOT NULL"
NEW_WENT_OUT = "status IN ('sent', 'delivered', 'undelivered') AND sent_at IS NOT NULL"


def _replace_sent_minute(went_out: str) -> None:
    for event, select in _sent_minute_triggers(went_out).items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION message_sent_minute_{event}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN INSERT INTO message_sent_minute (dispatch_id, minute, "
            f"n) {select}; RETURN NULL; END $$"
        )


def upgrade() -> None:
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({NEW_STATUSES})")
    op.add_column("message", sa.Column("receipt_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "message_receipt",
        sa.Column(
            "message_id",
            sa.BigInteger(),
            sa.ForeignKey("message.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("part", sa.SmallInteger(), nullable=False),
        sa.Column("parts", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(32), nullable=True),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # Applied to its message (false: it came before the send was recorded, and waits).
        sa.Column("applied", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("message_id", "part", name=op.f("pk_message_receipt")),
    )
    op.create_index(
        "ix_message_receipt_waiting",
        "message_receipt",
        ["message_id"],
        postgresql_where=sa.text("NOT applied"),
    )
    _replace_sent_minute(NEW_WENT_OUT)


def downgrade() -> None:
    _replace_sent_minute(OLD_WENT_OUT)
    op.drop_table("message_receipt")
    op.drop_column("message", "receipt_at")
    op.execute("UPDATE message SET status = 'sent' WHERE status IN ('delivered', 'undelivered')")
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({OLD_STATUSES})")
