"""cohorts: delivery shape of dispatches, cohort and sender of messages, the send-rate bucket

Revision ID: 5c0b7d2e4a91
Revises: 2fbf14f0b27f
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c0b7d2e4a91"
down_revision: str | None = "2fbf14f0b27f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dispatch",
        sa.Column("delivery", sa.String(length=16), server_default="per_client", nullable=False),
    )
    # Dispatches that exist already were started in the per-client shape; new ones default
    # to cohorts.
    op.alter_column("dispatch", "delivery", server_default="cohorts")
    op.create_check_constraint(
        op.f("ck_dispatch_delivery"), "dispatch", "delivery IN ('cohorts', 'per_client')"
    )
    op.add_column("message", sa.Column("cohort", sa.String(length=64), nullable=True))
    # Messages that exist already belong to per-client deliveries.
    op.add_column(
        "message",
        sa.Column("sender", sa.String(length=8), server_default="delivery", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_message_sender"), "message", "sender IN ('cohort', 'owed', 'delivery')"
    )
    op.create_index(
        "ix_message_cohort_pending",
        "message",
        ["dispatch_id", "cohort", "id"],
        postgresql_where=sa.text("status = 'pending' AND sender = 'cohort'"),
    )
    op.create_index(
        "ix_message_owed",
        "message",
        ["dispatch_id", "cohort", "id"],
        postgresql_where=sa.text("sender = 'owed'"),
    )
    op.create_table(
        "send_rate_limit",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_free", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_rate_limit")),
    )


def downgrade() -> None:
    op.drop_table("send_rate_limit")
    op.drop_index("ix_message_owed", table_name="message")
    op.drop_index("ix_message_cohort_pending", table_name="message")
    op.drop_constraint(op.f("ck_message_sender"), "message", type_="check")
    op.drop_column("message", "sender")
    op.drop_column("message", "cohort")
    op.drop_constraint(op.f("ck_dispatch_delivery"), "dispatch", type_="check")
    op.drop_column("dispatch", "delivery")
