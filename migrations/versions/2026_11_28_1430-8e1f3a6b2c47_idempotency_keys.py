"""idempotency keys of dispatch creates; the reason of a dispatch's pause or cancel

Revision ID: 8e1f3a6b2c47
Revises: 5c0b7d2e4a91
Create Date: 2026-11-28 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e1f3a6b2c47"
down_revision: str | None = "5c0b7d2e4a91"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dispatch", sa.Column("status_reason", sa.String(length=300), nullable=True))
    op.create_table(
        "idempotency_key",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["dispatch_id"],
            ["dispatch.id"],
            name=op.f("fk_idempotency_key_dispatch_id_dispatch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_key")),
    )


def downgrade() -> None:
    op.drop_table("idempotency_key")
    op.drop_column("dispatch", "status_reason")
