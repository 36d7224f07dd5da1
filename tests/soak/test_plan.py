"""The soak's plan: the fault schedule's kinds and pace, and windows that open and close where
and when the plan says, in bodies the API takes."""

import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from api.schemas.dispatches import DispatchCreate
from core.windows import RUSSIA_ZONES, SendWindow, is_open, parse_hhmm
from soak.plan import (
    DEFAULT_PROFILE,
    FAULT_KINDS,
    SHORT_PROFILE,
    ZONE_SPAN_HOURS,
    fault_schedule,
    plan_dispatches,
)

SECOND = timedelta(seconds=1)


def test_the_short_schedule_has_two_faults_of_each_kind_spread_over_the_run() -> None:
    faults = fault_schedule(SHORT_PROFILE, random.Random(7))
    assert Counter(f.kind for f in faults) == {kind: 2 for kind in FAULT_KINDS}
    moments = [f.at_s for f in faults]
    assert moments == sorted(moments)
    assert 0 < moments[0] and moments[-1] <= SHORT_PROFILE.seconds - SHORT_PROFILE.fault_gap_s[0]
    assert all(1 <= f.worker <= SHORT_PROFILE.workers for f in faults)


def test_the_default_schedule_is_one_fault_every_15_to_30_s_of_every_kind() -> None:
    faults = fault_schedule(DEFAULT_PROFILE, random.Random(11))
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(faults)]
    assert all(15 <= gap <= 30 for gap in gaps)
    assert 15 <= faults[0].at_s <= 30
    # Kinds come in shuffled rounds of all eight: ten minutes hold at least two rounds.
    assert min(Counter(f.kind for f in faults).values()) >= 2
    outages = [f.duration_s for f in faults if f.kind == "gateway_outage"]
    assert all(10 <= seconds <= 60 for seconds in outages)
    # The same seed, the same run.
    assert fault_schedule(DEFAULT_PROFILE, random.Random(11)) == faults


def _window(body: dict[str, object]) -> SendWindow:
    window = body["window"]
    assert isinstance(window, dict)
    return SendWindow(start=parse_hhmm(window["start"]), end=parse_hhmm(window["end"]))


def test_the_zone_window_opens_in_one_zone_and_closes_in_another_during_the_run() -> None:
    # Now, so that the API's own checks (an end in the future) apply to the bodies.
    now = datetime.now(UTC)
    zones, per_client, paused = plan_dispatches(DEFAULT_PROFILE, now=now, rng=random.Random(3))
    window = _window(zones.body)
    assert zones.opens is not None and zones.closes is not None
    run_end = now + timedelta(seconds=DEFAULT_PROFILE.seconds)
    assert now < zones.opens.at < zones.closes.at < run_end
    assert not is_open(at=zones.opens.at - SECOND, window=window, timezone=zones.opens.zone)
    assert is_open(at=zones.opens.at, window=window, timezone=zones.opens.zone)
    assert is_open(at=zones.closes.at - SECOND, window=window, timezone=zones.closes.zone)
    assert not is_open(at=zones.closes.at, window=window, timezone=zones.closes.zone)
    first = RUSSIA_ZONES.index(zones.opens.zone)
    assert RUSSIA_ZONES.index(zones.closes.zone) == first + ZONE_SPAN_HOURS
    for between in RUSSIA_ZONES[first + 1 : first + ZONE_SPAN_HOURS]:
        assert is_open(at=now, window=window, timezone=between)
        assert is_open(at=run_end, window=window, timezone=between)
    assert datetime.fromisoformat(str(zones.body["end_at"])) < run_end

    per_client_window = _window(per_client.body)
    assert per_client.body["delivery"] == "per_client"
    assert per_client.opens is not None and now < per_client.opens.at < run_end
    assert is_open(at=per_client.opens.at, window=per_client_window, timezone=per_client.opens.zone)
    assert not is_open(
        at=per_client.opens.at - SECOND, window=per_client_window, timezone=per_client.opens.zone
    )

    assert "window" not in paused.body
    assert paused.edit_at is not None and paused.resume_at is not None
    starts = datetime.fromisoformat(str(paused.body["start_at"]))
    assert starts < paused.edit_at < paused.resume_at < run_end
    assert {zones.tag, per_client.tag, paused.tag} == {
        "soak-zones",
        "soak-per-client",
        "soak-paused",
    }
    # The API takes every body as it is.
    for plan in (zones, per_client, paused):
        DispatchCreate.model_validate(plan.body)
