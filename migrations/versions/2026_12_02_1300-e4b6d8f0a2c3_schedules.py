"""schedules: recurring dispatches, and the schedule that made a dispatch

Revision ID: e4b6d8f0a2c3
Revises: c3e5a7b9d1f2
Create Date: 2026-12-02 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e4b6d8f0a2c3"
down_revision: str | None = "c3e5a7b9d1f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A recurring dispatch's definition; its Temporal Schedule `schedule-<id>` runs it.
    op.create_table(
        "schedule",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cron", sa.String(100), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("dispatch", postgresql.JSONB(), nullable=False),
        sa.Column("overlap", sa.String(8), nullable=False, server_default="skip"),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("pause_reason", sa.String(200), nullable=True),
        sa.Column("runs_skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_skipped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("overlap IN ('skip', 'allow')", name=op.f("ck_schedule_overlap")),
    )
    # The schedule whose run made the dispatch. No foreign key: a deleted schedule leaves its
    # dispatches, and their link, in place.
    op.add_column("dispatch", sa.Column("schedule_id", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_dispatch_schedule_id",
        "dispatch",
        ["schedule_id", "id"],
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_dispatch_schedule_id", table_name="dispatch")
    op.drop_column("dispatch", "schedule_id")
    op.drop_table("schedule")
