"""Recurring dispatches on the dev server with a real worker: the API makes a Temporal Schedule,
its runs (by a backfill of the last minutes, or "run now") make dispatches through the create's
own path, once per scheduled time; overlap `skip` and `allow`, pause, delete, the next runs in
the schedule's zone, and the 422s and 503s."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.client import (
    Client,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleOverlapPolicy,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.contracts.schedule import ScheduledDispatchResult, run_key, temporal_schedule_id
from core.db import Database
from core.models import schedule_t
from core.settings import Settings
from tests.factories import make_client
from tests.support import Queues, api_client, running_workers, settings_for

pytestmark = pytest.mark.slow

SCHEDULES = "/api/v1/schedules"
DISPATCHES = "/api/v1/dispatches"
MOSCOW = ZoneInfo("Europe/Moscow")


async def forget_schedules(temporal: Client, db: Database) -> None:
    """Every schedule's row and Temporal Schedule gone (a `* * * * *` one would go on starting
    runs on the shared dev server; the API's fuzzing leaves some)."""
    async with db.sessions() as session:
        ids = list((await session.execute(sa.select(schedule_t.c.id))).scalars())
        for schedule_id in ids:
            handle = temporal.get_schedule_handle(temporal_schedule_id(schedule_id))
            try:
                await handle.delete()
            except RPCError as error:
                assert error.status == RPCStatusCode.NOT_FOUND
        await session.execute(sa.text("TRUNCATE schedule"))
        await session.commit()


@pytest.fixture
async def schedules_gone(dev_env: WorkflowEnvironment, db: Database) -> AsyncIterator[None]:
    """No schedule before the test, and none after it."""
    await forget_schedules(dev_env.client, db)
    yield
    await forget_schedules(dev_env.client, db)


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    schedules_gone: None,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with api_client(app) as api:
            yield app, api


def body(**changes: Any) -> dict[str, Any]:
    dispatch = {
        "text": "Weekly news",
        "filter": {"tags": ["weekly"]},
        "duration_minutes": 180,
        **changes.pop("dispatch", {}),
    }
    return {
        "name": "weekly",
        "cron": "* * * * *",
        "timezone": "Europe/Moscow",
        "dispatch": dispatch,
        "overlap": "allow",
        **changes,
    }


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float = 30) -> Any:
    """`check()` once it answers something true."""
    async with asyncio.timeout(seconds):
        while not (found := await check()):
            await asyncio.sleep(0.2)
    return found


async def clear_of_the_minute() -> None:
    """Waits for a moment at least 15 s before the next minute: the schedule's own `* * * * *`
    run then comes after the test's backfill has been judged."""
    while datetime.now(UTC).second >= 45:
        await asyncio.sleep(0.5)


async def create(api: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await api.post(SCHEDULES, json=body(**changes))
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def backfill(temporal: Client, schedule_id: int, minutes: int = 3) -> list[datetime]:
    """Runs the schedule for each of the last `minutes` minutes at once (as if they passed now);
    their scheduled times."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    await temporal.get_schedule_handle(temporal_schedule_id(schedule_id)).backfill(
        ScheduleBackfill(
            start_at=minute - timedelta(minutes=minutes, seconds=30),
            end_at=minute - timedelta(seconds=30),
            overlap=ScheduleOverlapPolicy.ALLOW_ALL,
        )
    )
    return [minute - timedelta(minutes=n) for n in range(minutes, 0, -1)]


async def runs_done(
    temporal: Client, schedule_id: int, times: list[datetime], each: int = 1
) -> None:
    """Waits for the runs of `times` to have finished, `each` times each."""
    handle = temporal.get_schedule_handle(temporal_schedule_id(schedule_id))
    wanted = {run_key(schedule_id, t) for t in times}

    async def done() -> ScheduleDescription | None:
        description = await handle.describe()
        started = [
            r.action.workflow_id  # type: ignore[attr-defined]
            for r in description.info.recent_actions
        ]
        if any(started.count(w) < each for w in wanted) or description.info.running_actions:
            return None
        return description

    await eventually(done)
    async with asyncio.timeout(30):
        for workflow_id in wanted:
            await temporal.get_workflow_handle(workflow_id).result()


async def outcome(temporal: Client, schedule_id: int, scheduled_at: datetime) -> str:
    """What the (last) run of this scheduled time did."""
    handle = temporal.get_workflow_handle(
        run_key(schedule_id, scheduled_at), result_type=ScheduledDispatchResult
    )
    return (await handle.result()).outcome


async def made(api: httpx.AsyncClient, schedule_id: int) -> list[dict[str, Any]]:
    response = await api.get(DISPATCHES, params={"schedule_id": schedule_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def starting_at(dispatches: list[dict[str, Any]], times: list[datetime]) -> list[dict[str, Any]]:
    """The dispatches made for these scheduled times (a `* * * * *` schedule also runs by
    itself while the test goes on)."""
    return [d for d in dispatches if datetime.fromisoformat(d["start_at"]) in times]


async def test_each_run_makes_one_dispatch_and_a_second_backfill_none(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment, db: Database
) -> None:
    _, api = stack
    await make_client(db, tag="weekly")
    await clear_of_the_minute()
    schedule = await create(api)
    assert schedule["temporal_id"] == f"schedule-{schedule['id']}"
    assert schedule["paused"] is False and schedule["dispatch_count"] == 0

    times = await backfill(dev_env.client, schedule["id"])
    await runs_done(dev_env.client, schedule["id"], times)
    first = starting_at(await made(api, schedule["id"]), times)
    assert sorted(datetime.fromisoformat(d["start_at"]) for d in first) == times
    for dispatch in first:
        assert dispatch["schedule_id"] == schedule["id"]
        assert dispatch["text"] == "Weekly news"
        assert dispatch["filter"] == {"operator_codes": [], "tags": ["weekly"], "all": False}
        start, end = (datetime.fromisoformat(dispatch[k]) for k in ("start_at", "end_at"))
        assert end - start == timedelta(minutes=180)
    one = (await api.get(f"{DISPATCHES}/{first[0]['id']}")).json()
    assert one["schedule_id"] == schedule["id"]
    events = (await api.get(f"{DISPATCHES}/{first[0]['id']}/events")).json()["items"]
    assert [(e["action"], e["actor"]) for e in events][:1] == [
        ("created", f"schedule-{schedule['id']}")
    ]

    # The same minutes again: each run finds its dispatch made (its Idempotency-Key).
    await backfill(dev_env.client, schedule["id"])
    await runs_done(dev_env.client, schedule["id"], times, each=2)
    again = starting_at(await made(api, schedule["id"]), times)
    assert sorted(d["id"] for d in again) == sorted(d["id"] for d in first)
    for t in times:
        assert await outcome(dev_env.client, schedule["id"], t) == "already_made"

    answer = (await api.get(f"{SCHEDULES}/{schedule['id']}")).json()
    assert answer["dispatch_count"] == len(await made(api, schedule["id"])) >= 3
    by_run = {r["workflow_id"]: r["dispatch_id"] for r in answer["recent_runs"]}
    assert {by_run[run_key(schedule["id"], t)] for t in times} == {d["id"] for d in first}
    assert answer["runs_skipped"] == 0


@pytest.mark.parametrize("overlap", ["skip", "allow"])
async def test_skip_makes_none_while_the_previous_is_open_and_allow_does(
    stack: tuple[FastAPI, httpx.AsyncClient],
    dev_env: WorkflowEnvironment,
    db: Database,
    overlap: str,
) -> None:
    _, api = stack
    await make_client(db, tag="weekly", timezone="Europe/Moscow")
    # A window hours away: each dispatch stays running, its cohort asleep until it opens.
    moscow = datetime.now(MOSCOW)
    window = {
        "start": (moscow + timedelta(hours=3)).strftime("%H:00"),
        "end": (moscow + timedelta(hours=4)).strftime("%H:00"),
    }
    await clear_of_the_minute()
    schedule = await create(api, overlap=overlap, dispatch={"window": window})
    times = await backfill(dev_env.client, schedule["id"])
    await runs_done(dev_env.client, schedule["id"], times)

    dispatches = starting_at(await made(api, schedule["id"]), times)
    answer = (await api.get(f"{SCHEDULES}/{schedule['id']}")).json()
    outcomes = [await outcome(dev_env.client, schedule["id"], t) for t in times]
    if overlap == "skip":
        assert len(dispatches) == 1
        assert dispatches[0]["status"] in {"scheduled", "running"}
        assert sorted(outcomes) == ["created", "skipped_overlap", "skipped_overlap"]
        assert answer["runs_skipped"] >= 2 and answer["last_skipped_at"] is not None
    else:
        assert len(dispatches) == 3
        assert outcomes == ["created"] * 3
        assert answer["runs_skipped"] == 0


async def test_a_paused_schedule_makes_none(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    _, api = stack
    schedule = await create(api)
    paused = await api.post(f"{SCHEDULES}/{schedule['id']}/pause", json={"reason": "holidays"})
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["pause_reason"]) == (True, "holidays")
    assert paused.json()["next_runs"] == []
    handle = dev_env.client.get_schedule_handle(temporal_schedule_id(schedule["id"]))
    state = (await handle.describe()).schedule.state
    assert (state.paused, state.note) == (True, "holidays")

    # Temporal runs a backfill even while paused: the runs find the schedule paused.
    times = await backfill(dev_env.client, schedule["id"], minutes=2)
    await runs_done(dev_env.client, schedule["id"], times)
    assert await made(api, schedule["id"]) == []
    for t in times:
        assert await outcome(dev_env.client, schedule["id"], t) == "skipped_paused"
    refused = await api.post(f"{SCHEDULES}/{schedule['id']}/run")
    assert refused.status_code == 409, refused.text
    assert "paused" in refused.json()["detail"]

    resumed = await api.post(f"{SCHEDULES}/{schedule['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False and resumed.json()["pause_reason"] is None
    assert len(resumed.json()["next_runs"]) == 5
    assert (await handle.describe()).schedule.state.paused is False


async def test_run_now_makes_one_dispatch_starting_now(
    stack: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = stack
    await clear_of_the_minute()
    schedule = await create(api, dispatch={"duration_minutes": 30})
    before = datetime.now(UTC).replace(microsecond=0)
    response = await api.post(f"{SCHEDULES}/{schedule['id']}/run")
    assert response.status_code == 202, response.text
    after = datetime.now(UTC)

    async def made_now() -> list[dict[str, Any]]:
        return [
            d
            for d in await made(api, schedule["id"])
            if before <= datetime.fromisoformat(d["start_at"]) <= after
        ]

    async def run_shows_it() -> Any:
        answer = (await api.get(f"{SCHEDULES}/{schedule['id']}")).json()
        return (
            answer if found[0]["id"] in {r["dispatch_id"] for r in answer["recent_runs"]} else None
        )

    found = await eventually(made_now)
    assert len(found) == 1
    start, end = (datetime.fromisoformat(found[0][k]) for k in ("start_at", "end_at"))
    assert end - start == timedelta(minutes=30)
    answer = await eventually(run_shows_it)
    assert answer["dispatch_count"] >= 1


async def test_delete_stops_it_and_keeps_its_dispatches(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    _, api = stack
    schedule = await create(api)
    times = await backfill(dev_env.client, schedule["id"], minutes=1)
    await runs_done(dev_env.client, schedule["id"], times)
    kept = await made(api, schedule["id"])
    assert kept

    deleted = await api.delete(f"{SCHEDULES}/{schedule['id']}")
    assert deleted.status_code == 204, deleted.text
    with pytest.raises(RPCError) as gone:
        await dev_env.client.get_schedule_handle(temporal_schedule_id(schedule["id"])).describe()
    assert gone.value.status == RPCStatusCode.NOT_FOUND
    assert (await api.get(f"{SCHEDULES}/{schedule['id']}")).status_code == 404
    assert (await api.delete(f"{SCHEDULES}/{schedule['id']}")).status_code == 404
    assert schedule["id"] not in {s["id"] for s in (await api.get(SCHEDULES)).json()["items"]}
    after = await made(api, schedule["id"])
    assert [d["id"] for d in after] == [d["id"] for d in kept]
    assert {d["schedule_id"] for d in after} == {schedule["id"]}


async def test_next_runs_follow_the_cron_in_its_zone_and_an_edit(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    _, api = stack
    schedule = await create(api, cron="0 10 * * MON", overlap="skip")
    assert schedule["overlap"] == "skip"
    runs = [datetime.fromisoformat(t) for t in schedule["next_runs"]]
    assert len(runs) == 5
    for run in runs:
        assert run.utcoffset() == timedelta(hours=3)
        assert (run.weekday(), run.hour, run.minute) == (0, 10, 0)
    assert all(b - a == timedelta(days=7) for a, b in pairwise(runs))
    assert runs[0] > datetime.now(UTC)
    listed = (await api.get(SCHEDULES)).json()
    assert listed["total"] == 1 and listed["items"][0]["next_runs"] == schedule["next_runs"]

    edited = await api.patch(
        f"{SCHEDULES}/{schedule['id']}",
        json={
            "cron": "30 9 * * *",
            "timezone": "Asia/Yekaterinburg",
            "name": "daily",
            "dispatch": {"text": "Daily news", "filter": {"all": True}, "duration_minutes": 60},
        },
    )
    assert edited.status_code == 200, edited.text
    answer = edited.json()
    assert (answer["name"], answer["cron"], answer["timezone"]) == (
        "daily",
        "30 9 * * *",
        "Asia/Yekaterinburg",
    )
    assert answer["dispatch"]["text"] == "Daily news" and answer["dispatch"]["filter"]["all"]
    runs = [datetime.fromisoformat(t) for t in answer["next_runs"]]
    assert all((r.utcoffset(), r.hour, r.minute) == (timedelta(hours=5), 9, 30) for r in runs)
    assert all(b - a == timedelta(days=1) for a, b in pairwise(runs))
    spec = (
        await dev_env.client.get_schedule_handle(answer["temporal_id"]).describe()
    ).schedule.spec
    assert spec.time_zone_name == "Asia/Yekaterinburg"


async def test_bad_schedules_are_422_naming_the_field(
    stack: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = stack
    cases = [
        (body(cron="bogus"), "cron"),
        (body(cron="61 * * * *"), "cron"),
        (body(cron="0 10 * * FRI-MON"), "cron"),
        (body(cron="0 10 * * 1#2"), "cron"),
        (body(cron="0 0 10 * * MON"), "cron"),
        (body(timezone="Mars/Olympus"), "timezone"),
        (body(dispatch={"text": "Hi {{ name | upper }}"}), "dispatch.text"),
        (body(dispatch={"text": "Hi {% if x %}x{% endif %}"}), "dispatch.text"),
        (body(dispatch={"text": "я" * 700}), "dispatch.text"),
        (body(dispatch={"duration_minutes": 0}), "dispatch.duration_minutes"),
        (body(dispatch={"filter": {}}), "dispatch.filter"),
        (body(dispatch={"start_at": "2026-12-01T10:00:00+03:00"}), "dispatch.start_at"),
        (body(overlap="sometimes"), "overlap"),
        (body(bogus=1), "bogus"),
    ]
    for payload, field in cases:
        response = await api.post(SCHEDULES, json=payload)
        assert response.status_code == 422, (payload, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], (field, response.text)
    assert (await api.get(SCHEDULES)).json()["total"] == 0

    schedule = await create(api)
    for change, field in [
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Nowhere"}, "timezone"),
        ({"dispatch": {**body()["dispatch"], "text": "{{ a.b }}"}}, "dispatch.text"),
        ({"paused": True}, "paused"),
    ]:
        response = await api.patch(f"{SCHEDULES}/{schedule['id']}", json=change)
        assert response.status_code == 422, (change, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], response.text
    unchanged = (await api.get(f"{SCHEDULES}/{schedule['id']}")).json()
    assert (unchanged["cron"], unchanged["timezone"]) == ("* * * * *", "Europe/Moscow")
    assert (await api.get(f"{SCHEDULES}/999999")).status_code == 404


async def test_without_temporal_a_503_and_nothing_half_made(
    stack: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, api = stack
    temporal: Client = app.state.temporal
    schedule = await create(api)

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(temporal, "create_schedule", unavailable)
    refused = await api.post(SCHEDULES, json=body(name="another"))
    assert refused.status_code == 503, refused.text
    names = [s["name"] for s in (await api.get(SCHEDULES)).json()["items"]]
    assert names == ["weekly"]

    handle = temporal.get_schedule_handle(schedule["temporal_id"])
    monkeypatch.setattr(handle, "pause", unavailable)
    monkeypatch.setattr(handle, "update", unavailable)
    monkeypatch.setattr(handle, "delete", unavailable)
    monkeypatch.setattr(temporal, "get_schedule_handle", lambda _: handle)
    assert (await api.post(f"{SCHEDULES}/{schedule['id']}/pause")).status_code == 503
    assert (
        await api.patch(f"{SCHEDULES}/{schedule['id']}", json={"cron": "@daily"})
    ).status_code == 503
    assert (await api.delete(f"{SCHEDULES}/{schedule['id']}")).status_code == 503
    monkeypatch.undo()
    answer = (await api.get(f"{SCHEDULES}/{schedule['id']}")).json()
    assert (answer["paused"], answer["cron"]) == (False, "* * * * *")
    assert (
        await temporal.get_schedule_handle(schedule["temporal_id"]).describe()
    ).schedule.state.paused is False
