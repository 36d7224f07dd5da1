"""Send windows: named cases for midnight, DST and far-apart zones, plus a brute-force oracle."""

import functools
from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.windows import SendWindow, is_open, next_send_instant, parse_hhmm

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
KIRITIMATI = "Pacific/Kiritimati"  # UTC+14, no DST
PAGO_PAGO = "Pacific/Pago_Pago"  # UTC-11, no DST
ZONES = (
    BERLIN,
    NEW_YORK,
    KIRITIMATI,
    PAGO_PAGO,
    "Asia/Kolkata",  # +05:30
    "Australia/Lord_Howe",  # DST moves the clock by only 30 minutes
    "Europe/Moscow",
    "UTC",
)

# The oracle walks at most the longest span the strategy draws (3 days) plus slack.
ORACLE_MAX_MINUTES = 3 * 24 * 60 + 2
HYPOTHESIS_FROM = datetime(2026, 1, 1, tzinfo=UTC)
HYPOTHESIS_UNTIL = datetime(2028, 1, 1, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(start: str, end: str) -> SendWindow:
    return SendWindow(start=parse_hhmm(start), end=parse_hhmm(end))


def next_instant(
    now: datetime,
    win: SendWindow | None,
    tz: str,
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> datetime | None:
    return next_send_instant(
        now=now,
        start_at=now if start_at is None else start_at,
        end_at=now + timedelta(days=30) if end_at is None else end_at,
        window=win,
        timezone=tz,
    )


# --- Oracle: independent of the implementation except for the spec itself. ---


def oracle_open(at: datetime, win: SendWindow | None, tz: str) -> bool:
    if win is None:
        return True
    return oracle_open_local(at.astimezone(ZoneInfo(tz)).time(), win)


def oracle_open_local(local: time, win: SendWindow) -> bool:
    if win.end < win.start:
        return local >= win.start or local < win.end
    return win.start <= local < win.end


def oracle_next(
    *, now: datetime, start_at: datetime, end_at: datetime, win: SendWindow | None, tz: str
) -> datetime | None:
    """Minute by minute: exact because window edges and zone offsets are whole minutes."""
    lower = max(now.astimezone(UTC), start_at.astimezone(UTC))
    end = end_at.astimezone(UTC)
    if lower >= end:
        return None
    if oracle_open(lower, win, tz):
        return lower
    minute = lower.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(ORACLE_MAX_MINUTES):
        if minute >= end:
            return None
        if oracle_open(minute, win, tz):
            return minute
        minute += timedelta(minutes=1)
    raise AssertionError("oracle walked further than the strategy allows")


@functools.cache
def transitions(tz: str) -> tuple[datetime, ...]:
    """Offset changes in the drawn years (to the minute), to aim examples at DST days."""
    zone = ZoneInfo(tz)
    found = []
    instant = HYPOTHESIS_FROM
    previous = instant.astimezone(zone).utcoffset()
    while instant < HYPOTHESIS_UNTIL:
        instant += timedelta(hours=1)
        offset = instant.astimezone(zone).utcoffset()
        if offset != previous:
            exact = instant - timedelta(hours=1)
            while exact.astimezone(zone).utcoffset() == previous:
                exact += timedelta(minutes=1)
            found.append(exact)
        previous = offset
    return tuple(found)


def times_around(tz: str, transition: datetime) -> list[time]:
    """Quarter hours within 90 minutes of both sides of a switch: the edges DST affects."""
    zone = ZoneInfo(tz)
    found: set[time] = set()
    for side in (transition - timedelta(minutes=1), transition):
        wall = side.astimezone(zone).replace(tzinfo=None, second=0)
        wall -= timedelta(minutes=wall.minute % 15)
        found.update((wall + timedelta(minutes=15 * k)).time() for k in range(-6, 7))
    return sorted(found)


# Times near DST switches and midnight are where mistakes hide, so draw them often.
INTERESTING_TIMES = [
    time(h, m) for h, m in [(0, 0), (0, 30), (1, 0), (1, 15), (1, 45), (2, 0), (2, 30), (3, 0)]
] + [time(2, 15), time(3, 30), time(6, 0), time(22, 0), time(23, 59)]
times = st.one_of(
    st.builds(time, st.integers(0, 23), st.integers(0, 59)),
    st.sampled_from(INTERESTING_TIMES),
)


def windows_from(edges: st.SearchStrategy[time]) -> st.SearchStrategy[SendWindow | None]:
    real = (
        st.tuples(edges, edges)
        .filter(lambda pair: pair[0] != pair[1])
        .map(lambda pair: SendWindow(start=pair[0], end=pair[1]))
    )
    # No window is the trivial case, so keep it rare.
    return st.integers(0, 9).flatmap(lambda roll: st.none() if roll == 9 else real)


windows = windows_from(times)
# Callers may pass any aware datetime, not only UTC ones.
input_zones = st.sampled_from(
    [UTC, ZoneInfo("Asia/Tokyo"), ZoneInfo(NEW_YORK), timezone(timedelta(hours=-3, minutes=-30))]
)


def duration(draw: st.DrawFn, min_hours: int, max_hours: int) -> timedelta:
    """Whole hours plus minutes and seconds, drawn apart: hypothesis draws a wide integer range
    mostly near zero, but small ranges evenly."""
    return timedelta(
        hours=draw(st.integers(min_hours, max_hours)),
        minutes=draw(st.integers(0, 59)),
        seconds=draw(st.integers(0, 59)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[datetime, datetime, datetime, SendWindow | None, str]:
    if draw(st.booleans()):
        # Aim at a DST switch: the search starts up to a day before it, so it has to cross it,
        # and the window edges sit near the wall-clock times the switch skips or repeats.
        tz = draw(st.sampled_from([zone for zone in ZONES if transitions(zone)]))
        anchor = draw(st.sampled_from(transitions(tz)))
        lower = anchor + duration(draw, -26, 1)
        earlier = lower - duration(draw, 0, 47)
        now, start_at = draw(st.sampled_from([(lower, earlier), (earlier, lower)]))
        win = draw(windows_from(st.one_of(times, st.sampled_from(times_around(tz, anchor)))))
    else:
        tz = draw(st.sampled_from(ZONES))
        days = (HYPOTHESIS_UNTIL - HYPOTHESIS_FROM).days
        now = HYPOTHESIS_FROM + timedelta(days=draw(st.integers(0, days - 1)))
        now += duration(draw, 0, 23)
        start_at = now + duration(draw, -48, 47)
        win = draw(windows)
    micros = timedelta(microseconds=draw(st.integers(0, 999_999)))
    now, start_at = now + micros, start_at + micros
    end_at = start_at + duration(draw, 0, 71)
    return (
        now.astimezone(draw(input_zones)),
        start_at.astimezone(draw(input_zones)),
        end_at.astimezone(draw(input_zones)),
        win,
        tz,
    )


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_next_send_instant_matches_minute_by_minute_oracle(
    scenario: tuple[datetime, datetime, datetime, SendWindow | None, str],
) -> None:
    now, start_at, end_at, win, tz = scenario
    got = next_send_instant(now=now, start_at=start_at, end_at=end_at, window=win, timezone=tz)
    assert got == oracle_next(now=now, start_at=start_at, end_at=end_at, win=win, tz=tz)
    if got is not None:
        assert got.tzinfo == UTC
        assert is_open(at=got, window=win, timezone=tz)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(UTC),
    ),
    windows,
    st.sampled_from(ZONES),
)
def test_is_open_matches_wall_clock_definition(
    at: datetime, win: SendWindow | None, tz: str
) -> None:
    assert is_open(at=at, window=win, timezone=tz) == oracle_open(at, win, tz)


def switches() -> list[tuple[str, datetime]]:
    return [(tz, switch) for tz in ZONES for switch in transitions(tz)[:2]]


@pytest.mark.parametrize(
    "tz, switch", switches(), ids=[f"{tz}-{at:%Y-%m-%d}" for tz, at in switches()]
)
def test_every_lower_bound_around_a_dst_switch_matches_oracle(tz: str, switch: datetime) -> None:
    """Exhaustive where random draws are thin: windows with edges around a switch, searched
    from every 7 minutes over the day before it."""
    zone = ZoneInfo(tz)
    first, end_at = switch - timedelta(hours=26), switch + timedelta(hours=26)
    minutes = int((end_at - first) / timedelta(minutes=1))
    # Wall-clock time of every minute, computed once; the oracle below only compares times.
    local = [(first + timedelta(minutes=i)).astimezone(zone).time() for i in range(minutes)]
    edges = sorted({edge for edge in times_around(tz, switch) if edge.minute in (0, 30)})
    for start in edges:
        for end in edges:
            if start == end:
                continue
            win = SendWindow(start=start, end=end)
            open_at = [oracle_open_local(t, win) for t in local]
            for step in range(0, minutes, 7):
                lower = first + timedelta(minutes=step, seconds=13 * (step % 2))
                following = (i for i in range(step + 1, minutes) if open_at[i])
                expected = (
                    lower if open_at[step] else first + timedelta(minutes=next(following, minutes))
                )
                got = next_send_instant(
                    now=lower, start_at=lower, end_at=end_at, window=win, timezone=tz
                )
                assert got == (expected if expected < end_at else None), (win, lower)


# --- Midnight-crossing windows. ---

NIGHT = window("22:00", "06:00")


def test_crossing_window_is_open_before_and_after_midnight() -> None:
    assert is_open(at=utc(2026, 5, 4, 23, 30), window=NIGHT, timezone="UTC")
    assert is_open(at=utc(2026, 5, 5, 5, 59), window=NIGHT, timezone="UTC")
    assert is_open(at=utc(2026, 5, 5, 22, 0), window=NIGHT, timezone="UTC")
    assert not is_open(at=utc(2026, 5, 5, 6, 0), window=NIGHT, timezone="UTC")
    assert not is_open(at=utc(2026, 5, 5, 12, 0), window=NIGHT, timezone="UTC")


def test_crossing_window_inside_returns_now() -> None:
    before_midnight = utc(2026, 5, 4, 23, 30, 17)
    after_midnight = utc(2026, 5, 5, 3, 0, 1)
    assert next_instant(before_midnight, NIGHT, "UTC") == before_midnight
    assert next_instant(after_midnight, NIGHT, "UTC") == after_midnight


def test_crossing_window_at_noon_opens_at_22_the_same_day() -> None:
    assert next_instant(utc(2026, 5, 5, 12, 0), NIGHT, "UTC") == utc(2026, 5, 5, 22, 0)


# --- DST. ---


def test_spring_forward_gap_opens_at_first_existing_local_time() -> None:
    # Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC, so 02:30 never happens.
    win = window("02:30", "05:00")
    midnight_local = utc(2026, 3, 28, 23, 0)
    got = next_instant(midnight_local, win, BERLIN)
    assert got == utc(2026, 3, 29, 1, 0)
    assert got.astimezone(ZoneInfo(BERLIN)).time() == time(3, 0)
    # The next day the start exists again and is used as is.
    assert next_instant(utc(2026, 3, 29, 12, 0), win, BERLIN) == utc(2026, 3, 30, 0, 30)


def test_window_entirely_inside_a_gap_skips_that_day() -> None:
    # New York 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:10-02:50 does not exist that day.
    got = next_instant(utc(2026, 3, 8, 5, 0), window("02:10", "02:50"), NEW_YORK)
    assert got == utc(2026, 3, 9, 6, 10)  # 02:10 EDT the next day


def test_fall_back_repeated_hour_opens_twice() -> None:
    # New York 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00 UTC.
    win = window("01:15", "01:45")
    assert is_open(at=utc(2026, 11, 1, 5, 30), window=win, timezone=NEW_YORK)  # 01:30 EDT
    assert not is_open(at=utc(2026, 11, 1, 6, 0), window=win, timezone=NEW_YORK)  # 01:00 EST
    assert is_open(at=utc(2026, 11, 1, 6, 30), window=win, timezone=NEW_YORK)  # 01:30 EST
    assert next_instant(utc(2026, 11, 1, 4, 0), win, NEW_YORK) == utc(2026, 11, 1, 5, 15)
    # After the first occurrence closes, the repeated hour opens it again.
    assert next_instant(utc(2026, 11, 1, 5, 50), win, NEW_YORK) == utc(2026, 11, 1, 6, 15)


def test_fall_back_can_jump_back_into_the_middle_of_a_window() -> None:
    # 01:40 EDT is past 00:30-01:30; at 06:00 UTC the clock reads 01:00 EST, inside again,
    # although local time never passes the window's start.
    got = next_instant(utc(2026, 11, 1, 5, 40), window("00:30", "01:30"), NEW_YORK)
    assert got == utc(2026, 11, 1, 6, 0)


def test_lord_howe_half_hour_dst() -> None:
    # Lord Howe 2026-10-04: 02:00 +10:30 jumps to 02:30 +11:00 at 15:30 UTC the day before.
    win = window("02:00", "02:20")  # swallowed by the gap that night
    got = next_instant(utc(2026, 10, 3, 13, 0), win, "Australia/Lord_Howe")
    assert got == utc(2026, 10, 4, 15, 0)  # 02:00 +11:00 on 10-05


def test_date_line_skipped_day_matches_oracle() -> None:
    # Samoa skipped 2011-12-30 entirely (-10 to +14); the walk must not get lost.
    now, end_at = utc(2011, 12, 29, 12, 0), utc(2012, 1, 1, 12, 0)
    for start, end in [("09:00", "17:00"), ("23:00", "01:00"), ("00:00", "00:01")]:
        win = window(start, end)
        got = next_instant(now, win, "Pacific/Apia", end_at=end_at)
        assert got == oracle_next(now=now, start_at=now, end_at=end_at, win=win, tz="Pacific/Apia")


# --- Far-apart zones. ---


def test_utc_plus_14_and_minus_11_on_one_dispatch() -> None:
    # The offsets differ by 25 hours, which is 1 hour modulo a day: one dispatch reaches both
    # clients an hour apart, at 09:00 local, on local dates one day apart.
    win = window("09:00", "10:00")
    start_at = utc(2026, 6, 15, 12, 0)
    east = next_instant(start_at, win, KIRITIMATI)
    west = next_instant(start_at, win, PAGO_PAGO)
    assert east == utc(2026, 6, 15, 19, 0)
    assert west == utc(2026, 6, 15, 20, 0)
    east_local = east.astimezone(ZoneInfo(KIRITIMATI))
    west_local = west.astimezone(ZoneInfo(PAGO_PAGO))
    assert east_local.time() == west_local.time() == time(9, 0)
    assert east_local.date() - west_local.date() == timedelta(days=1)
    # The same local date and time is 25 hours apart.
    west_same_date = next_instant(west + timedelta(hours=1), win, PAGO_PAGO)
    assert west_same_date is not None
    assert west_same_date.astimezone(ZoneInfo(PAGO_PAGO)).date() == east_local.date()
    assert west_same_date - east == timedelta(hours=25)


# --- Bounds. ---


def test_open_window_returns_now_exactly() -> None:
    now = datetime(2026, 7, 1, 12, 34, 56, 789012, tzinfo=ZoneInfo(BERLIN))
    got = next_instant(now, window("09:00", "18:00"), BERLIN)
    assert got == now
    assert got.tzinfo == UTC
    assert got.microsecond == 789012


def test_window_not_opening_before_end_at_gives_none() -> None:
    now = utc(2026, 7, 1, 12, 0)
    win = window("09:00", "10:00")
    assert next_instant(now, win, "UTC", end_at=utc(2026, 7, 2, 9, 0)) is None
    assert next_instant(now, win, "UTC", end_at=utc(2026, 7, 2, 9, 1)) == utc(2026, 7, 2, 9, 0)


def test_future_start_at_dominates_now() -> None:
    now = utc(2026, 7, 1, 12, 0)
    start_at = utc(2026, 7, 3, 12, 30, 15)
    assert next_instant(now, window("09:00", "18:00"), "UTC", start_at=start_at) == start_at
    got = next_instant(now, window("09:00", "10:00"), "UTC", start_at=start_at)
    assert got == utc(2026, 7, 4, 9, 0)


def test_past_start_at_is_overtaken_by_now() -> None:
    now = utc(2026, 7, 1, 12, 0)
    got = next_instant(now, None, "UTC", start_at=utc(2026, 6, 1), end_at=utc(2026, 8, 1))
    assert got == now


def test_later_bound_is_picked_by_instant_not_wall_clock() -> None:
    # Same tzinfo on both: Python compares their wall clocks, ignoring fold, so 01:45 EDT would
    # beat 01:30 EST although it is 45 minutes earlier.
    zone = ZoneInfo(NEW_YORK)
    now = datetime(2026, 11, 1, 1, 45, tzinfo=zone)  # 05:45 UTC
    start_at = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=zone)  # 06:30 UTC
    got = next_instant(now, None, NEW_YORK, start_at=start_at)
    assert got == utc(2026, 11, 1, 6, 30)


def test_no_window_returns_lower_bound_or_none_when_past_end() -> None:
    now = datetime(2026, 7, 1, 12, 0, 30, tzinfo=ZoneInfo(NEW_YORK))
    later = now + timedelta(hours=3)
    got = next_instant(now, None, NEW_YORK, start_at=later, end_at=later + timedelta(days=1))
    assert got == later
    assert got.tzinfo == UTC
    assert next_instant(now, None, NEW_YORK, end_at=now) is None
    assert next_instant(now, None, NEW_YORK, end_at=now - timedelta(seconds=1)) is None
    assert next_instant(now, None, NEW_YORK, start_at=later, end_at=later) is None


def test_far_end_at_still_finds_the_first_opening() -> None:
    # An implementation walking minutes, or days up to end_at, would crawl here.
    now = utc(2026, 7, 1, 12, 0)
    got = next_instant(now, window("09:00", "10:00"), BERLIN, end_at=utc(2099, 1, 1))
    assert got == utc(2026, 7, 2, 7, 0)


# --- Validation. ---


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 7, 1, 12, 0)
    aware = utc(2026, 7, 1, 12, 0)
    win = window("09:00", "10:00")
    with pytest.raises(ValueError, match="at must be a timezone-aware"):
        is_open(at=naive, window=win, timezone="UTC")
    for name in ("now", "start_at", "end_at"):
        args = {"now": aware, "start_at": aware, "end_at": aware + timedelta(days=1), name: naive}
        with pytest.raises(ValueError, match=f"{name} must be a timezone-aware"):
            next_send_instant(**args, window=win, timezone="UTC")


def test_unknown_zone_raises() -> None:
    now = utc(2026, 7, 1, 12, 0)
    with pytest.raises(ZoneInfoNotFoundError):
        is_open(at=now, window=None, timezone="Mars/Olympus_Mons")
    with pytest.raises(ZoneInfoNotFoundError):
        next_instant(now, window("09:00", "10:00"), "Mars/Olympus_Mons")


def test_window_start_equal_to_end_is_rejected() -> None:
    with pytest.raises(ValueError, match="must differ"):
        SendWindow(start=time(9, 0), end=time(9, 0))


@pytest.mark.parametrize(
    "start, end",
    [(time(9, 0, 30), time(10, 0)), (time(9, 0), time(10, 0, 0, 1))],
)
def test_window_needs_whole_minutes(start: time, end: time) -> None:
    with pytest.raises(ValueError, match="whole minute"):
        SendWindow(start=start, end=end)


def test_window_rejects_zone_aware_times() -> None:
    with pytest.raises(ValueError, match="naive local time"):
        SendWindow(start=time(9, 0, tzinfo=UTC), end=time(10, 0))


@pytest.mark.parametrize(
    "text, expected",
    [("00:00", time(0, 0)), ("09:00", time(9, 0)), ("23:59", time(23, 59))],
)
def test_parse_hhmm_accepts(text: str, expected: time) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "24:00",
        "12:60",
        "9:00",
        "09:0",
        "ab:cd",
        "",
        "12:00:00",
        " 12:00",
        "12:00\n",
        "12-00",
        "-1:00",
        "\uff11\uff12:\uff10\uff10",  # full-width digits: int() would accept them
    ],
)
def test_parse_hhmm_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"HH:MM|00:00 and 23:59"):
        parse_hhmm(text)
