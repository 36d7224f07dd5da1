"""clients dispatches messages

Revision ID: 2fbf14f0b27f
Revises:
Create Date: 2026-11-27 13:07:03.623335
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "2fbf14f0b27f"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("phone", sa.String(length=11), nullable=False),
        sa.Column("operator_code", sa.String(length=3), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client")),
        sa.UniqueConstraint("phone", name=op.f("uq_client_phone")),
    )
    op.create_index(op.f("ix_client_operator_code"), "client", ["operator_code"], unique=False)
    op.create_index(op.f("ix_client_tag"), "client", ["tag"], unique=False)
    op.create_table(
        "dispatch",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.String(length=1000), nullable=False),
        sa.Column(
            "operator_codes",
            postgresql.ARRAY(sa.String(length=3)),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "tags", postgresql.ARRAY(sa.String(length=64)), server_default="{}", nullable=False
        ),
        sa.Column("target_all", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("window_start", sa.Time(), nullable=True),
        sa.Column("window_end", sa.Time(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="scheduled", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'running', 'paused', 'completed', 'cancelled')",
            name=op.f("ck_dispatch_status"),
        ),
        sa.CheckConstraint(
            "(window_start IS NULL) = (window_end IS NULL)",
            name=op.f("ck_dispatch_window_both_or_none"),
        ),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_dispatch_ends_after_start")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch")),
    )
    op.create_table(
        "message",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'retrying', 'sent', 'failed', 'expired', 'cancelled')",
            name=op.f("ck_message_status"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["client.id"],
            name=op.f("fk_message_client_id_client"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dispatch_id"],
            ["dispatch.id"],
            name=op.f("fk_message_dispatch_id_dispatch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
        sa.UniqueConstraint("dispatch_id", "client_id", name="uq_message_dispatch_client"),
    )
    op.create_index(
        "ix_message_dispatch_status", "message", ["dispatch_id", "status"], unique=False
    )
    op.create_index("ix_message_client_id", "message", ["client_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_message_client_id", table_name="message")
    op.drop_index("ix_message_dispatch_status", table_name="message")
    op.drop_table("message")
    op.drop_table("dispatch")
    op.drop_index(op.f("ix_client_tag"), table_name="client")
    op.drop_index(op.f("ix_client_operator_code"), table_name="client")
    op.drop_table("client")
