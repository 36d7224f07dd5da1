"""personal texts: client attributes, each message's rendered text, `unrendered`, test sends

Revision ID: a8d3f5e1c7b9
Revises: 9d3e6b1a7c52
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a8d3f5e1c7b9"
down_revision: str | None = "9d3e6b1a7c52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "'pending', 'retrying', 'sent', 'delivered', 'undelivered', 'failed', 'expired', "
    "'cancelled', 'opted_out'"
)
NEW_STATUSES = OLD_STATUSES + ", 'unrendered'"


def upgrade() -> None:
    # A client's own values for personal texts: a flat object of strings.
    op.add_column(
        "client",
        sa.Column(
            "attributes",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
    )
    # Lists filtered by an attribute's value (attributes @> '{"city": "Omsk"}').
    op.create_index(
        "ix_client_attributes",
        "client",
        ["attributes"],
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
    )
    # The text rendered for its client when it went out (NULL: the dispatch's text as is).
    op.add_column("message", sa.Column("text", sa.Text(), nullable=True))
    # A personal text the client lacked a key for: nothing sent, the keys in last_error.
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({NEW_STATUSES})")
    # A test send of a dispatch: one message to a number, through the normal send path, never
    # counted with the dispatch's messages. Its id comes from the messages' sequence, so that
    # no msgId at a gateway is ever both a test and a real message.
    op.create_table(
        "test_message",
        sa.Column(
            "id",
            sa.BigInteger(),
            server_default=sa.text("nextval('message_id_seq')"),
            primary_key=True,
        ),
        sa.Column(
            "dispatch_id",
            sa.BigInteger(),
            sa.ForeignKey("dispatch.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "client_id",
            sa.BigInteger(),
            sa.ForeignKey("client.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("phone", sa.String(11), nullable=False),
        sa.Column("operator_code", sa.String(3), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("segments", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("route", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')", name=op.f("ck_test_message_status")
        ),
    )
    op.create_index("ix_test_message_dispatch_id", "test_message", ["dispatch_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_test_message_dispatch_id", table_name="test_message")
    op.drop_table("test_message")
    op.execute("UPDATE message SET status = 'failed' WHERE status = 'unrendered'")
    op.drop_constraint("ck_message_status", "message")
    op.create_check_constraint(op.f("ck_message_status"), "message", f"status IN ({OLD_STATUSES})")
    op.drop_column("message", "text")
    op.drop_index("ix_client_attributes", table_name="client")
    op.drop_column("client", "attributes")
