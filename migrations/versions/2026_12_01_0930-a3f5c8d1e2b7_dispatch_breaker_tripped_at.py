"""when a batch of the dispatch last opened its breaker, read by every batch in flight

Revision ID: a3f5c8d1e2b7
Revises: e7c91f3a2b64
Create Date: 2026-12-01 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a3f5c8d1e2b7"
down_revision: str | None = "e7c91f3a2b64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dispatch",
        sa.Column("breaker_tripped_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("dispatch", "breaker_tripped_at")
