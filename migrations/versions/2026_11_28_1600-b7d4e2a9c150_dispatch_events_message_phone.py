"""the control actions of each dispatch (dispatch_event); the phone a message goes to

Revision ID: b7d4e2a9c150
Revises: 8e1f3a6b2c47
Create Date: 2026-11-28 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b7d4e2a9c150"
down_revision: str | None = "8e1f3a6b2c47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_event",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_event")),
    )
    op.create_index(
        "ix_dispatch_event_dispatch_id", "dispatch_event", ["dispatch_id", "id"], unique=False
    )
    op.add_column("message", sa.Column("phone", sa.String(length=11), nullable=True))
    # Messages laid out before this revision learn their client's number.
    op.execute(
        "UPDATE message SET phone = client.phone FROM client WHERE client.id = message.client_id"
    )


def downgrade() -> None:
    op.drop_column("message", "phone")
    op.drop_index("ix_dispatch_event_dispatch_id", table_name="dispatch_event")
    op.drop_table("dispatch_event")
