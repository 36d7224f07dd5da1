"""Client send windows: may a client be messaged at an instant, and when is the next chance.

Pure and deterministic (no clock, no I/O besides zoneinfo's tz database) because it runs inside
Temporal workflow code, where a replay must compute exactly the same instants.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

# One zone for each of Russia's eleven UTC offsets, west to east.
RUSSIA_ZONES = (
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
)
_HHMM = re.compile(r"([0-9]{2}):([0-9]{2})")
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class SendWindow:
    """Local times of day within which a client may be messaged (minute precision)."""

    start: time  # local wall-clock time, inclusive
    end: time  # local wall-clock time, exclusive; end < start crosses midnight (22:00-06:00)

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if not isinstance(value, time):
                raise TypeError(f"send window {name} must be a datetime.time, got {value!r}")
            # A zone-aware time would make comparisons with wall-clock times raise TypeError.
            if value.tzinfo is not None:
                raise ValueError(f"send window {name} must be a naive local time, got {value!r}")
            if value.second or value.microsecond:
                raise ValueError(f"send window {name} must be a whole minute, got {value!r}")
        # Empty or whole-day? Ambiguous, so refuse it: no window at all is spelled None.
        if self.start == self.end:
            raise ValueError(f"send window start and end must differ, both are {self.start}")

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time of day is inside the window."""
        if self.crosses_midnight:
            return local >= self.start or local < self.end
        return self.start <= local < self.end


def parse_hhmm(value: str) -> time:
    """Parse a strict "HH:MM" (00:00..23:59), so that typos fail loudly instead of shifting."""
    match = _HHMM.fullmatch(value)
    if match is None:
        raise ValueError(
            f"expected a time as HH:MM with two-digit hours and minutes, got {value!r}"
        )
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise ValueError(f"expected a time between 00:00 and 23:59, got {value!r}")
    return time(hour, minute)


def format_hhmm(value: time) -> str:
    return value.strftime("%H:%M")


def stored_window(start: time | None, end: time | None) -> SendWindow | None:
    """The window of a dispatch row (both columns set, or neither)."""
    if start is None or end is None:
        return None
    return SendWindow(start=start, end=end)


def is_open(*, at: datetime, window: SendWindow | None, timezone: str) -> bool:
    """Whether the aware instant `at`, seen as wall-clock time in `timezone`, is inside the window.

    A None window means always open. A repeated local hour (fall-back) is judged by its wall-clock
    time alone, so a window may be open twice in one night; that is intended.
    """
    _require_aware(at, "at")
    # Resolve the zone even without a window, so that a bad zone fails the same way every time.
    zone = ZoneInfo(timezone)
    if window is None:
        return True
    return window.contains(at.astimezone(zone).time())


def next_send_instant(
    *,
    now: datetime,
    start_at: datetime,
    end_at: datetime,
    window: SendWindow | None,
    timezone: str,
) -> datetime | None:
    """The earliest instant t with max(now, start_at) <= t < end_at and is_open(t), in UTC.

    None when the window does not open before end_at. The search walks UTC instants using the
    zone's real offsets, one stretch of constant offset at a time, so spring-forward gaps and
    repeated fall-back hours come out right, and the cost is a few zone lookups per call rather
    than a loop over minutes.
    """
    _require_aware(now, "now")
    _require_aware(start_at, "start_at")
    _require_aware(end_at, "end_at")
    zone = ZoneInfo(timezone)
    # Compare in UTC: aware datetimes sharing a tzinfo compare by wall clock, ignoring fold.
    lower = max(now.astimezone(UTC), start_at.astimezone(UTC))
    end = end_at.astimezone(UTC)
    if lower >= end:
        return None
    if window is None:
        return lower

    # Each pass either answers, or moves past one offset transition (at most a couple a year),
    # and end_at bounds the walk, so it ends within a few passes even for end_at years away.
    instant = lower
    while instant < end:
        offset = _offset(instant, zone)
        candidate = _first_open_at_fixed_offset(instant, offset, window)
        probe = min(candidate, end)
        # Same offset at both ends means none changed in between: zones do not switch offsets
        # and back within a day (the candidate is never more than a day ahead).
        if _offset(probe, zone) == offset:
            return candidate if candidate < end else None
        # The offset changes before the window would open: restart from the transition, where
        # local time jumps (into the window, possibly: a gap swallowing the start, or a fall-back
        # landing inside it).
        instant = _transition_after(instant, probe, offset, zone)
    return None


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    if offset is None:  # ZoneInfo always knows its offset; this only narrows the type
        raise ValueError(f"zone {zone.key} has no UTC offset at {instant.isoformat()}")
    return offset


def _first_open_at_fixed_offset(
    instant: datetime, offset: timedelta, window: SendWindow
) -> datetime:
    """The earliest open UTC instant >= instant, pretending the offset never changes."""
    local = (instant + offset).replace(tzinfo=None)
    if window.contains(local.time()):
        return instant
    # Outside the window, wall time moving forward first enters it at its start.
    opening = datetime.combine(local.date(), window.start)
    if opening < local:
        opening += _DAY
    return (opening - offset).replace(tzinfo=UTC)


def _transition_after(low: datetime, high: datetime, offset: timedelta, zone: ZoneInfo) -> datetime:
    """The instant in (low, high] where the zone leaves `offset`; the offset at high differs.

    Bisection keeps it at about 17 lookups for a day-long span, and it runs only near a transition.
    """
    while high - low > _SECOND:
        middle = low + (high - low) // 2
        if _offset(middle, zone) == offset:
            low = middle
        else:
            high = middle
    # tz transitions fall on whole seconds (zoneinfo ignores microseconds), and (low, high] spans
    # at most a second, so the whole second in it is the transition.
    whole = high.replace(microsecond=0)
    return whole if whole > low else high
