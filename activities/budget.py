"""The error budget: a dispatch whose recent attempts fail beyond a share pauses itself, with
the reason, instead of grinding through a million retries.

Kept per worker process, over the attempts that process made (batches and per-client attempts
alike): with several workers, each judges its own share of the dispatch's traffic, which is a
sample of the same remote. Off unless ERROR_BUDGET_SHARE is set.
"""

from collections import OrderedDict, deque
from dataclasses import dataclass, field

# Dispatches followed at once; the least recently attempted is forgotten first.
MAX_DISPATCHES = 1000


@dataclass
class ErrorBudget:
    share: float | None  # failures above this share of `window` attempts trip it; None: off
    window: int
    _recent: OrderedDict[int, deque[bool]] = field(default_factory=OrderedDict)

    def record(self, dispatch_id: int, *, failed: bool) -> str | None:
        """Counts one attempt; the reason to pause when the budget is spent (once: the
        dispatch's record starts afresh, as it would after a resume)."""
        if self.share is None:
            return None
        recent = self._recent.pop(dispatch_id, None)
        if recent is None:
            recent = deque(maxlen=self.window)
        self._recent[dispatch_id] = recent
        while len(self._recent) > MAX_DISPATCHES:
            self._recent.popitem(last=False)
        recent.append(failed)
        if len(recent) < self.window:
            return None
        failures = sum(recent)
        if failures <= self.share * self.window:
            return None
        del self._recent[dispatch_id]
        return (
            f"error budget spent: {failures} of the last {self.window} attempts failed "
            f"(limit {self.share:.0%})"
        )
