"""Table models: clients, dispatches and their messages."""

from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PHONE_LENGTH = 11
TAG_MAX_LENGTH = 64
TEXT_MAX_LENGTH = 1000
TIMEZONE_MAX_LENGTH = 64
IDEMPOTENCY_KEY_MAX_LENGTH = 200
STATUS_REASON_MAX_LENGTH = 300
# An operator's reason for a pause, resume or cancel (kept as the status reason).
CONTROL_REASON_MAX_LENGTH = 200
ACTOR_MAX_LENGTH = 200
ROUTE_NAME_MAX_LENGTH = 32


def utcnow() -> datetime:
    return datetime.now(UTC)


def _timestamp(*, nullable: bool = False, onupdate: bool = False) -> sa.Column:  # type: ignore[type-arg]
    """A timestamptz column; `onupdate` ones are refreshed by every UPDATE, ORM or Core."""
    return sa.Column(
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=None if nullable else sa.func.now(),
        onupdate=utcnow if onupdate else None,
    )


class DispatchStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class MessageStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SENT = "sent"
    # The gateway's receipt: the phone got it (every part of it), or could not (a part
    # undelivered, expired or rejected; the reason in last_error). Both went out as `sent` did.
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # The client opted out (the stop list) before the message could go.
    OPTED_OUT = "opted_out"
    # A personal text the client lacked a key for (no default): nothing sent, the keys named
    # in last_error (core.templates).
    UNRENDERED = "unrendered"
    # The frequency cap (FREQUENCY_CAP): its client had had its messages for the period.
    CAPPED = "capped"


class MessageSender(StrEnum):
    COHORT = "cohort"
    OWED = "owed"
    DELIVERY = "delivery"


OPEN_MESSAGE_STATUSES = (MessageStatus.PENDING, MessageStatus.RETRYING)
# A dispatch that may still send: it can be cancelled, edited in part, and needs a workflow.
UNFINISHED_DISPATCH_STATUSES = (
    DispatchStatus.SCHEDULED,
    DispatchStatus.RUNNING,
    DispatchStatus.PAUSED,
)
# What a running or paused dispatch lets an edit change: the workflows already running read
# them again. The filter and start_at shaped the audience and its layout, and stay.
EDITABLE_WHILE_RUNNING = frozenset({"end_at", "text", "window"})
FINAL_MESSAGE_STATUSES = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
    MessageStatus.EXPIRED,
    MessageStatus.CANCELLED,
    MessageStatus.OPTED_OUT,
    MessageStatus.UNRENDERED,
    MessageStatus.CAPPED,
)
# The messages that went out to a gateway: sent, and what their receipts made of them.
WENT_OUT_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
# The messages whose clients a resend may go to again: those the first send did not reach, or
# that no receipt said it did (`sent`, once RECEIPT_WAIT_HOURS have passed). Never `opted_out`
# (the client asked for no more), nor one still open or delivered. `unrendered`: once the
# clients have the keys their text needs.
RESENDABLE_STATUSES = (
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
    MessageStatus.EXPIRED,
    MessageStatus.CANCELLED,
    MessageStatus.UNRENDERED,
    MessageStatus.CAPPED,
    MessageStatus.SENT,
)
DELIVERY_SHAPES = ("cohorts", "per_client")


def _status_check(enum: type[StrEnum], column: str = "status") -> str:
    return f"{column} IN (" + ", ".join(f"'{member.value}'" for member in enum) + ")"


class Client(SQLModel, table=True):
    """A mobile subscriber who may receive dispatches."""

    # Lists filtered by an attribute's value: attributes @> '{"city": "Omsk"}'.
    __table_args__ = (
        sa.Index(
            "ix_client_attributes",
            "attributes",
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    phone: str = Field(sa_column=sa.Column(sa.String(PHONE_LENGTH), nullable=False, unique=True))
    operator_code: str = Field(sa_column=sa.Column(sa.String(3), nullable=False, index=True))
    tag: str = Field(
        default="", sa_column=sa.Column(sa.String(TAG_MAX_LENGTH), nullable=False, index=True)
    )
    timezone: str = Field(sa_column=sa.Column(sa.String(TIMEZONE_MAX_LENGTH), nullable=False))
    # The stop list: never sent to (judged at each send), and left out of new audiences.
    opted_out: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    opted_out_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    # Its own values for personal texts ({{ key }}): a flat object of strings (api.schemas).
    attributes: dict[str, str] = Field(
        default_factory=dict,
        sa_column=sa.Column(
            postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp(onupdate=True))


class Dispatch(SQLModel, table=True):
    """A mailing: one text sent to every matching client between start_at and end_at."""

    __table_args__ = (
        sa.CheckConstraint("end_at > start_at", name="ends_after_start"),
        sa.CheckConstraint(_status_check(DispatchStatus), name="status"),
        sa.CheckConstraint(
            "(window_start IS NULL) = (window_end IS NULL)", name="window_both_or_none"
        ),
        sa.CheckConstraint(
            "delivery IN (" + ", ".join(f"'{shape}'" for shape in DELIVERY_SHAPES) + ")",
            name="delivery",
        ),
        # The resends of a dispatch.
        sa.Index(
            "ix_dispatch_resent_from",
            "resent_from",
            postgresql_where=sa.text("resent_from IS NOT NULL"),
        ),
        # The dispatches a schedule made (GET /dispatches?schedule_id=, and its overlap check).
        sa.Index(
            "ix_dispatch_schedule_id",
            "schedule_id",
            "id",
            postgresql_where=sa.text("schedule_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    start_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    end_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    text: str = Field(sa_column=sa.Column(sa.String(TEXT_MAX_LENGTH), nullable=False))
    # Filter: a client matches when its code is in operator_codes (if non-empty) and its tag is
    # in tags (if non-empty). Both empty targets everyone, which must be asked for (target_all).
    operator_codes: list[str] = Field(
        default_factory=list,
        sa_column=sa.Column(postgresql.ARRAY(sa.String(3)), nullable=False, server_default="{}"),
    )
    tags: list[str] = Field(
        default_factory=list,
        sa_column=sa.Column(
            postgresql.ARRAY(sa.String(TAG_MAX_LENGTH)), nullable=False, server_default="{}"
        ),
    )
    target_all: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    # Send window in each client's local time; end before start crosses midnight.
    window_start: time | None = Field(default=None, sa_column=sa.Column(sa.Time, nullable=True))
    window_end: time | None = Field(default=None, sa_column=sa.Column(sa.Time, nullable=True))
    status: DispatchStatus = Field(
        default=DispatchStatus.SCHEDULED,
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="scheduled"),
    )
    # Why it is paused or cancelled (an operator's reason, or the remote refusing our
    # credentials); cleared on resume.
    status_reason: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(STATUS_REASON_MAX_LENGTH), nullable=True)
    )
    # "cohorts" (zone cohorts sending in batches) or "per_client" (a child workflow each).
    delivery: str = Field(
        default="cohorts",
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="cohorts"),
    )
    # When a batch of this dispatch last opened its breaker (failures in a row): every batch
    # in flight reads it with the status and stops, not only the one that tripped.
    breaker_tripped_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )
    # A resend (POST /dispatches/{id}/resend): its audience is the clients of dispatch
    # `resent_from` whose messages had one of `resend_statuses` when it laid out its own (a
    # `sent` one only if sent before `resend_sent_before`), not its filter, which is the first
    # dispatch's, kept for the record. No foreign key: the link outlives the first's deletion.
    resent_from: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    resend_statuses: list[str] | None = Field(
        default=None, sa_column=sa.Column(postgresql.ARRAY(sa.String(16)), nullable=True)
    )
    resend_sent_before: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )
    # Neither capped nor counted by the frequency cap (an order confirmation must go).
    transactional: bool = Field(
        default=False,
        sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()),
    )
    # The schedule whose run made it (api.services.schedules). No foreign key: the dispatch and
    # its link outlive the schedule's deletion.
    schedule_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp(onupdate=True))


class Message(SQLModel, table=True):
    """One send of a dispatch to one client; its id is the msgId sent to the remote."""

    __table_args__ = (
        sa.UniqueConstraint("dispatch_id", "client_id", name="uq_message_dispatch_client"),
        sa.CheckConstraint(_status_check(MessageStatus), name="status"),
        # A dispatch's messages of one status, by id (keyset pages).
        sa.Index("ix_message_dispatch_status", "dispatch_id", "status", "id"),
        # A client's messages by id; deleting a client nulls their client_id.
        sa.Index("ix_message_client_id", "client_id", "id"),
        sa.CheckConstraint(_status_check(MessageSender, "sender"), name="sender"),
        # A cohort's batches read its pending messages by id; sent ones leave the index.
        sa.Index(
            "ix_message_cohort_pending",
            "dispatch_id",
            "cohort",
            "id",
            postgresql_where=sa.text("status = 'pending' AND sender = 'cohort'"),
        ),
        # Hand-offs a cohort still owes: found again after a batch that wrote them failed.
        sa.Index(
            "ix_message_owed",
            "dispatch_id",
            "cohort",
            "id",
            postgresql_where=sa.text("sender = 'owed'"),
        ),
        # Messages still `sent` by the time they went out, with their route: those sent within
        # RECEIPT_WAIT_HOURS may still get a receipt, the others got none in time (the
        # statistics count those as the `sent` count less these, read index-only). A receipt
        # takes its message out.
        sa.Index(
            "ix_message_sent_waiting",
            "dispatch_id",
            "sent_at",
            postgresql_include=["route"],
            postgresql_where=sa.text("status = 'sent'"),
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    dispatch_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("dispatch.id", ondelete="CASCADE"), nullable=False
        )
    )
    # A deleted client keeps its message history; its unsent messages end cancelled.
    client_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("client.id", ondelete="SET NULL"), nullable=True
        ),
    )
    # The number it goes to, kept when the client is deleted.
    phone: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(PHONE_LENGTH), nullable=True)
    )
    status: MessageStatus = Field(
        default=MessageStatus.PENDING,
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="pending"),
    )
    # The cohort (a zone, or "all") of its dispatch; NULL in the per-client shape.
    cohort: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(TIMEZONE_MAX_LENGTH), nullable=True)
    )
    # Who sends it: its cohort's batches ("cohort"); a delivery workflow of its own that the
    # cohort still owes it ("owed": handed off by a batch, the child not yet started); or that
    # delivery ("delivery", and every message of the per-client shape).
    sender: str = Field(
        default=MessageSender.DELIVERY,
        sa_column=sa.Column(sa.String(8), nullable=False, server_default="delivery"),
    )
    attempts: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))
    # The send route (gateway) that has it, or may have it: set by the request that it took,
    # and by one whose answer was lost (a timeout), which pins its retries to that route so
    # that a failover never sends it through two gateways.
    route: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(ROUTE_NAME_MAX_LENGTH), nullable=True)
    )
    # The SMS parts of the text that went out (see core.segments).
    segments: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger, nullable=True))
    # The text rendered for its client when it went out; NULL: the dispatch's text as is.
    text: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # When the receipt that made it delivered or undelivered says that happened.
    receipt_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    sent_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp(onupdate=True))


class IdempotencyKey(SQLModel, table=True):
    """A client's `Idempotency-Key` for a create: a retry with the same key and body gets the
    same dispatch back, never a second one."""

    __tablename__ = "idempotency_key"

    key: str = Field(sa_column=sa.Column(sa.String(IDEMPOTENCY_KEY_MAX_LENGTH), primary_key=True))
    # sha256 of the request body as validated: the same key with another body is refused.
    request_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    dispatch_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("dispatch.id", ondelete="CASCADE"), nullable=False
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class DispatchEvent(SQLModel, table=True):
    """A control action on a dispatch (create, edit, pause, resume, cancel, delete, an
    automatic pause): when, by whom, why. Kept after the dispatch is deleted (no foreign key),
    so that its deletion is on record too."""

    __tablename__ = "dispatch_event"
    __table_args__ = (sa.Index("ix_dispatch_event_dispatch_id", "dispatch_id", "id"),)

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    dispatch_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    action: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    # "api" (the token's subject once authentication exists), "temporal" (a signal from the
    # Temporal UI or CLI), or "worker" (the service itself: refused credentials, error budget).
    actor: str = Field(sa_column=sa.Column(sa.String(ACTOR_MAX_LENGTH), nullable=False))
    reason: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(STATUS_REASON_MAX_LENGTH), nullable=True)
    )
    # What else is worth knowing: the fields an edit changed, messages a cancel ended.
    details: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(postgresql.JSONB, nullable=True)
    )


# A token bucket shared by every worker process: the global cap on sends per second. One row per
# limiter; `next_free` is the instant from which the next send is free to go (GCRA).
send_rate_limit = sa.Table(
    "send_rate_limit",
    SQLModel.metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("next_free", sa.DateTime(timezone=True), nullable=False),
)

# Message counts by dispatch and status, kept in step by statement-level triggers on `message`
# (migration d4a8c61e5f02): each INSERT, UPDATE or DELETE of messages appends its net change,
# in its own transaction; a count is the sum of its rows, and `core.stats.compact_counts`
# folds the rows of a (dispatch, status) into one now and then. TRUNCATE bypasses the
# triggers: truncate this table with `message`.
message_count_t = sa.Table(
    "message_count",
    SQLModel.metadata,
    sa.Column("dispatch_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
)

# Sent messages per (dispatch, minute of sent_at), kept by triggers the same way (migration
# e7c91f3a2b64) and folded with the counts: the charts of sends over time read it.
message_sent_minute_t = sa.Table(
    "message_sent_minute",
    SQLModel.metadata,
    sa.Column("dispatch_id", sa.BigInteger, nullable=False),
    sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Index("ix_message_sent_minute_dispatch_id", "dispatch_id", "minute"),
    sa.Index("ix_message_sent_minute_minute", "minute"),
)

# The circuit of each send route, shared by every worker process (activities.circuits): closed
# (in use), open (down since `down_since`: its traffic goes to the next route, and a probe may
# go from `probe_at`), probing (one request is finding out; `probe_at` is when its claim
# lapses). A route without a row is closed.
send_route_t = sa.Table(
    "send_route",
    SQLModel.metadata,
    sa.Column("name", sa.String(ROUTE_NAME_MAX_LENGTH), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("down_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("probe_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("failed_probes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('closed', 'open', 'probing')", name="state"),
)

# Messages with a route per (dispatch, route, status), with their segments, kept by triggers
# as message_count is (migration c6e2f9a4b3d1): the statistics per route read it.
message_route_count_t = sa.Table(
    "message_route_count",
    SQLModel.metadata,
    sa.Column("dispatch_id", sa.BigInteger, nullable=False),
    sa.Column("route", sa.String(ROUTE_NAME_MAX_LENGTH), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("segments", sa.BigInteger, nullable=False),
    sa.Index("ix_message_route_count_dispatch_id", "dispatch_id", "route"),
)

# Each part's delivery receipt, as the gateway posted it (api.services.receipts): applied to its
# message at once when its send is recorded, else kept (`applied` false) until it is.
message_receipt_t = sa.Table(
    "message_receipt",
    SQLModel.metadata,
    sa.Column(
        "message_id",
        sa.BigInteger,
        sa.ForeignKey("message.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("part", sa.SmallInteger, primary_key=True),
    sa.Column("parts", sa.SmallInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.String(200), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("route", sa.String(ROUTE_NAME_MAX_LENGTH), nullable=True),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("applied", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_message_receipt_waiting", "message_id", postgresql_where=sa.text("NOT applied")),
)


# The messages that count toward their client's frequency cap (core.caps), each recorded when
# its send was let through; only while its message is open or went out does it count.
client_send_t = sa.Table(
    "client_send",
    SQLModel.metadata,
    sa.Column(
        "message_id",
        sa.BigInteger,
        sa.ForeignKey("message.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("client_id", sa.BigInteger, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_client_send_client_at", "client_id", "at"),
)


class TestMessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


# A test send of a dispatch (POST /dispatches/{id}/test): one message to a number, rendered for
# its client (or with the defaults), sent through the normal send path and never counted with
# the dispatch's messages. Its id comes from the messages' sequence: a msgId at a gateway is
# never both a test and a real message.
test_message_t = sa.Table(
    "test_message",
    SQLModel.metadata,
    sa.Column(
        "id", sa.BigInteger, server_default=sa.text("nextval('message_id_seq')"), primary_key=True
    ),
    sa.Column(
        "dispatch_id",
        sa.BigInteger,
        sa.ForeignKey("dispatch.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "client_id", sa.BigInteger, sa.ForeignKey("client.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("phone", sa.String(PHONE_LENGTH), nullable=False),
    sa.Column("operator_code", sa.String(3), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("segments", sa.SmallInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("route", sa.String(ROUTE_NAME_MAX_LENGTH), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("actor", sa.String(ACTOR_MAX_LENGTH), nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(_status_check(TestMessageStatus), name="status"),
    sa.Index("ix_test_message_dispatch_id", "dispatch_id", "id"),
)

# Core table handles for bulk statements (activities, statistics).
client_t: sa.Table = Client.__table__  # type: ignore[attr-defined]
dispatch_t: sa.Table = Dispatch.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]
dispatch_event_t: sa.Table = DispatchEvent.__table__  # type: ignore[attr-defined]


SCHEDULE_NAME_MAX_LENGTH = 100
SCHEDULE_OVERLAPS = ("skip", "allow")


class Schedule(SQLModel, table=True):
    """A recurring dispatch: at each time of `cron` in `timezone`, its Temporal Schedule
    (`schedule-<id>`) runs, and the run makes a dispatch of `dispatch` (the body of a create
    but for its times: it starts at the scheduled time and lasts `duration_minutes`)."""

    __tablename__ = "schedule"
    __table_args__ = (
        sa.CheckConstraint(
            "overlap IN (" + ", ".join(f"'{o}'" for o in SCHEDULE_OVERLAPS) + ")",
            name="overlap",
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(SCHEDULE_NAME_MAX_LENGTH), nullable=False))
    cron: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    timezone: str = Field(sa_column=sa.Column(sa.String(TIMEZONE_MAX_LENGTH), nullable=False))
    # api.schemas.schedules.ScheduleDispatch as JSON: text, filter, window, duration_minutes,
    # normalize_text, delivery. Each run builds a create's body from it.
    dispatch: dict[str, Any] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
    # "skip": a run while the schedule's previous dispatch is still open makes none; "allow".
    overlap: str = Field(
        default="skip", sa_column=sa.Column(sa.String(8), nullable=False, server_default="skip")
    )
    paused: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    pause_reason: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(CONTROL_REASON_MAX_LENGTH), nullable=True)
    )
    # Runs that made no dispatch (overlap, paused, too late), counted by the runs themselves.
    runs_skipped: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    last_skipped_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp(onupdate=True))


schedule_t: sa.Table = Schedule.__table__  # type: ignore[attr-defined]
