"""audiences at scale: message counts kept by triggers, keyset indexes, the stop list

Revision ID: d4a8c61e5f02
Revises: b7d4e2a9c150
Create Date: 2026-11-28 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4a8c61e5f02"
down_revision: str | None = "b7d4e2a9c150"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "'pending', 'retrying', 'sent', 'failed', 'expired', 'cancelled'"
NEW_STATUSES = OLD_STATUSES + ", 'opted_out'"

# One statement-level trigger per event (PostgreSQL allows transition tables on a single
# event only): each appends, in the writing transaction, the net change of the statement per
# (dispatch, status), so counts commit or roll back with the rows they count.
COUNT_TRIGGERS = {
    "insert": (
        "NEW TABLE AS new_rows",
        "SELECT dispatch_id, status, count(*) FROM new_rows GROUP BY dispatch_id, status",
    ),
    "update": (
        "NEW TABLE AS new_rows OLD TABLE AS old_rows",
        "SELECT dispatch_id, status, sum(n) FROM ("
        " SELECT dispatch_id, status, 1 AS n FROM new_rows"
        " UNION ALL SELECT dispatch_id, status, -1 FROM old_rows) AS change"
        " GROUP BY dispatch_id, status HAVING sum(n) <> 0",
    ),
    "delete": (
        "OLD TABLE AS old_rows",
        "SELECT dispatch_id, status, -count(*) FROM old_rows GROUP BY dispatch_id, status",
    ),
}


def upgrade() -> None:
    op.create_table(
        "message_count",
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_message_count_dispatch_id", "message_count", ["dispatch_id"])
    for event, (referencing, select) in COUNT_TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION message_count_{event}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN INSERT INTO message_count (dispatch_id, status, n) {select}; "
            "RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER message_count_{event} AFTER {event.upper()} ON message "
            f"REFERENCING {referencing} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION message_count_{event}()"
        )
    op.execute(
        "INSERT INTO message_count (dispatch_id, status, n) "
        "SELECT dispatch_id, status, count(*) FROM message GROUP BY dispatch_id, status"
    )

    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({NEW_STATUSES})")

    # Keyset pages: a dispatch's messages of one status, and a client's messages, by id.
    op.drop_index("ix_message_dispatch_status", table_name="message")
    op.create_index("ix_message_dispatch_status", "message", ["dispatch_id", "status", "id"])
    op.drop_index("ix_message_client_id", table_name="message")
    op.create_index("ix_message_client_id", "message", ["client_id", "id"])

    op.add_column(
        "client",
        sa.Column("opted_out", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("client", sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("client", "opted_out_at")
    op.drop_column("client", "opted_out")
    op.drop_index("ix_message_client_id", table_name="message")
    op.create_index("ix_message_client_id", "message", ["client_id"])
    op.drop_index("ix_message_dispatch_status", table_name="message")
    op.create_index("ix_message_dispatch_status", "message", ["dispatch_id", "status"])
    op.execute("UPDATE message SET status = 'cancelled' WHERE status = 'opted_out'")
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({OLD_STATUSES})")
    for event in COUNT_TRIGGERS:
        op.execute(f"DROP TRIGGER message_count_{event} ON message")
        op.execute(f"DROP FUNCTION message_count_{event}()")
    op.drop_index("ix_message_count_dispatch_id", table_name="message_count")
    op.drop_table("message_count")
