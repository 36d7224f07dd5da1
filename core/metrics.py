"""The service's Prometheus metrics (prometheus_client), in one place for the API and the
workers; docs/metrics.md lists each with its meaning and the queries an operator needs.

Labels stay bounded: outcomes, error classes, statuses, route templates; never an id.
"""

import time

from prometheus_client import Counter, Gauge, Histogram

# Remote answers take milliseconds to seconds; batches seconds to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_SECONDS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)

# API
HTTP_REQUESTS = Counter(
    "mailing_http_requests",
    "HTTP requests answered by the API, by route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "mailing_http_request_duration_seconds",
    "Time the API took to answer, by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
DISPATCHES = Gauge("mailing_dispatches", "Dispatches by status (read at scrape time).", ["status"])
MESSAGES = Gauge("mailing_messages", "Messages by status (read at scrape time).", ["status"])
MESSAGES_WAITING = Gauge(
    "mailing_messages_waiting_for_window",
    "Pending messages of running dispatches whose client's window is closed now (at scrape).",
)
MESSAGES_OPEN = Gauge(
    "mailing_messages_open",
    "Pending and retrying messages by their dispatch's status and whether its end_at is ahead "
    "or passed (read at scrape time).",
    ["status", "dispatch_status", "end"],
)

RECEIPTS = Counter(
    "mailing_receipts",
    "Delivery receipts posted, by the part's status, its message's route (empty when unknown) "
    "and what became of it (applied, waiting, duplicate, out_of_date, unknown).",
    ["status", "route", "outcome"],
)
MESSAGES_RECEIPTED = Counter(
    "mailing_messages_receipted",
    "Messages that receipts made delivered or undelivered, by status and route.",
    ["status", "route"],
)
RECEIPT_DELAY_SECONDS = Histogram(
    "mailing_receipt_delay_seconds",
    "From a message's send to the receipt that decided it (as the gateway dates it), by route.",
    ["route"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 72 * 3600),
)
CAP_CHECKS = Counter(
    "mailing_cap_checks",
    "Messages judged by the frequency cap at their send: let `through` (and counted) or "
    "`held` (they end capped).",
    ["outcome"],
)
RECEIPT_BATCH_RECEIPTS = Histogram(
    "mailing_receipt_batch_receipts",
    "Receipts applied in one transaction: the requests posted at once are applied together.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)

# Workers
REPORT_LAST_SENT = Gauge(
    "mailing_report_last_sent_timestamp_seconds",
    "Unix time this worker last finished the daily report: mailed, or only logged when "
    "REPORT_RECIPIENTS is empty (0: not since it started).",
)
SEND_ATTEMPTS = Counter(
    "mailing_send_attempts",
    "Messages judged for sending, by outcome (sent, retried, rejected, paused, expired, "
    "cancelled, outside_window), the send route of a request (empty when none went) and, for "
    "a failed request, the error class.",
    ["outcome", "error_class", "route"],
)
REMOTE_SECONDS = Histogram(
    "mailing_remote_request_duration_seconds",
    "Time of one request to a gateway, by route and answer class (accepted or an error class).",
    ["route", "answer"],
    buckets=LATENCY_BUCKETS,
)
SEGMENTS_SENT = Counter(
    "mailing_segments_sent", "SMS segments of the messages sent, by route.", ["route"]
)
ROUTE_STATE = Gauge(
    "mailing_route_state",
    "1 for the state each send route's circuit is in (closed, open, probing), as last read.",
    ["route", "state"],
)
ROUTE_TRANSITIONS = Counter(
    "mailing_route_transitions",
    "Circuits this process opened or closed, by route and the state it moved to.",
    ["route", "state"],
)
ROUTE_FAILOVERS = Counter(
    "mailing_route_failovers",
    "Messages that a route certainly did not take and that went on to the next route, by the "
    "route they left.",
    ["route"],
)
MESSAGES_FINISHED = Counter(
    "mailing_messages_finished",
    "Messages this worker moved to a final status, by status.",
    ["status"],
)
RATE_WAIT_SECONDS = Histogram(
    "mailing_rate_limit_wait_seconds",
    "Time a send waited for its route's cap (0 when it was not throttled).",
    buckets=(0, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
RATE_THROTTLED = Gauge(
    "mailing_rate_limit_waiting", "Sends of this worker waiting for the rate cap right now."
)
BATCH_SIZE = Histogram(
    "mailing_batch_messages", "Messages a cohort's batch took on.", buckets=BATCH_SIZE_BUCKETS
)
BATCH_SECONDS = Histogram(
    "mailing_batch_duration_seconds",
    "Time of one batch activity, by how it ended (done, or why it stopped).",
    ["ended"],
    buckets=BATCH_SECONDS_BUCKETS,
)


def observe_remote(started: float, answer: str, route: str = "") -> None:
    REMOTE_SECONDS.labels(route, answer).observe(time.monotonic() - started)


def count_attempt(outcome: str, error_class: str = "", route: str = "") -> None:
    SEND_ATTEMPTS.labels(outcome, error_class, route).inc()
