"""send routes: a message's route and segments, each route's circuit, counts per route

Revision ID: c6e2f9a4b3d1
Revises: a3f5c8d1e2b7
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c6e2f9a4b3d1"
down_revision: str | None = "a3f5c8d1e2b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As for message_count: each statement appends its net change per (dispatch, route, status)
# of the messages that have a route, with the segments they carry; folded with the counts.
ROUTED = "route IS NOT NULL"
COLUMNS = "dispatch_id, route, status"
TRIGGERS = {
    "insert": (
        "NEW TABLE AS new_rows",
        f"SELECT {COLUMNS}, count(*), sum(coalesce(segments, 0)) FROM new_rows "
        f"WHERE {ROUTED} GROUP BY 1, 2, 3",
    ),
    "update": (
        "NEW TABLE AS new_rows OLD TABLE AS old_rows",
        f"SELECT {COLUMNS}, sum(n), sum(s) FROM ("
        f" SELECT {COLUMNS}, 1 AS n, coalesce(segments, 0) AS s FROM new_rows WHERE {ROUTED}"
        f" UNION ALL SELECT {COLUMNS}, -1, -coalesce(segments, 0) FROM old_rows"
        f" WHERE {ROUTED}) AS change"
        " GROUP BY 1, 2, 3 HAVING sum(n) <> 0 OR sum(s) <> 0",
    ),
    "delete": (
        "OLD TABLE AS old_rows",
        f"SELECT {COLUMNS}, -count(*), -sum(coalesce(segments, 0)) FROM old_rows "
        f"WHERE {ROUTED} GROUP BY 1, 2, 3",
    ),
}


def upgrade() -> None:
    op.add_column("message", sa.Column("route", sa.String(32), nullable=True))
    op.add_column("message", sa.Column("segments", sa.SmallInteger(), nullable=True))
    op.create_table(
        "send_route",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("down_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_probes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('closed', 'open', 'probing')", name=op.f("ck_send_route_state")
        ),
    )
    op.create_table(
        "message_route_count",
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_message_route_count_dispatch_id", "message_route_count", ["dispatch_id", "route"]
    )
    for event, (referencing, select) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION message_route_count_{event}() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN INSERT INTO message_route_count "
            f"(dispatch_id, route, status, n, segments) {select}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER message_route_count_{event} AFTER {event.upper()} ON message "
            f"REFERENCING {referencing} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION message_route_count_{event}()"
        )


def downgrade() -> None:
    for event in TRIGGERS:
        op.execute(f"DROP TRIGGER message_route_count_{event} ON message")
        op.execute(f"DROP FUNCTION message_route_count_{event}()")
    op.drop_table("message_route_count")
    op.drop_table("send_route")
    op.drop_column("message", "segments")
    op.drop_column("message", "route")
