"""frequency cap: each client's capped sends by time, `capped`, transactional dispatches

Revision ID: c3e5a7b9d1f2
Revises: a8d3f5e1c7b9
Create Date: 2026-12-02 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3e5a7b9d1f2"
down_revision: str | None = "a8d3f5e1c7b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "'pending', 'retrying', 'sent', 'delivered', 'undelivered', 'failed', 'expired', "
    "'cancelled', 'opted_out', 'unrendered'"
)
NEW_STATUSES = OLD_STATUSES + ", 'capped'"


def upgrade() -> None:
    # A transactional dispatch (an order confirmation) is neither capped nor counted.
    op.add_column(
        "dispatch",
        sa.Column("transactional", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # A message the frequency cap kept from its client: nothing sent.
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({NEW_STATUSES})")
    # The messages that count toward their client's cap, each recorded when its send was let
    # through (activities.caps): read by client and time, under the client's row lock.
    op.create_table(
        "client_send",
        sa.Column(
            "message_id",
            sa.BigInteger(),
            sa.ForeignKey("message.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("client_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_client_send_client_at", "client_send", ["client_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_client_send_client_at", table_name="client_send")
    op.drop_table("client_send")
    op.execute("UPDATE message SET status = 'cancelled' WHERE status = 'capped'")
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({OLD_STATUSES})")
    op.drop_column("dispatch", "transactional")
