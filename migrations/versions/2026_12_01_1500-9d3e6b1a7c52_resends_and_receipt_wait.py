"""resends and receipts not come: a dispatch resent from another, messages still sent by time

Revision ID: 9d3e6b1a7c52
Revises: f1b7d2c9e4a6
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9d3e6b1a7c52"
down_revision: str | None = "f1b7d2c9e4a6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A resend's audience: the clients of dispatch `resent_from` whose messages had one of
    # `resend_statuses` (a `sent` one only if sent before `resend_sent_before`).
    op.add_column("dispatch", sa.Column("resent_from", sa.BigInteger(), nullable=True))
    op.add_column(
        "dispatch",
        sa.Column("resend_statuses", postgresql.ARRAY(sa.String(16)), nullable=True),
    )
    op.add_column(
        "dispatch", sa.Column("resend_sent_before", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_dispatch_resent_from",
        "dispatch",
        ["resent_from"],
        postgresql_where=sa.text("resent_from IS NOT NULL"),
    )
    # Messages still sent, by dispatch and send time, with their route: those sent within
    # RECEIPT_WAIT_HOURS, whose receipt may still come, are read from it alone (index-only);
    # the `sent` count the triggers keep, less them, is the messages that got none in time. A
    # receipt moves its message out of it.
    op.create_index(
        "ix_message_sent_waiting",
        "message",
        ["dispatch_id", "sent_at"],
        postgresql_include=["route"],
        postgresql_where=sa.text("status = 'sent'"),
    )


def downgrade() -> None:
    op.drop_index("ix_message_sent_waiting", table_name="message")
    op.drop_index("ix_dispatch_resent_from", table_name="dispatch")
    op.drop_column("dispatch", "resend_sent_before")
    op.drop_column("dispatch", "resend_statuses")
    op.drop_column("dispatch", "resent_from")
