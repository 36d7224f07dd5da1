"""What a send's answer means, for both shapes: one verdict from the remote's answer or error.

The per-client attempt and the cohort's batch both ask `FailurePolicy.judge`, so that "our
credentials refused → the message stays open and the dispatch pauses, refused for good → the
message fails, anything else → it is retried" is decided in one place, and so are the metrics
it counts, the log line it writes and the error budget it feeds.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum

from activities.budget import ErrorBudget
from activities.records import error_text
from activities.remote import RemoteError
from core import metrics
from core.logging import ids
from core.models import MessageStatus

log = logging.getLogger(__name__)


class Fate(StrEnum):
    """What becomes of the message after one request."""

    SENT = "sent"  # the remote took it
    KEEP_OPEN = "keep_open"  # our token or account was refused: it waits for the resume
    FAILED = "failed"  # refused for good (a 4xx other than 408/429): it fails
    RETRY = "retry"  # transient (timeout, 5xx, 429, garbage): it is tried again


@dataclass(frozen=True)
class Verdict:
    fate: Fate
    # The remote's error as kept on the message row (None when sent).
    error: str | None = None
    # Seconds the remote asked us to wait (a 429's Retry-After).
    retry_after: float | None = None
    # The dispatch's error budget is spent, with the reason: the dispatch pauses.
    budget_spent: str | None = None

    @property
    def pauses(self) -> list[str]:
        """Why the dispatch must pause now, if it must (credentials first: the one to fix)."""
        reasons = []
        if self.fate == Fate.KEEP_OPEN:
            reasons.append(f"the remote refused our credentials: {self.error}")
        if self.budget_spent is not None:
            reasons.append(self.budget_spent)
        return reasons

    @property
    def stops_sending(self) -> bool:
        """No further request of this dispatch should go out until it is resumed."""
        return bool(self.pauses)


class FailurePolicy:
    """Judges each request's outcome; one per worker process (it holds the error budget)."""

    def __init__(self, budget: ErrorBudget | None = None) -> None:
        self.budget = budget or ErrorBudget(share=None, window=1)

    def judge(
        self,
        error: RemoteError | None,
        *,
        message_id: int,
        dispatch_id: int,
        client_id: int | None,
        route: str | None = None,
        retry_note: str = "will retry",
    ) -> Verdict:
        """The verdict on one request (`error` None: accepted) through `route` (None: no
        route took it); counts and logs it."""
        log_ids = ids(message_id=message_id, dispatch_id=dispatch_id, client_id=client_id)
        spent = self.budget.record(dispatch_id, failed=error is not None)
        label = route or ""
        if error is None:
            metrics.count_attempt("sent", route=label)
            metrics.MESSAGES_FINISHED.labels(MessageStatus.SENT).inc()
            log.info("remote accepted: message sent through route %s", route, extra=log_ids)
            return Verdict(Fate.SENT, budget_spent=spent)
        reason = error_text(error if route is None else f"route {route}: {error}")
        if error.credentials:
            metrics.count_attempt("paused", error.kind, label)
            log.warning("remote refused our credentials: %s", reason, extra=log_ids)
            return Verdict(Fate.KEEP_OPEN, reason, budget_spent=spent)
        if error.permanent:
            metrics.count_attempt("rejected", error.kind, label)
            metrics.MESSAGES_FINISHED.labels(MessageStatus.FAILED).inc()
            log.warning("remote rejected message: %s", reason, extra=log_ids)
            return Verdict(Fate.FAILED, reason, budget_spent=spent)
        metrics.count_attempt("retried", error.kind, label)
        log.warning("send failed, %s: %s", retry_note, reason, extra=log_ids)
        return Verdict(Fate.RETRY, reason, retry_after=error.retry_after, budget_spent=spent)
