import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.contracts.shared import dispatch_workflow_id
from core.db import Database
from core.models import dispatch_t
from core.settings import Settings
from devstack.embedded import bin_path
from tests.factories import make_client
from tests.support import Queues, api_client, running_workers, settings_for

DISPATCHES = "/api/v1/dispatches"


def payload(**changes: Any) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(days=1)
    body: dict[str, Any] = {
        "start_at": start.isoformat(),
        "end_at": (start + timedelta(days=1)).isoformat(),
        "text": "Sale on Sunday",
        "filter": {"operator_codes": ["916"], "tags": ["vip"]},
        "window": {"start": "09:00", "end": "21:00"},
    }
    body.update(changes)
    return body


async def test_create_starts_its_workflow(api: httpx.AsyncClient, api_app: FastAPI) -> None:
    response = await api.post(DISPATCHES, json=payload())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["filter"] == {"operator_codes": ["916"], "tags": ["vip"], "all": False}
    assert body["window"] == {"start": "09:00", "end": "21:00"}
    assert body["messages"]["total"] == 0
    temporal: Client = api_app.state.temporal
    description = await temporal.get_workflow_handle(dispatch_workflow_id(body["id"])).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING


async def test_bad_dispatches_are_422_naming_the_problem(
    api: httpx.AsyncClient, db: Database
) -> None:
    now = datetime.now(UTC)
    cases = [
        (payload(filter={}), "filter"),
        (payload(filter={"operator_codes": [], "tags": []}), "filter"),
        (payload(filter={"all": True, "tags": ["vip"]}), "filter"),
        (payload(filter={"operator_codes": ["91"]}), "operator_codes"),
        (payload(end_at=(now - timedelta(days=1)).isoformat()), "end_at"),
        (payload(start_at="2026-12-01T10:00:00"), "start_at"),  # no zone
        (payload(text=""), "text"),
        (payload(text="x" * 1001), "text"),
        (payload(text="a\u0000"), "text"),
        (payload(filter={"tags": ["\u0000O"]}), "tags"),  # found by schemathesis
        (
            payload(start_at="0102-09-21T19:27:52Z", end_at="1284-10-17T08:03:59Z"),
            "end_at is in the past",
        ),
        (payload(window={"start": "9:00", "end": "21:00"}), "start"),
        (payload(window={"start": "10:00", "end": "10:00"}), "window"),
        (payload(window={"start": "25:00", "end": "10:00"}), "start"),
    ]
    for body, problem in cases:
        response = await api.post(DISPATCHES, json=body)
        assert response.status_code == 422, (body, response.text)
        assert problem in response.text, (problem, response.text)
    assert (await api.get(DISPATCHES)).json()["total"] == 0


async def test_everyone_must_be_asked_for(api: httpx.AsyncClient) -> None:
    response = await api.post(DISPATCHES, json=payload(filter={"all": True}, window=None))
    assert response.status_code == 201, response.text
    assert response.json()["filter"]["all"] is True
    assert response.json()["window"] is None


async def test_edit_reschedules_and_delete_cancels(
    api: httpx.AsyncClient, api_app: FastAPI
) -> None:
    created = (await api.post(DISPATCHES, json=payload())).json()
    url = f"{DISPATCHES}/{created['id']}"
    later = datetime.now(UTC) + timedelta(days=5)
    edited = await api.patch(
        url,
        json={
            "start_at": later.isoformat(),
            "end_at": (later + timedelta(hours=3)).isoformat(),
            "text": "New text",
            "window": None,
        },
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["text"] == "New text"
    assert edited.json()["window"] is None
    assert datetime.fromisoformat(edited.json()["start_at"]) == later

    bad = await api.patch(url, json={"end_at": datetime.now(UTC).isoformat()})
    assert bad.status_code == 422
    assert "end_at" in bad.text
    # A past end with a start before it: refused as at creation, not expired a second later.
    past = datetime.now(UTC) - timedelta(hours=1)
    ended = await api.patch(
        url,
        json={"start_at": (past - timedelta(hours=1)).isoformat(), "end_at": past.isoformat()},
    )
    assert ended.status_code == 422, ended.text
    assert "end_at is in the past" in ended.text

    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404
    # No worker runs here: the cancellation is requested, and the workflow will act on it.
    temporal: Client = api_app.state.temporal
    handle = temporal.get_workflow_handle(dispatch_workflow_id(created["id"]))
    events = [event.event_type async for event in handle.fetch_history_events()]
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in events  # the edit


async def test_stats_and_messages(api: httpx.AsyncClient, db: Database) -> None:
    first = (await api.post(DISPATCHES, json=payload())).json()
    second = (await api.post(DISPATCHES, json=payload(text="Another"))).json()
    clients = [await make_client(db) for _ in range(3)]
    async with db.sessions() as session:
        from core.models import Message

        session.add_all(
            [
                Message(dispatch_id=first["id"], client_id=clients[0].id, status="sent"),
                Message(dispatch_id=first["id"], client_id=clients[1].id, status="retrying"),
                Message(dispatch_id=second["id"], client_id=clients[2].id, status="sent"),
            ]
        )
        await session.commit()

    overall = (await api.get("/api/v1/stats")).json()
    assert overall["dispatch_count"] == 2
    assert overall["totals"]["sent"] == 2
    assert overall["totals"]["retrying"] == 1
    assert overall["totals"]["total"] == 3
    by_id = {d["dispatch_id"]: d["messages"] for d in overall["dispatches"]}
    assert by_id[first["id"]]["sent"] == 1 and by_id[first["id"]]["retrying"] == 1
    assert by_id[second["id"]]["total"] == 1

    one = (await api.get(f"{DISPATCHES}/{first['id']}/stats")).json()
    assert one["messages"]["total"] == 2
    detail = (await api.get(f"{DISPATCHES}/{first['id']}")).json()
    assert detail["messages"]["sent"] == 1

    messages = (await api.get(f"{DISPATCHES}/{first['id']}/messages")).json()
    assert messages["total"] == 2
    retrying = await api.get(f"{DISPATCHES}/{first['id']}/messages", params={"status": "retrying"})
    assert [m["client_id"] for m in retrying.json()["items"]] == [clients[1].id]
    assert (await api.get(f"{DISPATCHES}/{first['id']}/messages?status=lost")).status_code == 422
    assert (await api.get(f"{DISPATCHES}/999999/messages")).status_code == 404
    assert (await api.get(f"{DISPATCHES}/999999/stats")).status_code == 404

    listed = (await api.get(DISPATCHES, params={"status": "scheduled"})).json()
    assert listed["total"] == 2
    assert listed["items"][0]["messages"]["total"] == 2


async def test_running_dispatch_edits_only_end_text_window(
    api: httpx.AsyncClient, db: Database
) -> None:
    created = (await api.post(DISPATCHES, json=payload())).json()
    url = f"{DISPATCHES}/{created['id']}"

    async def set_status(status: str) -> None:
        async with db.sessions() as session:
            await session.execute(
                sa.update(dispatch_t).where(dispatch_t.c.id == created["id"]).values(status=status)
            )
            await session.commit()

    await set_status("running")
    response = await api.patch(url, json={"text": "late", "filter": {"tags": ["x"]}})
    assert response.status_code == 409
    assert "running" in response.json()["detail"]
    assert "not filter" in response.json()["detail"]
    # One shape for every error: a line, and the problems by field (none for a 409).
    assert response.json()["errors"] == [{"field": None, "message": response.json()["detail"]}]
    invalid = await api.patch(url, json={"text": "", "window": {"start": "25:00", "end": "x"}})
    assert invalid.status_code == 422
    fields = {e["field"] for e in invalid.json()["errors"]}
    assert {"text", "window.start"} <= fields, invalid.json()
    assert "Value error" not in invalid.text
    assert invalid.json()["detail"].startswith("text: ")
    edited = await api.patch(url, json={"text": "Fixed typo", "window": None})
    assert edited.status_code == 200, edited.text
    assert edited.json()["text"] == "Fixed typo"
    await set_status("completed")
    response = await api.patch(url, json={"text": "too late"})
    assert response.status_code == 409
    assert "completed: it can no longer be edited" in response.json()["detail"]
    events = (await api.get(f"{url}/events")).json()
    assert [e["action"] for e in events["items"]] == ["created", "edited"]
    assert events["items"][1]["details"] == {"fields": ["text", "window"]}
    assert events["items"][1]["actor"] == "tester"  # the token's subject


async def test_without_temporal_nothing_is_kept(
    settings: Settings, queues: Queues, db: Database
) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=bin_path("temporal-test-server")
    )
    app = create_app(settings_for(settings, env.client, queues))
    async with app.router.lifespan_context(app):
        await env.shutdown()  # Temporal goes away after the API started
        async with api_client(app) as api:
            response = await api.post(DISPATCHES, json=payload())
            assert response.status_code == 503, response.text
            assert "unavailable" in response.json()["detail"]
            assert (await api.get(DISPATCHES)).json()["total"] == 0
            health = await api.get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"] == "ok"
            # Not ready (a load balancer stops sending to it), but alive (nothing restarts it).
            assert (await api.get("/readyz")).json()["temporal"].startswith("unavailable")
            assert (await api.get("/livez")).status_code == 200


async def test_idempotency_key_returns_the_same_dispatch(api: httpx.AsyncClient) -> None:
    body = payload()
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post(DISPATCHES, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await api.post(DISPATCHES, json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert (await api.get(DISPATCHES)).json()["total"] == 1

    other = await api.post(DISPATCHES, json={**body, "text": "Other"}, headers=headers)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    fresh = await api.post(DISPATCHES, json=body, headers={"Idempotency-Key": "order-43"})
    assert fresh.json()["id"] != first.json()["id"]
    too_long = await api.post(DISPATCHES, json=body, headers={"Idempotency-Key": "k" * 201})
    assert too_long.status_code == 422

    # Deleting the dispatch frees its key.
    assert (await api.delete(f"{DISPATCHES}/{first.json()['id']}")).status_code == 204
    anew = await api.post(DISPATCHES, json=body, headers=headers)
    assert anew.status_code == 201
    assert anew.json()["id"] not in (first.json()["id"], fresh.json()["id"])


async def test_the_answer_to_a_create_says_how_many_clients_match(
    api: httpx.AsyncClient, db: Database
) -> None:
    nobody = await api.post(DISPATCHES, json=payload())
    assert (nobody.status_code, nobody.json()["audience"]) == (201, 0)
    await make_client(db, phone="79161234567", tag="vip")
    await make_client(db, phone="79031234567", tag="vip")
    one = await api.post(DISPATCHES, json=payload())
    assert one.json()["audience"] == 1
    listed = (await api.get(f"{DISPATCHES}/{one.json()['id']}")).json()
    assert listed["audience"] is None


async def test_a_database_outage_is_not_ready_but_alive(
    settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> None:
    gone = "postgresql+asyncpg://nobody@127.0.0.1:1/nothing"
    app = create_app(settings_for(settings, dev_env.client, queues, database_url=gone))
    async with app.router.lifespan_context(app), api_client(app) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"].startswith("unavailable")
        assert ready.json()["temporal"] == "ok"
        assert (await api.get("/livez")).json() == {"status": "ok"}


RUSSIAN = ("Распродажа в воскресенье: скидки до пятидесяти процентов на всё. " * 4)[:200]


async def test_a_dispatch_says_its_encoding_and_segments(
    api: httpx.AsyncClient, db: Database
) -> None:
    for _ in range(2):
        await make_client(db, phone=None, operator_code="916", tag="vip")
    assert len(RUSSIAN) == 200
    created = (await api.post(DISPATCHES, json=payload(text=RUSSIAN))).json()
    assert (created["encoding"], created["segments"]) == ("UCS-2", 3)
    # No messages yet: the audience it matches now, times the parts.
    assert (created["audience"], created["segments_total"]) == (2, 6)
    assert created["normalization"] is None
    fetched = (await api.get(f"{DISPATCHES}/{created['id']}")).json()
    assert (fetched["segments"], fetched["segments_total"]) == (3, 0)  # its messages: none
    latin = (await api.post(DISPATCHES, json=payload(text="x" * 161))).json()
    assert (latin["encoding"], latin["segments"]) == ("GSM-7", 2)
    listed = (await api.get(DISPATCHES)).json()["items"]
    assert [(d["encoding"], d["segments"]) for d in listed] == [("UCS-2", 3), ("GSM-7", 2)]

    async with db.sessions() as session:
        from core.models import Message

        clients = (await session.execute(sa.text("SELECT id FROM client"))).scalars().all()
        session.add_all(Message(dispatch_id=created["id"], client_id=c) for c in clients)
        await session.commit()
    laid_out = (await api.get(f"{DISPATCHES}/{created['id']}")).json()
    assert laid_out["segments_total"] == 6


async def test_a_text_over_max_segments_is_refused(
    api: httpx.AsyncClient, api_app: FastAPI
) -> None:
    assert api_app.state.settings.max_segments == 10
    long = ("Ж" * 800, "text: 12 SMS segments (UCS-2, 800 characters) exceeds MAX_SEGMENTS=10")
    response = await api.post(DISPATCHES, json=payload(text=long[0]))
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": long[1],
        "errors": [{"field": "text", "message": long[1].removeprefix("text: ")}],
    }
    # 10 full UCS-2 parts pass; one more character does not.
    assert (await api.post(DISPATCHES, json=payload(text="Ж" * 670))).status_code == 201
    created = (await api.post(DISPATCHES, json=payload())).json()
    url = f"{DISPATCHES}/{created['id']}"
    edited = await api.patch(url, json={"text": "Ж" * 671})
    assert edited.status_code == 422
    assert edited.json()["errors"][0]["field"] == "text"
    assert "11 SMS segments (UCS-2, 671 characters)" in edited.json()["detail"]
    assert (await api.get(url)).json()["text"] == "Sale on Sunday"

    # The limit is the app's setting.
    app = create_app(api_app.state.settings.model_copy(update={"max_segments": 2}))
    async with app.router.lifespan_context(app), api_client(app) as strict:
        refused = await strict.post(DISPATCHES, json=payload(text=RUSSIAN))
        assert "3 SMS segments (UCS-2, 200 characters) exceeds MAX_SEGMENTS=2" in refused.text


QUOTED = "“Sale” on Sunday — don\u2019t miss it… " + "Everything in the shop is half price. " * 2


async def test_normalize_text_makes_it_gsm7_and_says_so(api: httpx.AsyncClient) -> None:
    assert len(QUOTED) > 70
    plain = (await api.post(DISPATCHES, json=payload(text=QUOTED))).json()
    assert (plain["encoding"], plain["segments"], plain["text"]) == ("UCS-2", 2, QUOTED)
    body = payload(text=QUOTED, normalize_text=True)
    headers = {"Idempotency-Key": "normalized-1"}
    response = await api.post(DISPATCHES, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["text"].startswith('"Sale" on Sunday - don\'t miss it... ')
    assert (created["encoding"], created["segments"]) == ("GSM-7", 1)
    assert created["normalization"] == {
        "changed": True,
        "encoding_before": "UCS-2",
        "encoding": "GSM-7",
        "segments_before": 2,
        "segments": 1,
    }
    # A replay answers the same, normalization included.
    again = await api.post(DISPATCHES, json=body, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == created
    # Asked on a Russian text: nothing to replace, and it stays UCS-2.
    russian = (await api.post(DISPATCHES, json=payload(text=RUSSIAN, normalize_text=True))).json()
    assert russian["normalization"] == {
        "changed": False,
        "encoding_before": "UCS-2",
        "encoding": "UCS-2",
        "segments_before": 3,
        "segments": 3,
    }
    assert russian["text"] == RUSSIAN
    # Normalized, then held to MAX_SEGMENTS and TEXT_MAX_LENGTH.
    dots = await api.post(DISPATCHES, json=payload(text="…" * 400, normalize_text=True))
    assert dots.status_code == 422
    assert dots.json()["errors"] == [
        {"field": "text", "message": "1200 characters once normalized; at most 1000"}
    ]
    gone = await api.post(DISPATCHES, json=payload(text="\u200b", normalize_text=True))
    assert gone.status_code == 422 and "nothing is left" in gone.json()["detail"]


async def test_an_edit_normalizes_the_new_or_the_stored_text(api: httpx.AsyncClient) -> None:
    created = (await api.post(DISPATCHES, json=payload(text=QUOTED))).json()
    url = f"{DISPATCHES}/{created['id']}"
    kept = (await api.patch(url, json={"end_at": payload()["end_at"]})).json()
    assert kept["normalization"] is None and kept["text"] == QUOTED
    normalized = (await api.patch(url, json={"normalize_text": True})).json()
    assert normalized["text"].startswith('"Sale"')
    assert normalized["normalization"]["changed"] is True
    assert normalized["normalization"]["encoding"] == "GSM-7"
    unchanged = (await api.patch(url, json={"normalize_text": True})).json()
    assert unchanged["normalization"] == {
        "changed": False,
        "encoding_before": "GSM-7",
        "encoding": "GSM-7",
        "segments_before": 1,
        "segments": 1,
    }
    fresh = (await api.patch(url, json={"text": "«Hi»", "normalize_text": True})).json()
    assert fresh["text"] == '"Hi"' and fresh["normalization"]["encoding_before"] == "UCS-2"
    events = (await api.get(f"{url}/events")).json()["items"]
    assert [e["details"] for e in events[1:]] == [
        {"fields": ["end_at"]},
        {"fields": ["text"]},
        {"fields": []},
        {"fields": ["text"]},
    ]


async def test_an_audience_preview_measures_a_text(api: httpx.AsyncClient, db: Database) -> None:
    for _ in range(3):
        await make_client(db, tag="vip")
    plain = (await api.get("/api/v1/stats/audience", params={"tag": "vip"})).json()
    assert plain["segments"] is None and plain["encoding"] is None
    measured = await api.get("/api/v1/stats/audience", params={"tag": "vip", "text": RUSSIAN})
    assert measured.status_code == 200, measured.text
    assert {k: measured.json()[k] for k in ("clients", "characters", "encoding")} == {
        "clients": 3,
        "characters": 200,
        "encoding": "UCS-2",
    }
    assert (measured.json()["segments"], measured.json()["segments_total"]) == (3, 9)
    assert measured.json()["max_segments"] == 10 and measured.json()["normalization"] is None
    normalized = (
        await api.get(
            "/api/v1/stats/audience",
            params={"tag": "vip", "text": QUOTED, "normalize_text": "true"},
        )
    ).json()
    assert (normalized["encoding"], normalized["segments"]) == ("GSM-7", 1)
    assert normalized["segments_total"] == 3
    assert normalized["normalization"]["encoding_before"] == "UCS-2"
    # Over MAX_SEGMENTS is measured, not refused: the form shows it before the create does.
    long = (await api.get("/api/v1/stats/audience", params={"text": "Ж" * 800})).json()
    assert (long["segments"], long["max_segments"]) == (12, 10)
    bad = await api.get("/api/v1/stats/audience", params={"text": "a\u0000"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "text"


async def test_progress_counts_what_finished_cohorts_sent(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> None:
    """A cohort that finished answers with its result: what it sent, not a default 0."""
    moscow = datetime.now(UTC).astimezone(ZoneInfo("Europe/Moscow"))
    # Open now in Moscow; nine hours later in Kamchatka, so closed there.
    opens = (moscow - timedelta(hours=1)).strftime("%H:00")
    closes = (moscow + timedelta(hours=2)).strftime("%H:00")
    for zone in ("Europe/Moscow", "Europe/Moscow", "Asia/Kamchatka"):
        await make_client(db, tag="zones", timezone=zone)
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with api_client(app) as api:
            now = datetime.now(UTC)
            body = payload(
                start_at=now.isoformat(),
                end_at=(now + timedelta(days=2)).isoformat(),
                filter={"tags": ["zones"]},
                window={"start": opens, "end": closes},
            )
            created = (await api.post(DISPATCHES, json=body)).json()
            url = f"{DISPATCHES}/{created['id']}/progress"
            async with asyncio.timeout(60):
                while True:
                    progress = (await api.get(url)).json()
                    phases = {c["cohort"]: c["phase"] for c in progress["cohorts"]}
                    if phases.get("Europe/Moscow") == "finished" and len(phases) == 2:
                        break
                    await asyncio.sleep(0.3)
    cohorts = {c["cohort"]: c for c in progress["cohorts"]}
    assert cohorts["Europe/Moscow"]["sent"] == 2
    assert cohorts["Asia/Kamchatka"]["phase"] == "waiting for the window"
    assert cohorts["Asia/Kamchatka"]["sent"] == 0 and cohorts["Asia/Kamchatka"]["waiting_until"]
